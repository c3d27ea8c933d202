"""NWB parts only a model recording has: the layer of each unit and the model's outputs."""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

__all__ = ["add_behaviour", "add_layer_column"]

#: Behaviour variables of a netphys recording and their NWB descriptions.
_BEHAVIOUR = {
    "logits": "model output (logits), one column per output",
    "prediction": "argmax of the output",
    "confidence": "max softmax probability",
    "loss": "cross-entropy to the label (NaN: no label)",
}


def add_layer_column(ps: Any, ds: xr.Dataset) -> None:
    """Add a ``layer`` column (the recorded module of each unit) to the ROI table."""
    if "layer" in ds.coords and ds["layer"].dims == ("unit",):
        layers = [str(v) for v in ds["layer"].values]
        ps.add_column(name="layer", description="recorded layer (module path)", data=layers)


def add_behaviour(nwb: Any, behaviour: xr.Dataset | None, timing: dict[str, Any]) -> None:
    """Write the model's outputs as ``processing/behavior/BehavioralTimeSeries``."""
    if behaviour is None:
        return
    from pynwb import TimeSeries
    from pynwb.behavior import BehavioralTimeSeries

    present = [k for k in _BEHAVIOUR if k in behaviour]
    if not present:
        return
    module = nwb.create_processing_module(name="behavior", description="the model's outputs")
    series = BehavioralTimeSeries(name="BehavioralTimeSeries")
    module.add(series)
    for name in present:
        data = np.asarray(behaviour[name].values)
        data = data.astype(np.float32) if data.dtype.kind == "f" else data.astype(np.int64)
        series.add_timeseries(
            TimeSeries(name=name, data=data, unit="a.u.", description=_BEHAVIOUR[name], **timing)
        )


def tree_behaviour(recording: Any) -> xr.Dataset | None:
    """Return the ``behaviour`` group of a recording tree, or None."""
    if isinstance(recording, xr.DataTree) and "behaviour" in recording.children:
        return recording.children["behaviour"].to_dataset(inherit=False)
    return None
