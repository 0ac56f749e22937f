"""The communication model: alpha-beta fits of measured collectives and transfers.

Every communication operation is priced as ``ms = alpha + nbytes * beta`` (a latency and a
per-byte time, the inverse of a bandwidth), fitted per (backend, kind, world) to the
measurements :mod:`cosched.costmodel.commprofiler` stores. ``nbytes`` is always the bytes of the
*result on one rank*: the message of a ``send_recv``, the tensor of an ``all_reduce``, the
gathered (concatenated) tensor of an ``all_gather``, one rank's output of an ``all_to_all``. For
an IR communication op that is its output's size, the ``bytes_written`` analysis gives it.

Fit: non-negative least squares on relative residuals (each row divided by its measured time),
so that a 10 us message and a 50 ms one weigh alike: the model is used at every size, and an
ordinary fit would spend all its freedom on the largest messages and leave alpha to chance.
``scipy.optimize.nnls`` solves the bounded problem exactly (alpha and beta >= 0, as a latency
and a time per byte must be), where an unconstrained ``numpy.linalg.lstsq`` can return a
negative alpha on a noisy small-size regime and would need a hand-written active-set step.

World sizes never profiled are extrapolated from the nearest profiled one (ties: the larger)
with the ring algorithms' step and volume counts (Thakur et al., 2005; Patarasuk and Yuan,
2009) for a result of n bytes per rank on w ranks:

=============  ===========  =================
kind           latency x    bytes x
=============  ===========  =================
send_recv      1            n (any world)
all_reduce     2 (w - 1)    2 (w - 1) / w n
all_gather     w - 1        (w - 1) / w n
all_to_all     w - 1        (w - 1) / w n
=============  ===========  =================

so alpha scales by the ratio of latency terms and beta by the ratio of volume terms. Backends
do not all run rings (gloo may pick halving-doubling or bcube), so an extrapolated price is an
estimate; :meth:`CommModel.predict_ms` with ``extrapolate=False`` refuses it instead. The same
counts price a link never measured (:meth:`CommModel.from_link`, for planning ahead of time
for hardware this machine lacks) from its latency and bandwidth.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cosched.costmodel.store import CommRecord, ProfileStore
from cosched.errors import CostModelError
from cosched.ir.graph import Graph, Op

__all__ = ["KINDS", "OP_KINDS", "CommFit", "CommModel", "fit_alpha_beta", "held_out_split", "latency_steps",
           "op_comm", "volume_factor"]

SCHEMA_VERSION = 1
#: The file name :meth:`CommModel.save` uses inside a cost model's folder.
COMM_FILE = "comm.json"
KINDS = ("send_recv", "all_reduce", "all_gather", "all_to_all")
#: The IR's communication ops (domain ``cosched``) and the kind each is priced as.
OP_KINDS = {"Transfer": "send_recv", "AllReduce": "all_reduce", "AllGather": "all_gather",
            "AllToAll": "all_to_all"}


def latency_steps(kind: str, world: int) -> float:
    """Message steps of the ring algorithm of ``kind`` on ``world`` ranks (the table above)."""
    _check_kind(kind)
    if kind == "send_recv":
        return 1.0
    return float(2 * (world - 1) if kind == "all_reduce" else world - 1)


def volume_factor(kind: str, world: int) -> float:
    """Bytes one rank sends per byte of its result, in the ring algorithm of ``kind``."""
    _check_kind(kind)
    if kind == "send_recv":
        return 1.0
    share = (world - 1) / world
    return 2 * share if kind == "all_reduce" else share


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise CostModelError(f"communication kind {kind!r} is not known; expected one of {list(KINDS)}")


def op_comm(graph: Graph, op: Op) -> tuple[str, int, int]:
    """``(kind, nbytes, world)`` of an IR communication op: its kind, its output's bytes (the
    result on its rank) and its group's world (2 for a ``Transfer``)."""
    if op.domain != "cosched" or op.op_type not in OP_KINDS:
        raise CostModelError(f"op {op.name!r} ({op.domain or 'ai.onnx'}::{op.op_type}) of tenant {op.tenant!r} "
                             f"is not a communication op; expected cosched::{'/'.join(OP_KINDS)}")
    kind = OP_KINDS[op.op_type]
    world = 2 if kind == "send_recv" else op.attr("world")
    if not isinstance(world, int) or world < 2:
        raise CostModelError(f"op {op.name!r} ({op.op_type}) of tenant {op.tenant!r} has world {world!r}; "
                             "expected an int attribute 'world' >= 2")
    return kind, graph.tensor(op.outputs[0]).nbytes, world


