"""The learned cost model: two XGBoost regressors over the features of :mod:`.features`.

- standalone: ln(latency in ms / roofline latency in ms) from :data:`STANDALONE_FEATURES`
  (a correction of the roofline, so that shapes outside the training range follow the
  roofline's trend instead of a tree's flat extrapolation);
- slowdown: ln(member latency in a co-run group / its standalone latency) from
  :data:`CORUN_FEATURES`. Predictions are clamped to >= 1, and no co-runners give exactly 1.

Saved as two XGBoost JSON boosters and ``metadata.json`` (schema version, feature names,
device spec, parameters, training metrics). This is the only module that imports xgboost.
"""

from __future__ import annotations

import hashlib
import json
import math
import weakref
from collections.abc import Mapping, Sequence, Set
from pathlib import Path
from typing import Any

import numpy as np
import xgboost

from cosched.costmodel.base import CostModel
from cosched.costmodel.device import DeviceSpec
from cosched.costmodel.features import (
    CORUN_FEATURES,
    STANDALONE_FEATURES,
    corun_vector,
    standalone_vector,
    task_features,
    task_signature,
)
from cosched.costmodel.store import ProfileData
from cosched.errors import CoschedError, CostModelError
from cosched.ir.graph import Graph, Task

__all__ = ["XGBoostModel", "corun_rows"]

SCHEMA_VERSION = 4
_ROOF_LOG_MS = STANDALONE_FEATURES.index("roof_log_ms")
METADATA_FILE = "metadata.json"
STANDALONE_FILE = "standalone.json"
SLOWDOWN_FILE = "slowdown.json"

DEFAULT_PARAMS: Mapping[str, Any] = {
    "objective": "reg:absoluteerror", "eta": 0.05, "max_depth": 5, "min_child_weight": 4,
    "subsample": 0.85, "colsample_bytree": 0.85, "lambda": 1.0, "tree_method": "hist",
    "nthread": 2, "seed": 0,
}
# L1 on log targets: robust to the outliers a shared CPU produces (one 30x-slow standalone
# median made a squared-error model predict 100x too slow for every large held-out shape).
DEFAULT_ROUNDS = 400

Query = tuple[Task, Sequence[Task]]


def corun_rows(
    data: ProfileData, only: Set[str] | None = None, alone_ms: Mapping[str, float] | None = None
) -> list[tuple[list[float], float, float]]:
    """Per co-run member whose group has standalone profiles: (features, measured ms,
    measured standalone ms); with ``only``, just the members whose signature is in it. The
    features' standalone latencies are ``alone_ms[signature]`` (default: the measured ones).

    Training uses the measured latencies although predicting gets the standalone model's:
    out-of-fold predictions in training were tried and measured worse (held-out co-run MAPE,
    mean of 3 splits: tiny zoo 0.41 -> 0.44, full zoo 0.227 -> 0.232)."""
    rows = []
    for group in data.groups:
        for i, sig in enumerate(group.signatures):
            if only is not None and sig not in only:
                continue
            own = data.standalone.get(sig)
            others = [data.standalone.get(s) for j, s in enumerate(group.signatures) if j != i]
            if own is None or any(o is None for o in others):
                continue
            ms = alone_ms if alone_ms is not None else {s: r.median_ms for s, r in data.standalone.items()}
            co = [s for j, s in enumerate(group.signatures) if j != i]
            vec = corun_vector(own.features, [o.features for o in others if o], data.device,
                               group.threads[i], ms[sig], [ms[s] for s in co])
            rows.append((vec, group.latencies_ms[i], own.median_ms))
    return rows


