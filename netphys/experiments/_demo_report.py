"""The sections and figure captions of the demo's HTML report (``netphys demo``)."""

from __future__ import annotations

from typing import Any

from netphys.experiments._html import ReportFigure, ReportSection

__all__ = ["demo_sections"]

_UNITS = "all recorded units of act1, act2 and act3"


def _population_captions(pop: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """File name -> (what it shows, what to look for), for the population figures."""
    units = (
        f"a fixed random subset of {pop.get('n_units_analysed')} units (the same in every session)"
    )
    fit = pop.get("fit_range", [2, 100])
    return {
        "eigenspectrum.png": (
            f"Variance of each principal component of the responses to the held-out digits "
            f"(stimulus frames, both repeats), one line per session, {units}; a power law is "
            f"fitted over components {fit[0]}-{fit[1]} and its exponent alpha is in the legend "
            "(the same alpha as in the session table and in sessions.png).",
            "How alpha changes from the untrained session 0 to the trained ones: a larger "
            "alpha means the variance is concentrated in fewer dimensions.",
        ),
        "cvpca_spectrum.png": (
            f"Cross-validated PCA (repeat 0 vs repeat 1 of the same digits), {units}: only "
            "variance that repeats across presentations counts.",
            "Without variability the two repeats are identical and cvPCA equals PCA; a "
            "network with input noise would show the noise cancelling.",
        ),
        "svca_spectrum.png": (
            f"SVCA: covariance between two halves of the units, measured on held-out frames, "
            f"{units}, all frames of each session.",
            "The reliable spectrum per session; compare its slope across sessions.",
        ),
        "reliable_fraction.png": (
            "Share of each shared-variance component (SVC) that is reliable across the two "
            "unit halves, per session.",
            "Values near 100% for the first SVCs: the model has no trial-to-trial noise, so "
            "most of its shared variance is reliable, unlike a mouse's.",
        ),
        "behaviour_rrr.png": (
            "Reduced-rank regression from the model's outputs (its 10 logits, the "
            "'behaviour') to the SVCs: reliable variance explained against rank, per session.",
            "How much of the population's reliable variance the outputs explain, and how it "
            "grows with training (the outputs are read out from the last layer).",
        ),
        "shuffle_null.png": (
            f"Histogram of pairwise correlations of {units} (black) against the same units "
            "each shifted circularly by a random lag (red), last session; dashed lines: 5th "
            "and 95th percentiles.",
            "A real distribution much wider than the shifted one means coordinated activity.",
        ),
        "category_autocorrelation.png": (
            "Mean correlation between population responses to digits of each pair of "
            "categories (stimulus frames of the last session).",
            "A bright diagonal: responses to the same digit resemble each other more than "
            "responses to different digits.",
        ),
    }


def _concept_captions(con: dict[str, Any]) -> dict[str, tuple[str, str]]:
    sig = con.get("significance") or {}
    alpha = sig.get("alpha", 0.05)
    out = {}
    for name, who in (("trained", "trained model"), ("untrained", "untrained control")):
        n = sig.get(name) or {}
        out[f"concepts_{name}_raster.png"] = (
            f"{who}: flow of each computational path (rows, rastermap order) for each held-out "
            "digit (columns grouped by digit, red lines between digits); the side bar colours "
            "the 10 largest concepts, the others grey.",
            "Blocks of paths active for one digit only are digit-specific concepts.",
        )
        out[f"concepts_{name}_embedding.png"] = (
            f"{who}: digits (left, coloured by digit) and paths (right, 10 largest concepts "
            "coloured, the others grey) in the first two components of the path x digit "
            "flow matrix.",
            "Separated digit clusters on the left mean the paths tell the digits apart.",
        )
        out[f"concepts_{name}_selectivity.png"] = (
            f"{who}: selectivity index (SI) of each concept for each digit (the 40 largest "
            f"concepts by flow mass). A star marks a concept more selective than all but "
            f"{alpha:.0%} of the untrained control's concepts (p < {alpha}): "
            f"{n.get('n_significant', '?')} of {n.get('n_concepts', '?')} here, against "
            f"{n.get('n_significant_label_permutation', '?')} with p < 0.01 by label "
            "permutation alone.",
            "Inputs alone make most concepts of an untrained network digit-selective by "
            "label permutation; the control-based test asks for more than that.",
        )
    return out


def _figures(summary: dict[str, Any], prefix: str, captions: dict[str, tuple[str, str]],
             titles: dict[str, str]) -> list[ReportFigure]:  # fmt: skip
    figs = []
    for key, path in summary["figures"].items():
        if not key.startswith(prefix):
            continue
        name = path.split("/")[-1]
        shows, look = captions.get(name, ("", ""))
        figs.append(ReportFigure(path, titles.get(name, name), shows, look))
    return figs


def _session_table(sessions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keys = ("session", "train_loss", "test_accuracy", "mean_activity",
            "mean_spontaneous_activity", "fraction_active", "pca_alpha", "svca_alpha",
            "population_sparseness", "weight_alpha")  # fmt: skip
    return [{k: s.get(k) for k in keys} for s in sessions]


def demo_sections(summary: dict[str, Any]) -> list[ReportSection]:
    """Build the report's sections from the demo summary (figure paths relative to OUT)."""
    last = summary["sessions"][-1]["session"]
    overview = ReportSection(
        "Sessions",
        "One row per session (checkpoint). pca_alpha and svca_alpha are the power-law "
        "exponents of the population section, computed once per session.",
        table=_session_table(summary["sessions"]),
        figures=[
            ReportFigure(
                summary["figures"]["sessions"],
                "training sessions",
                "Held-out accuracy, mean unit activity (stimulus and spontaneous frames) and "
                f"the PCA exponent per session, {_UNITS}.",
                "Accuracy rises from chance (about 0.1) in session 0; activity and exponent "
                "change with it.",
            ),
            ReportFigure(
                summary["figures"]["raster"],
                f"session {last} raster",
                f"Session {last} (after the last epoch): z-scored activity of every active "
                "unit (rows, sorted by rastermap so that similar units are neighbours) for the "
                "held-out digits shown in repeat 0 (columns, grouped by digit; the digit is "
                "under each group).",
                "Bands of units that respond to one digit group only.",
            ),
        ],
    )
    sections = [overview]
    pop = summary.get("population")
    if pop:
        sections.append(ReportSection(
            "Population analyses",
            "The analyses of Stringer, Pachitariu et al. (2019) per session; figures without a "
            "session in their title show every session.",
            figures=_figures(summary, "population/", _population_captions(pop),
                             pop.get("figure_titles", {})),
        ))  # fmt: skip
    con = summary.get("concepts")
    if con:
        edge = con.get("edge_level") or {}
        text = (
            "Computational paths through act1 -> act2 -> act3 for each held-out digit, "
            "clustered into concepts, for the trained model (last session) and for an "
            "untrained control (the same architecture re-initialised). The concept set shown "
            "is built from each digit's top paths (top-level: the paths that carry 90% of the "
            "flow)."
        )
        if edge:
            text += (
                " When the top paths cover less than 30% of the flow, a second set is computed "
                "from the exact edge flows (edge-level concepts, numbers only, in summary.json "
                f"under concepts.edge_level: {', '.join(edge)})."
            )
        titles = {f: f.removesuffix(".png").replace("_", " ") for f in con.get("figures", [])}
        sections.append(ReportSection(
            "Concepts", text, figures=_figures(summary, "concepts/", _concept_captions(con), titles)
        ))  # fmt: skip
    if "anatomy_sessions" in summary["figures"]:
        sections.append(_anatomy_section(summary))
    return sections


def _anatomy_section(summary: dict[str, Any]) -> ReportSection:
    """Sparseness of the code and weight spectra of the layers, per session."""
    figs = [
        ReportFigure(
            summary["figures"]["anatomy_sessions"],
            "sparseness and weight spectra per session",
            "Per recorded layer and session (held-out digits): population sparseness "
            "(Vinje-Gallant, 0 dense, 1 one unit active), the share of units above 0 per "
            "frame, the median unit's kurtosis; per weight layer: the power-law tail exponent "
            "alpha of the eigenvalues of W^T W / N and the number of eigenvalues above the "
            "Marchenko-Pastur edge of a random matrix of the same shape and scale.",
            "Whether training makes the code sparser than in session 0, and whether it pulls "
            "eigenvalues out of the random bulk (spikes, falling alpha: a heavier tail).",
        )
    ]
    if "weight_spectra" in summary["figures"]:
        figs.append(ReportFigure(
            summary["figures"]["weight_spectra"],
            f"weight spectra, session {summary['sessions'][-1]['session']}",
            "Histogram of each layer's eigenvalues (log-log) with the Marchenko-Pastur "
            "density of a random matrix of that shape and scale (blue), the spike threshold "
            "(dashed) and the fitted power-law tail (red). No alpha below 20 eigenvalues.",
            "Eigenvalues beyond the dashed line, and a straight (power-law) tail.",
        ))  # fmt: skip
    return ReportSection(
        "Sparseness and weight spectra",
        "The coding sparseness and the 'anatomy' of the circuit per session "
        "(netphys.population.sparseness, netphys.anatomy); numbers in summary.json under "
        "anatomy, layer means in the session table (population_sparseness, weight_alpha).",
        figures=figs,
    )