@dataclass(frozen=True)
class CommFit:
    """``ms = alpha_ms + nbytes * beta_ms_per_byte`` for one (kind, world), and how well it fits
    the ``points`` measurements it came from: mean and largest relative error."""

    kind: str
    world: int
    alpha_ms: float
    beta_ms_per_byte: float
    points: int
    mape: float
    max_rel_error: float
    min_bytes: int
    max_bytes: int

    def predict_ms(self, nbytes: float) -> float:
        return self.alpha_ms + nbytes * self.beta_ms_per_byte

    @property
    def alpha_us(self) -> float:
        return self.alpha_ms * 1e3

    @property
    def bandwidth_gbps(self) -> float:
        """1 / beta in GB/s (10^9 bytes of result per second; inf when beta is 0)."""
        return math.inf if self.beta_ms_per_byte == 0 else 1e-6 / self.beta_ms_per_byte


def fit_alpha_beta(nbytes: Sequence[float], ms: Sequence[float]) -> tuple[float, float]:
    """``(alpha_ms, beta_ms_per_byte) >= 0`` minimising the squared *relative* residuals of
    ``alpha + nbytes * beta`` against ``ms`` (see the module docstring)."""
    from scipy.optimize import nnls  # on first fit: importing the model needs no scipy

    x = np.asarray(nbytes, dtype=np.float64)
    y = np.asarray(ms, dtype=np.float64)
    if len(x) != len(y) or len(x) < 2 or len(np.unique(x)) < 2:
        raise CostModelError(
            f"an alpha-beta fit needs measurements at two or more distinct sizes, got {len(np.unique(x))} "
            f"size(s) in {len(x)} measurement(s)"
        )
    if not (np.all(np.isfinite(y)) and np.all(y > 0) and np.all(x >= 0)):
        raise CostModelError(f"an alpha-beta fit needs positive finite times and sizes >= 0, got "
                             f"times {y.tolist()} at sizes {x.tolist()}")
    design = np.stack([np.ones_like(x), x], axis=1) / y[:, None]
    scale = np.array([1.0, 1.0 / max(float(x.max()), 1.0)])  # columns of like magnitude
    solution, _ = nnls(design * scale, np.ones_like(y))
    alpha, beta = (solution * scale).tolist()
    return float(alpha), float(beta)


def fit_records(records: Sequence[CommRecord]) -> CommFit:
    """The alpha-beta fit of measurements of one (kind, world)."""
    keys = {(r.kind, r.world) for r in records}
    if len(keys) != 1:
        raise CostModelError(f"fit_records takes measurements of one (kind, world), got {sorted(keys)}")
    (kind, world), = keys
    sizes = [r.nbytes for r in records]
    times = [r.median_ms for r in records]
    try:
        alpha, beta = fit_alpha_beta(sizes, times)
    except CostModelError as exc:
        raise CostModelError(f"{kind} over {world} ranks: {exc}; profile more sizes (a larger "
                             "--max-bytes)") from None
    errors = [abs(alpha + n * beta - t) / t for n, t in zip(sizes, times, strict=True)]
    return CommFit(kind, world, alpha, beta, len(records), float(np.mean(errors)), max(errors),
                   min(sizes), max(sizes))


