"""The ``netphys`` command: ``demo``, ``info``, ``units``, ``recover``, ``compare``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["main"]


def _continual(args: argparse.Namespace) -> int:
    from netphys.experiments.continual import run_continual

    out = args.out if args.out != "netphys-demo" else "netphys-continual"
    summary = run_continual(
        out,
        epochs_per_task=args.epochs,
        method=args.method,
        seed=args.seed,
        progress=not args.quiet,
        variability=None if args.no_variability else "default",
    )
    print(f"  variability: {summary['variability_description']}")
    print(f"netphys demo --experiment continual: report in {out}/ (summary.json, overview.png)")
    for method, res in summary["methods"].items():
        acc = [round(float(x["task1_accuracy"]), 2) for x in res["sessions"]]
        print(
            f"  {method:>9}: task-1 accuracy per session {acc}, forgetting {res['forgetting']:.2f}"
        )
    return 0


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 4,8,16; got {text!r}"
        ) from None


def _width(args: argparse.Namespace) -> int:
    from netphys.experiments.width import run_width

    out = args.out if args.out != "netphys-demo" else "netphys-width"
    summary = run_width(
        out,
        widths=args.widths,
        seeds=range(args.seed, args.seed + args.seeds),
        epochs=args.epochs,
        progress=not args.quiet,
    )
    print(f"netphys demo --experiment width: report in {out}/ (summary.json, width.png)")
    cols = ("test_accuracy", "population_sparseness", "fraction_active", "n_concepts",
            "n_concepts_control", "purity", "svca_alpha", "weight_alpha_fc1")  # fmt: skip
    print("  width  " + "  ".join(f"{c:>21}" for c in cols))
    for width, row in summary["widths"].items():
        cells = []
        for c in cols:
            m, ci = row[c]["mean"], row[c]["ci95"]
            txt = "nan" if m is None else f"{m:.3g}"
            if ci is not None and None not in ci:
                txt += f" [{ci[0]:.3g},{ci[1]:.3g}]"
            cells.append(f"{txt:>21}")
        print(f"  {width:>5}  " + "  ".join(cells))
    for claim, res in summary["claims"].items():
        rho = "n/a" if res["rho"] is None else f"rho={res['rho']:+.2f} p={res['p']:.3f}"
        print(f"  claim '{claim}': {res['verdict']} ({rho})")
    for metric, res in summary["training_effects"].items():
        d, p = res["mean_difference"], res["p_wilcoxon"]
        p_txt = "n/a" if p is None else f"{p:.3g}"
        d_txt = "n/a" if d is None else f"{d:+.3g}"
        print(f"  training: {metric} minus {res['baseline']}: {d_txt} (Wilcoxon p={p_txt})")
    return 0


def _demo(args: argparse.Namespace) -> int:
    if args.experiment == "continual":
        return _continual(args)
    if args.experiment == "width":
        return _width(args)
    from netphys.experiments.demo import run_demo

    summary = run_demo(
        args.out,
        epochs=args.epochs,
        seed=args.seed,
        dtype=args.dtype,
        analyses=not args.no_analyses,
        progress=not args.quiet,
        variability=None if args.no_variability else "default",
    )
    print(f"netphys demo: {summary['n_units']} units x {summary['n_frames']} frames recorded")
    print(f"  variability: {summary['variability_description']}")
    print(f"  recording: {summary['recording']}")
    print("  session  epoch  test_acc  mean_act  frac_active  pca_alpha")
    for s in summary["sessions"]:
        print(
            f"  {s['session']:>7}  {s['epoch']:>5}  {s['test_accuracy']:8.3f}  "
            f"{s['mean_activity']:8.3f}  {s['fraction_active']:11.3f}  "
            f"{s.get('pca_alpha') or float('nan'):9.2f}"
        )
    pop = (summary.get("population") or {}).get("sessions", {})
    if pop:
        print(
            "  session  svca_alpha  reliable_frac_128  cvpca_signal_frac  behaviour_explains  "
            "category_index"
        )
        for key, n in pop.items():
            svca, rrr = n.get("svca", {}), n.get("behaviour_rrr", {})
            cat = n.get("category_autocorrelation", {})
            signal = (n.get("cvpca") or {}).get("signal_fraction", float("nan"))
            print(
                f"  {key:>7}  {svca.get('alpha', float('nan')):10.2f}  "
                f"{svca.get('reliable_fraction_128', float('nan')):17.2f}  {signal:17.2f}  "
                f"{rrr.get('best_explained_fraction_128', float('nan')):18.2f}  "
                f"{cat.get('index', float('nan')):14.2f}"
            )
    concepts = summary.get("concepts")
    if concepts:
        t, u = concepts["trained"], concepts["untrained"]
        print(
            f"  concepts (final session vs re-initialised control): NMI {t['nmi']:.2f} vs "
            f"{u['nmi']:.2f}, purity {t['purity']:.2f} vs {u['purity']:.2f}, "
            f"N_eff {t['n_eff_median']:.0f} vs {u['n_eff_median']:.0f}"
        )
    print(
        f"  report: {args.out}/report.html (open in a browser), {args.out}/summary.json "
        f"({summary['seconds']} s)"
    )
    return 0


def _units(args: argparse.Namespace) -> int:
    from netphys.experiments._common import save_figure
    from netphys.experiments.units import unit_profile
    from netphys.io._safe_pickle import load_npy
    from netphys.plot import plot_unit

    inputs = load_npy(args.inputs) if args.inputs else None  # size-checked, allow-list pickles
    prof = unit_profile(
        args.path, args.layer, args.unit, session=args.session, top_k=args.top_k, inputs=inputs
    )
    out = args.out or f"unit_{args.layer}_{args.unit}.png"
    save_figure(plot_unit(prof), out, dpi=90)
    best = int(np.argmax(prof["tuning_mean"].values))
    print(
        f"layer {args.layer!r} unit {args.unit} (session {prof.attrs['session']}): prefers label "
        f"{int(prof['label'][best])} ({float(prof['tuning_mean'][best]):.3f}); "
        f"top stimuli {prof['top_stimulus'].values.tolist()}"
    )
    print(f"  figure: {out}")
    return 0


def _info(args: argparse.Namespace) -> int:
    import netphys

    tree = netphys.open_recording(args.path)
    attrs = tree.attrs
    print(
        f"{args.path}: netphys recording v{attrs.get('format_version')}, status {attrs.get('status')}"
    )
    print(f"  frames: {tree.sizes.get('time', 0)}  frame_rate: {attrs.get('frame_rate')} Hz")
    sessions = (
        sorted({int(s) for s in np.asarray(tree["session"].data)})
        if "session" in tree.coords
        else []
    )
    print(f"  sessions: {sessions}")
    from netphys.variability import describe

    print(f"  variability: {describe(attrs.get('variability'))}")
    for name in attrs.get("layers", []):
        ds = tree[f"layers/{name}"]
        print(
            f"  layer {name!r}: {ds.sizes['unit']} units of {ds.attrs.get('n_units_total')} "
            f"({ds.attrs.get('module_type')}, shape {ds.attrs.get('unit_shape')}), {ds.sizes['node']} nodes"
        )
    return 0


def _recover(args: argparse.Namespace) -> int:
    import netphys

    print(json.dumps(netphys.recover(args.path, force=args.force), indent=2))
    return 0


def _compare(args: argparse.Namespace) -> int:
    from netphys.experiments.compare import compare_files

    session = args.session if args.session in ("last", "all") else int(args.session)
    table = compare_files(
        args.a,
        args.b,
        args.out,
        n_units=args.n_units,
        n_frames=args.n_frames,
        session=session,
        condition=args.condition,
        layers=args.layers.split(",") if args.layers else None,
        calcium=args.calcium,
        cells_only=not args.all_rois,
        n_boot=args.n_boot,
        rng=args.seed,
    )
    print(table)
    print(f"written: {args.out}/compare.png, {args.out}/compare.json")
    return 0


def _add_demo(sub: Any) -> None:
    p = sub.add_parser("demo", help="train a CNN on sklearn digits, record it, write a report")
    p.add_argument("--out", default="netphys-demo", help="output folder (default: netphys-demo)")
    p.add_argument(
        "--epochs", type=int, default=4, help="training epochs = sessions after the first"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=["float32", "float16"], default="float32")
    p.add_argument("--no-analyses", action="store_true", help="record and first report only")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--no-variability",
        action="store_true",
        help="record the noise-free model (default: Poisson spiking units, so repeats differ)",
    )
    p.add_argument(
        "--experiment",
        choices=["standard", "continual", "width"],
        default="standard",
        help="'continual': task 1 = digits 0-4, then task 2 = digits 5-9 (forgetting vs drift); "
        "'width': the CNN at several widths and seeds (sparseness, concepts, weight spectra)",
    )
    p.add_argument(
        "--widths",
        type=_int_list,
        default=[4, 8, 16, 32],
        help="width only: comma-separated conv1 widths (default: 4,8,16,32)",
    )
    p.add_argument(
        "--seeds", type=int, default=3, help="width only: seeds per width, from --seed on"
    )
    p.add_argument(
        "--method",
        default="both",
        help="continual only: finetune, replay, ewc, both (finetune+replay) or all",
    )
    p.set_defaults(func=_demo)


def _add_info(sub: Any) -> None:
    p = sub.add_parser("info", help="summarise a recording")
    p.add_argument("path")
    p.set_defaults(func=_info)


def _add_units(sub: Any) -> None:
    p = sub.add_parser("units", help="one unit's page: tuning, top stimuli, sessions, spontaneous")
    p.add_argument("path", help="a recording (*.zarr)")
    p.add_argument("--layer", required=True, help="recorded layer name (see `netphys info`)")
    p.add_argument("--unit", type=int, required=True, help="unit position in the layer")
    p.add_argument("--session", type=int, default=None, help="session (default: the last)")
    p.add_argument("--top-k", type=int, default=8, help="number of preferred stimuli")
    p.add_argument("--inputs", default=None, help=".npy of the inputs by stimulus id (optional)")
    p.add_argument("--out", default=None, help="PNG to write (default: unit_LAYER_UNIT.png)")
    p.set_defaults(func=_units)


def _add_recover(sub: Any) -> None:
    p = sub.add_parser("recover", help="make an interrupted recording consistent")
    p.add_argument("path")
    p.add_argument(
        "--force",
        action="store_true",
        help="recover even though a live writer holds the store's lock (it may corrupt it)",
    )
    p.set_defaults(func=_recover)


def _add_compare(sub: Any) -> None:
    p = sub.add_parser("compare", help="the same analyses on two recordings, side by side")
    p.add_argument("a", help="recording or dataset (zarr, suite2p folder, NWB, .mat, .npz)")
    p.add_argument("b")
    p.add_argument("--out", default="netphys-compare")
    p.add_argument("--n-units", type=int, default=None)
    p.add_argument("--n-frames", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--session", default="last", help="session id, 'last' (default) or 'all'")
    p.add_argument("--condition", default="stimulus", help="stimulus (default), spontaneous or all")
    p.add_argument("--layers", default=None, help="comma-separated model layers (default: all)")
    p.add_argument(
        "--calcium",
        choices=["auto", "on", "off"],
        default="auto",
        help="image a model through the calcium model at the mouse's frame rate (auto: when "
        "the other side is calcium imaging)",
    )
    p.add_argument("--all-rois", action="store_true", help="keep non-cell ROIs (suite2p)")
    p.add_argument("--n-boot", type=int, default=10, help="neuron subsamples for intervals")
    p.set_defaults(func=_compare)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``netphys`` command line."""
    parser = argparse.ArgumentParser(
        prog="netphys", description="Record a neural network like a mouse, analyse it like one."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_demo(sub)
    _add_info(sub)
    _add_units(sub)
    _add_recover(sub)
    _add_compare(sub)
    args = parser.parse_args(argv)
    if args.command in ("demo", "compare", "units"):
        import matplotlib

        matplotlib.use("Agg")  # the command line draws to files only; library code never does this
    try:
        return int(args.func(args))
    except (ValueError, TypeError, OSError) as exc:
        print(f"netphys {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