class XGBoostModel(CostModel):
    """Standalone latency and co-run slowdown learned from a device's profiles."""

    name = "xgboost"

    def __init__(self, device: DeviceSpec, params: Mapping[str, Any] | None = None,
                 rounds: int = DEFAULT_ROUNDS) -> None:
        self.device = device
        self.params = dict(DEFAULT_PARAMS if params is None else params)
        self.rounds = rounds
        self.metrics: dict[str, Any] = {}
        self._standalone: xgboost.Booster | None = None
        self._slowdown: xgboost.Booster | None = None
        self._features: weakref.WeakKeyDictionary[Graph, dict[int, tuple[str, dict[str, float]]]] = (
            weakref.WeakKeyDictionary())
        self._latency_cache: dict[str, float] = {}
        self._slowdown_cache: dict[tuple[str, tuple[str, ...]], float] = {}

    # ------------------------------------------------------------------ fit
    def fit(self, data: ProfileData) -> XGBoostModel:
        """Train both regressors on ``data`` (profiles of this model's device)."""
        if data.device.fingerprint != self.device.fingerprint:
            raise CostModelError(
                f"profiles are of device {data.device.fingerprint} ({data.device.name}), the model is "
                f"for {self.device.fingerprint} ({self.device.name})"
            )
        if len(data.standalone) < 2:
            raise CostModelError(f"need at least 2 standalone profiles to fit, found {len(data.standalone)}")
        rows = corun_rows(data)
        if len(rows) < 2:
            raise CostModelError(f"need at least 2 co-run members with standalone profiles, found {len(rows)}")
        records = list(data.standalone.values())
        x_alone = np.array([standalone_vector(r.features, self.device) for r in records])
        y_alone = np.log([r.median_ms for r in records]) - x_alone[:, _ROOF_LOG_MS]
        x_co = np.array([r[0] for r in rows])
        y_co = np.log([r[1] / r[2] for r in rows])
        self._standalone = self._train(x_alone, y_alone, STANDALONE_FEATURES)
        self._slowdown = self._train(x_co, y_co, CORUN_FEATURES)
        self._clear_caches()
        fit_alone = np.exp(self._standalone.inplace_predict(x_alone) + x_alone[:, _ROOF_LOG_MS])
        y_alone = y_alone + x_alone[:, _ROOF_LOG_MS]
        fit_co = np.exp(self._slowdown.inplace_predict(x_co))
        self.metrics = {
            "train_standalone_samples": len(records), "train_corun_samples": len(rows),
            "train_standalone_mape": _mape(fit_alone, np.exp(y_alone)),
            "train_slowdown_mape": _mape(fit_co, np.exp(y_co)),
        }
        return self

    def _train(self, x: np.ndarray, y: np.ndarray, names: Sequence[str]) -> xgboost.Booster:
        matrix = xgboost.DMatrix(x, label=y, feature_names=list(names))
        return xgboost.train(self.params, matrix, num_boost_round=self.rounds)

    def _clear_caches(self) -> None:
        self._latency_cache.clear()
        self._slowdown_cache.clear()

    def _boosters(self) -> tuple[xgboost.Booster, xgboost.Booster]:
        if self._standalone is None or self._slowdown is None:
            raise CostModelError("the XGBoost cost model is not fitted; call fit() or load() first")
        return self._standalone, self._slowdown

    # ------------------------------------------------------ feature-level
    def predict_standalone_features(self, feats: Sequence[Mapping[str, float]]) -> np.ndarray:
        """Standalone latency (ms) of tasks given their task features."""
        if not feats:
            return np.zeros(0)
        x = np.array([standalone_vector(f, self.device) for f in feats])
        return np.exp(self._boosters()[0].inplace_predict(x) + x[:, _ROOF_LOG_MS])

    def predict_slowdown_vectors(self, vectors: np.ndarray) -> np.ndarray:
        """Slowdowns (>= 1) for rows of :data:`CORUN_FEATURES` values."""
        if len(vectors) == 0:
            return np.zeros(0)
        return np.maximum(1.0, np.exp(self._boosters()[1].inplace_predict(np.asarray(vectors))))

    # ---------------------------------------------------------- graph-level
    def _task(self, graph: Graph, task: Task) -> tuple[str, dict[str, float]]:
        per_graph = self._features.setdefault(graph, {})
        if task.id not in per_graph:
            per_graph[task.id] = (task_signature(graph, task), task_features(graph, task))
        return per_graph[task.id]

    def predict_task(self, graph: Graph, task: Task) -> float:
        return float(self.predict_tasks(graph, [task])[0])

    def predict_tasks(self, graph: Graph, tasks: Sequence[Task]) -> np.ndarray:
        described = [self._task(graph, t) for t in tasks]
        todo = {sig: feats for sig, feats in described if sig not in self._latency_cache}
        if todo:
            values = self.predict_standalone_features(list(todo.values()))
            self._latency_cache.update(zip(todo, (float(v) for v in values), strict=True))
        return np.array([self._latency_cache[sig] for sig, _ in described], dtype=np.float64)

    def predict_slowdown(self, graph: Graph, task: Task, co_runners: Sequence[Task]) -> float:
        return float(self.predict_slowdowns(graph, [(task, co_runners)])[0])

    def predict_slowdowns(self, graph: Graph, queries: Sequence[Query]) -> np.ndarray:
        """Slowdown of each ``(task, co_runners)``; cached by the signatures involved."""
        out = np.ones(len(queries), dtype=np.float64)
        keys: list[tuple[str, tuple[str, ...]] | None] = []
        todo: dict[tuple[str, tuple[str, ...]], list[float]] = {}
        for task, co in queries:
            if not co:
                keys.append(None)
                continue
            sig, feats = self._task(graph, task)
            co_described = sorted((self._task(graph, t) for t in co), key=lambda d: d[0])
            key = (sig, tuple(d[0] for d in co_described))
            keys.append(key)
            if key not in self._slowdown_cache and key not in todo:
                threads = self.device.threads_per_member(1 + len(co))
                if sig not in self._latency_cache or any(d[0] not in self._latency_cache for d in co_described):
                    self.predict_tasks(graph, [task, *co])  # fills the latency cache
                alone = self._latency_cache
                todo[key] = corun_vector(feats, [d[1] for d in co_described], self.device, threads,
                                         alone[sig], [alone[d[0]] for d in co_described])
        if todo:
            values = self.predict_slowdown_vectors(np.array(list(todo.values())))
            self._slowdown_cache.update(zip(todo, (float(v) for v in values), strict=True))
        for i, key in enumerate(keys):
            if key is not None:
                out[i] = self._slowdown_cache[key]
        return out

    def identity(self) -> dict[str, Any]:
        """The kind, the device fingerprint and a hash of the trained boosters (the same
        before and after a save/load round trip; another fit on other data changes it)."""
        digest = hashlib.sha256()
        for booster in self._boosters():
            digest.update(bytes(booster.save_raw("ubj")))
        return {"kind": self.name, "device": self.device.fingerprint, "boosters": digest.hexdigest()[:24]}

    # ----------------------------------------------------------- save/load
    def save(self, directory: str | Path) -> None:
        standalone, slowdown = self._boosters()
        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        standalone.save_model(str(root / STANDALONE_FILE))
        slowdown.save_model(str(root / SLOWDOWN_FILE))
        meta = {
            "schema_version": SCHEMA_VERSION, "model": self.name, "xgboost": xgboost.__version__,
            "device": self.device.to_json(), "params": self.params, "rounds": self.rounds,
            "standalone_features": list(STANDALONE_FEATURES), "corun_features": list(CORUN_FEATURES),
            "targets": {"standalone": "ln(latency ms) - roof_log_ms", "slowdown": "ln(co-run ms / standalone ms)"},
            "metrics": self.metrics,
        }
        (root / METADATA_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> XGBoostModel:
        root = Path(directory)
        meta = _read_metadata(root / METADATA_FILE)
        try:
            device = DeviceSpec.from_json(meta["device"], str(root / METADATA_FILE))
        except CoschedError as exc:
            raise CostModelError(str(exc)) from exc
        model = cls(device, meta["params"], int(meta["rounds"]))
        model.metrics = dict(meta.get("metrics", {}))
        model._standalone = _read_booster(root / STANDALONE_FILE, STANDALONE_FEATURES)
        model._slowdown = _read_booster(root / SLOWDOWN_FILE, CORUN_FEATURES)
        return model


def _read_metadata(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CostModelError(f"cannot read cost-model metadata {path}: {exc}") from exc
    expected = {"schema_version": SCHEMA_VERSION, "model": XGBoostModel.name,
                "standalone_features": list(STANDALONE_FEATURES), "corun_features": list(CORUN_FEATURES)}
    for key, value in expected.items():
        if meta.get(key) != value:
            shown = meta.get(key) if not isinstance(value, list) else f"{len(meta.get(key) or [])} names"
            want = value if not isinstance(value, list) else f"{len(value)} names"
            raise CostModelError(
                f"{path}: {key} is {shown!r}, this cosched expects {want!r}; retrain with `cosched profile`"
            )
    missing = [k for k in ("device", "params", "rounds") if k not in meta]
    if missing:
        raise CostModelError(f"{path}: metadata lacks {missing}")
    return meta


def _read_booster(path: Path, names: Sequence[str]) -> xgboost.Booster:
    booster = xgboost.Booster()
    try:
        booster.load_model(str(path))
    except xgboost.core.XGBoostError as exc:
        raise CostModelError(f"cannot load XGBoost model {path}: {str(exc).splitlines()[0]}") from exc
    if booster.num_features() != len(names) or list(booster.feature_names or []) != list(names):
        raise CostModelError(
            f"{path}: booster has {booster.num_features()} features, expected the {len(names)} named in metadata"
        )
    return booster


def _mape(predicted: np.ndarray, actual: np.ndarray) -> float:
    return float(np.mean(np.abs(predicted - actual) / actual)) if len(actual) else math.nan