def held_out_split(records: Iterable[CommRecord]) -> tuple[list[CommRecord], list[CommRecord]]:
    """Split measurements by size into (fit, held out): per (kind, world), sizes in increasing
    order alternate, the smallest and largest always in the fit (so held-out sizes are
    interpolated, never extrapolated); a (kind, world) with fewer than 4 sizes is all fit."""
    groups: dict[tuple[str, int], list[CommRecord]] = {}
    for record in records:
        groups.setdefault((record.kind, record.world), []).append(record)
    fit: list[CommRecord] = []
    held: list[CommRecord] = []
    for rows in groups.values():
        rows = sorted(rows, key=lambda r: r.nbytes)
        for i, row in enumerate(rows):
            (held if len(rows) >= 4 and i % 2 == 1 and i != len(rows) - 1 else fit).append(row)
    return fit, held


@dataclass(frozen=True)
class CommModel:
    """Alpha-beta fits of one backend on one device (``fingerprint``), per (kind, world)."""

    backend: str
    fingerprint: str
    fits: tuple[CommFit, ...]

    def __post_init__(self) -> None:
        keys = [(f.kind, f.world) for f in self.fits]
        if len(set(keys)) != len(keys):
            raise CostModelError(f"communication model of {self.backend} has two fits of one (kind, world): {keys}")
        for fit in self.fits:
            _check_kind(fit.kind)

    @classmethod
    def fit(cls, backend: str, fingerprint: str, records: Sequence[CommRecord]) -> CommModel:
        """Fit every (kind, world) that ``records`` (all of ``backend``) measure."""
        if not records:
            raise CostModelError(f"no communication measurements of backend {backend!r} on device "
                                 f"{fingerprint} to fit; run `cosched profile --comm` first")
        others = sorted({r.backend for r in records} - {backend})
        if others:
            raise CostModelError(f"fitting a {backend} model, but measurements of {others} were given")
        groups: dict[tuple[str, int], list[CommRecord]] = {}
        for record in records:
            groups.setdefault((record.kind, record.world), []).append(record)
        return cls(backend, fingerprint, tuple(fit_records(groups[k]) for k in sorted(groups)))

    @classmethod
    def from_link(cls, backend: str, fingerprint: str, latency_s: float, bandwidth: float) -> CommModel:
        """A model of a link never measured (planning for hardware this machine lacks): every
        kind priced by its ring algorithm (module docstring) over links of ``latency_s`` per
        message step and ``bandwidth`` bytes/s per direction, e.g. a vendor's figures. Its fits
        have ``points == 0``: derived, not fitted."""
        if not (latency_s >= 0 and bandwidth > 0 and math.isfinite(latency_s) and math.isfinite(bandwidth)):
            raise CostModelError(f"a link needs a latency >= 0 s and a bandwidth > 0 bytes/s, got "
                                 f"latency_s={latency_s} and bandwidth={bandwidth}")
        fits = tuple(
            CommFit(kind, 2, latency_s * 1e3 * latency_steps(kind, 2), volume_factor(kind, 2) * 1e3 / bandwidth,
                    0, 0.0, 0.0, 0, 0)
            for kind in KINDS)
        return cls(backend, fingerprint, fits)

    @classmethod
    def from_store(cls, store: ProfileStore, fingerprint: str, backend: str) -> CommModel:
        """Fit everything ``store`` measured of ``backend`` on device ``fingerprint``."""
        records = store.comm_records(fingerprint, backend)
        if not records:
            raise CostModelError(
                f"profile store {store.path} holds no {backend} communication of device {fingerprint} "
                f"(it holds: {store.comm_backends(fingerprint) or 'none'}); measure it with "
                f"`cosched profile --comm --backend {backend} -o DIR`"
            )
        return cls.fit(backend, fingerprint, records)

    # ------------------------------------------------------------- predict
    def worlds(self, kind: str) -> list[int]:
        return sorted(f.world for f in self.fits if f.kind == kind)

    def predict_ms(self, kind: str, nbytes: float, world: int, extrapolate: bool = True) -> float:
        """Milliseconds of one ``kind`` over ``world`` ranks with a result of ``nbytes`` bytes per
        rank. A world never profiled is extrapolated from the nearest one (module docstring),
        or refused with ``extrapolate=False``."""
        _check_kind(kind)
        if world < 2:
            raise CostModelError(f"{kind} over {world} rank(s): communication needs a world of 2 or more")
        if nbytes < 0:
            raise CostModelError(f"{kind} of {nbytes} bytes: expected a size >= 0")
        worlds = self.worlds(kind)
        if not worlds:
            profiled = sorted({(f.kind, f.world) for f in self.fits})
            raise CostModelError(
                f"the {self.backend} communication model of device {self.fingerprint} never measured "
                f"{kind} (it holds {profiled}); profile it with `cosched profile --comm`"
            )
        if kind == "send_recv":  # two ranks whatever the world
            return self._fit(kind, worlds[0]).predict_ms(nbytes)
        if world in worlds:
            return self._fit(kind, world).predict_ms(nbytes)
        if not extrapolate:
            raise CostModelError(
                f"the {self.backend} communication model of device {self.fingerprint} measured {kind} "
                f"over worlds {worlds}, not {world}; profile `--world-sizes {world}` or allow extrapolation"
            )
        base = self._fit(kind, min(worlds, key=lambda w: (abs(w - world), -w)))
        alpha = base.alpha_ms * latency_steps(kind, world) / latency_steps(kind, base.world)
        beta = base.beta_ms_per_byte * volume_factor(kind, world) / volume_factor(kind, base.world)
        return alpha + nbytes * beta

    def predict_op_ms(self, graph: Graph, op: Op) -> float:
        """Milliseconds of one IR communication op (:func:`op_comm`) of ``graph``."""
        return self.predict_ms(*op_comm(graph, op))

    def _fit(self, kind: str, world: int) -> CommFit:
        return next(f for f in self.fits if f.kind == kind and f.world == world)

    # ------------------------------------------------------------- report
    def evaluate(self, records: Iterable[CommRecord]) -> list[dict[str, Any]]:
        """Predicted against measured for each record (e.g. sizes held out of the fit)."""
        rows = []
        for r in records:
            predicted = self.predict_ms(r.kind, r.nbytes, r.world)
            rows.append({"kind": r.kind, "world": r.world, "nbytes": r.nbytes, "measured_ms": r.median_ms,
                         "predicted_ms": predicted, "ratio": predicted / r.median_ms})
        return rows

    # ---------------------------------------------------------- save/load
    def to_json(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "model": "alpha-beta", "backend": self.backend,
                "fingerprint": self.fingerprint, "units": {"alpha": "ms", "beta": "ms per byte of result"},
                "fits": [asdict(f) for f in self.fits]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str = "<json>") -> CommModel:
        if data.get("schema_version") != SCHEMA_VERSION or data.get("model") != "alpha-beta":
            raise CostModelError(
                f"{source}: communication model schema_version {data.get('schema_version')!r} and model "
                f"{data.get('model')!r}, expected {SCHEMA_VERSION} and 'alpha-beta'; profile again with "
                "`cosched profile --comm`"
            )
        try:
            fits = tuple(CommFit(**f) for f in data["fits"])
            return cls(str(data["backend"]), str(data["fingerprint"]), fits)
        except (KeyError, TypeError) as exc:
            raise CostModelError(f"{source}: malformed communication model ({exc})") from exc

    def save(self, path: str | Path) -> None:
        """Write JSON to ``path``, or to ``path/comm.json`` when ``path`` is a folder."""
        target = Path(path) / COMM_FILE if Path(path).is_dir() else Path(path)
        target.write_text(json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> CommModel:
        target = Path(path) / COMM_FILE if Path(path).is_dir() else Path(path)
        try:
            data = json.loads(target.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CostModelError(f"cannot read communication model {target}: {exc}") from exc
        return cls.from_json(data, str(target))
