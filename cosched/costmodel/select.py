"""Choosing the cost model a compilation uses, as ``compile(cost_model=...)`` asks.

``"auto"`` prefers a trained model cached for this device's fingerprint, else profiles the
graph being compiled within a budget (and caches the result), else falls back to the
roofline model with a warning naming the reason.
"""

from __future__ import annotations

import logging
from pathlib import Path

from cosched.cache import cache_root
from cosched.costmodel.base import CostModel
from cosched.costmodel.device import DeviceSpec
from cosched.costmodel.roofline import RooflineModel
from cosched.errors import CoschedError, CostModelError, ProfileError
from cosched.ir.graph import Graph

__all__ = ["model_cache_dir", "resolve_cost_model"]

log = logging.getLogger(__name__)


def model_cache_dir(device: DeviceSpec) -> Path:
    """Where ``"auto"`` keeps the profile store and trained model of one device. The folder
    names the store and model schema versions, so a cosched that measures or models
    differently starts a fresh store instead of mixing incompatible measurements."""
    from cosched.costmodel import store, xgb

    name = f"{device.fingerprint}-store{store.SCHEMA_VERSION}-model{xgb.SCHEMA_VERSION}"
    return cache_root() / "models" / name


def resolve_cost_model(
    choice: str | Path | CostModel, device: DeviceSpec, graph: Graph, profile_budget_s: float,
    progress: bool = False,
) -> CostModel:
    """The cost model named by ``choice``; see the module docstring for ``"auto"``."""
    if isinstance(choice, CostModel):
        return choice
    if choice == "roofline":
        return RooflineModel(device)
    if choice == "auto":
        return _auto(device, graph, profile_budget_s, progress)
    return _load_dir(Path(choice), device)


def _load_dir(directory: Path, device: DeviceSpec) -> CostModel:
    from cosched.costmodel.xgb import XGBoostModel

    model_dir = directory / "model" if (directory / "model").is_dir() else directory
    if not (model_dir / "metadata.json").is_file():
        raise CostModelError(
            f"cost model {str(directory)!r}: expected 'roofline', 'auto' or a directory holding "
            "metadata.json (or model/metadata.json) as written by `cosched profile`"
        )
    model = XGBoostModel.load(model_dir)
    if model.device.fingerprint != device.fingerprint:
        log.warning(
            "cost model %s was trained on %s (fingerprint %s), compiling for %s (%s): "
            "predictions may not transfer between devices",
            model_dir, model.device.name, model.device.fingerprint, device.name, device.fingerprint,
        )
    return model


def _auto(device: DeviceSpec, graph: Graph, budget_s: float, progress: bool) -> CostModel:
    from cosched.costmodel.profiler import ProfileConfig, Profiler
    from cosched.costmodel.store import ProfileStore
    from cosched.costmodel.xgb import XGBoostModel

    directory = model_cache_dir(device)
    if (directory / "model" / "metadata.json").is_file():
        try:
            model = XGBoostModel.load(directory / "model")
        except CoschedError as exc:  # written by another cosched version: retrain
            log.warning("cost model: cached model in %s is unusable (%s); profiling again",
                        directory, exc)
        else:
            log.info("cost model: cached XGBoost model for %s (%s)", device.name, directory)
            return model
    if budget_s <= 0:
        log.warning("cost model: no cached model for %s and profiling is off; using the roofline "
                    "model (run `cosched profile` to train one)", device.name)
        return RooflineModel(device)
    log.info("cost model: profiling %s for up to %.0f s (no cached model)", device.name, budget_s)
    config = ProfileConfig(budget_s=budget_s, quiet=not progress)
    directory.mkdir(parents=True, exist_ok=True)
    try:
        with ProfileStore(directory / "profiles.sqlite") as store:
            data = Profiler(device, config).profile([graph], store)
        if not data.groups:
            raise ProfileError(f"no co-run group was measured within {budget_s} s")
        model = XGBoostModel(device).fit(data)
    except (ProfileError, CostModelError) as exc:
        log.warning("cost model: profiling failed (%s); using the roofline model", exc)
        return RooflineModel(device)
    model.save(directory / "model")
    return model
