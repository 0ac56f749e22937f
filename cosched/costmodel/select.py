"""Choosing the cost model a compilation uses, as ``compile(cost_model=...)`` asks.

``"auto"`` keeps a profile store and the XGBoost model fitted on it per device fingerprint
(:func:`model_cache_dir`), and makes them cover the graph being compiled:

- the task signatures of the graph that the store lacks are profiled within the budget
  (standalone, then co-run groups that each hold one of them: ``Profiler.profile(top_up=
  True)``, at most :data:`TOP_UP_GROUPS_PER_SIGNATURE` groups per missing signature) and
  appended to the store; with no store yet, the whole graph is profiled;
- the model is refitted on the whole store when the store holds signatures the cached model
  was not trained on (profiled now, or written back by ``cosched run --write-profile``), and
  saved in place of the cached one; otherwise the cached model is used as it is;
- an INFO line says how many of the graph's task signatures (and tasks) the model was fitted
  on and how many it extrapolates to.

A budget of 0 profiles nothing (the coverage is still logged). With no cached model and no
budget, or when profiling fails with no cached model, the roofline model is used with a
warning naming the reason; when it fails beside a cached model, the cached model is kept.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence, Set
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cosched.cache import cache_root
from cosched.costmodel.base import CostModel
from cosched.costmodel.device import DeviceSpec
from cosched.costmodel.features import task_signature
from cosched.costmodel.roofline import RooflineModel
from cosched.errors import ConfigError, CoschedError, CostModelError, ProfileError
from cosched.ir.graph import Graph

if TYPE_CHECKING:
    from cosched.costmodel.store import ProfileStore
    from cosched.costmodel.xgb import XGBoostModel

__all__ = ["STORE_FILE", "TOP_UP_GROUPS_PER_SIGNATURE", "model_cache_dir", "resolve_cost_model"]

log = logging.getLogger(__name__)

STORE_FILE = "profiles.sqlite"
#: Co-run groups measured per missing signature when a store is topped up: four of each
#: size 2..4, each with other co-runners, so that a compile meeting one new layer spends
#: seconds on it, not the whole budget.
TOP_UP_GROUPS_PER_SIGNATURE = 12


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
    from cosched.costmodel.store import ProfileStore

    directory = model_cache_dir(device)
    cached = _cached_model(directory, device)
    if cached is None and budget_s <= 0:
        log.warning("cost model: no cached model for %s and profiling is off; using the roofline "
                    "model (run `cosched profile` to train one)", device.name)
        return RooflineModel(device)
    signatures = [task_signature(graph, task) for task in graph.tasks]
    directory.mkdir(parents=True, exist_ok=True)
    try:
        with ProfileStore(directory / STORE_FILE) as store:
            model = _cover(store, graph, signatures, device, cached, budget_s, progress)
            measured = set(signatures) & _known(store, device)
    except (ProfileError, CostModelError) as exc:
        if cached is None:
            log.warning("cost model: profiling failed (%s); using the roofline model", exc)
            return RooflineModel(device)
        log.warning("cost model: profiling this graph's new task signatures failed (%s); using "
                    "the cached model as it is", exc)
        return cached
    _log_coverage(signatures, measured)
    if model is not cached:
        model.save(directory / "model")
    return model


def _cached_model(directory: Path, device: DeviceSpec) -> XGBoostModel | None:
    from cosched.costmodel.xgb import XGBoostModel

    if not (directory / "model" / "metadata.json").is_file():
        return None
    try:
        model = XGBoostModel.load(directory / "model")
    except CoschedError as exc:  # written by another cosched version: retrain
        log.warning("cost model: cached model in %s is unusable (%s); profiling again", directory, exc)
        return None
    log.info("cost model: cached XGBoost model for %s (%s)", device.name, directory)
    return model


def _known(store: ProfileStore, device: DeviceSpec) -> set[str]:
    return store.signatures(device.fingerprint) if device.fingerprint in store.fingerprints() else set()


def _cover(store: ProfileStore, graph: Graph, signatures: Sequence[str], device: DeviceSpec,
           cached: XGBoostModel | None, budget_s: float, progress: bool) -> XGBoostModel:
    """``cached``, or a model fitted on ``store`` after profiling (within ``budget_s``) the
    signatures of ``graph`` that it lacks; see the module doc."""
    from cosched.costmodel.profiler import ProfileConfig, Profiler
    from cosched.costmodel.xgb import XGBoostModel

    known = _known(store, device)
    missing = set(signatures) - known
    data = None
    if missing and budget_s > 0:
        if cached is None:
            log.info("cost model: profiling %s for up to %.0f s (no cached model)", device.name, budget_s)
        else:
            log.info("cost model: profiling the %d of this graph's %d task signatures that the "
                     "store lacks, for up to %.0f s", len(missing), len(set(signatures)), budget_s)
        config = ProfileConfig(budget_s=budget_s, quiet=not progress,
                               max_groups=TOP_UP_GROUPS_PER_SIGNATURE * len(missing) if known else None)
        data = Profiler(device, config).profile([graph], store, top_up=bool(known))
        if not data.groups:
            raise ProfileError(f"no co-run group was measured within {budget_s} s")
    grown = data is not None and len(data.standalone) > len(known)  # signatures measured now
    trained = int(cached.metrics.get("train_standalone_samples", 0)) if cached is not None else 0
    if cached is not None and not grown and len(known) <= trained:
        return cached
    data = data or store.load(device.fingerprint)
    log.info("cost model: fitting on %d task signatures and %d co-run groups of %s",
             len(data.standalone), len(data.groups), store.path)
    return XGBoostModel(device).fit(data)


def _log_coverage(signatures: Sequence[str], measured: Set[str]) -> None:
    distinct = set(signatures)
    covered = len(distinct & measured)
    log.info("cost model: %d of %d task signatures of this graph measured, %d extrapolated "
             "(%d of %d tasks measured)", covered, len(distinct), len(distinct) - covered,
             sum(s in measured for s in signatures), len(signatures))


def resolve_comm_model(choice: str | Path, device: DeviceSpec, world: int, profile_budget_s: float,
                       progress: bool = False) -> Any:
    """The communication model (:class:`~cosched.costmodel.comm.CommModel`) of a plan over
    ``world`` devices like ``device``. ``choice`` is a ``comm.json`` written by
    :meth:`CommModel.save`, a directory holding one (``cosched profile --comm -o DIR`` writes
    ``DIR/model/comm.json``), or ``"auto"``: the communication this device's profile store
    (:func:`model_cache_dir`) holds for its backend (gloo on CPU, nccl on CUDA), measured first
    when it holds none and ``profile_budget_s`` allows (a short profile: world ``world``, up to
    4 MiB, a few seconds on CPU)."""
    from cosched.costmodel.comm import COMM_FILE, CommModel
    from cosched.costmodel.store import ProfileStore

    if choice != "auto":
        path = Path(choice)
        for candidate in (path, path / "model" / COMM_FILE, path / COMM_FILE):
            if candidate.is_file():
                return CommModel.load(candidate)
        raise ConfigError(f"comm_model {path}: no {COMM_FILE} there (looked at {path}, {path / 'model' / COMM_FILE} "
                          f"and {path / COMM_FILE}); write one with `cosched profile --comm -o DIR`")
    backend = "gloo" if device.kind == "cpu" else "nccl"
    directory = model_cache_dir(device)
    directory.mkdir(parents=True, exist_ok=True)
    with ProfileStore(directory / STORE_FILE) as store:
        if not store.comm_records(device.fingerprint, backend):
            if profile_budget_s <= 0:
                raise ConfigError(
                    f"no {backend} communication of device {device.name} is measured and the profile budget is 0; "
                    f"measure it with `cosched profile --comm` (then pass comm_model=DIR) or allow profiling")
            if device.kind == "cuda" and not _has_gpus(world):
                raise ConfigError(
                    f"no nccl communication of {device.name} is measured and this machine cannot measure it (it has "
                    f"fewer than {world} GPUs): pass comm_model= a comm.json, e.g. CommModel.from_link(...) "
                    "with the link's published latency and bandwidth, saved")
            from cosched.costmodel.commprofiler import CommProfileConfig, profile_comm

            log.info("measuring %s communication over %d ranks for the plan's split tenants (once per device)",
                     backend, world)
            profile_comm(device, CommProfileConfig(backend=backend, world_sizes=(world,), max_bytes=4 << 20,
                                                   sizes=8, repeats=7, quiet=not progress), store)
        return CommModel.from_store(store, device.fingerprint, backend)


def _has_gpus(world: int) -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.device_count() >= world
