"""Optuna search over decoder knobs, under interference and SLO constraints.

Each trial samples :class:`~cosched.search.decoder.DecoderKnobs`, decodes them into a
schedule and simulates it. TPE minimises makespan; NSGA-II minimises makespan together with
each SLO tenant's completion time over its SLO and returns the Pareto set. Both treat two
constraints as hard: interference (no task slowed beyond ``threshold`` while overlapping)
and the SLOs. Baselines are enqueued (the ones the decoder can express) or compared at the
end (the others), so the result is never worse in simulation than the best baseline.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from sqlalchemy.exc import SQLAlchemyError

from cosched.errors import ConfigError, SLOError
from cosched.ir.graph import frozen_mapping
from cosched.search.baselines import DEFAULT_THRESHOLD, Baseline, all_baselines, greedy_knobs
from cosched.search.costtable import CostTable
from cosched.search.decoder import DecoderKnobs, decode
from cosched.search.improve import improve
from cosched.search.schedule import Schedule
from cosched.search.simulator import Interference, SimResult, simulate
from cosched.search.storage import check_storage
from cosched.search.study import Direction, open_study

__all__ = ["Candidate", "SearchConfig", "SearchResult", "knobs_from_params", "optimize"]

#: Tenant-weight knobs are searched for at most this many tenants (one knob each).
MAX_TENANT_KNOBS = 16

Timer = Callable[[Sequence[Schedule]], Sequence[float]]


@dataclass(frozen=True)
class SearchConfig:
    """Budgets and objectives. ``timeout_s`` bounds wall time (then trial counts vary).

    ``storage`` (an Optuna storage URL) persists the study: it is resumed by a search of the
    same graph, cost model and objective, and named by a hash of them unless ``study_name``
    is given (see :mod:`cosched.search.study`).
    """

    trials: int = 100
    timeout_s: float | None = None
    seed: int = 0
    max_streams: int = 4
    threshold: float = DEFAULT_THRESHOLD
    slo_ms: Mapping[str, float] = field(default_factory=frozen_mapping)
    best_effort: bool = False
    multi_objective: bool = False
    storage: str | None = None
    study_name: str | None = None
    top_k: int = 3
    progress: bool = False
    improve_budget: int = 100_000
    improve_top: int = 3

    def __post_init__(self) -> None:
        if self.trials < 0 or self.max_streams < 1 or self.top_k < 1:
            raise ConfigError(
                f"search needs trials >= 0, max_streams >= 1 and top_k >= 1; got trials="
                f"{self.trials}, max_streams={self.max_streams}, top_k={self.top_k}"
            )
        if self.improve_budget < 0 or self.improve_top < 0:
            raise ConfigError(
                f"search needs improve_budget >= 0 and improve_top >= 0; got improve_budget="
                f"{self.improve_budget}, improve_top={self.improve_top}"
            )
        if not self.threshold >= 1.0:
            raise ConfigError(f"interference threshold must be >= 1.0, got {self.threshold}")
        for tenant, slo in self.slo_ms.items():
            if not slo > 0:
                raise ConfigError(f"SLO of tenant {tenant!r} must be > 0 ms, got {slo}")
        if self.storage is not None:
            check_storage(self.storage)


@dataclass(frozen=True)
class Candidate:
    """A simulated schedule and where it came from (``trial 12``, ``greedy``, ...)."""

    schedule: Schedule
    sim: SimResult
    source: str
    excess: float
    slo_excess: float


@dataclass(frozen=True)
class SearchResult:
    """The chosen schedule and everything needed to judge it. ``trials`` counts the study's
    completed trials (with ``trials=0`` none run: only the baselines are decoded)."""

    schedule: Schedule
    sim: SimResult
    baselines: tuple[Baseline, ...]
    trials: int
    pareto: tuple[Candidate, ...]
    violations: tuple[Interference, ...]
    interference_unavoidable: bool
    slo_met: bool
    slo_report: Mapping[str, tuple[float, float]]
    measured_ms: tuple[float, ...] = ()
    study_name: str | None = None

    def speedup_over(self, baseline: str) -> float:
        for b in self.baselines:
            if b.name == baseline:
                return b.sim.makespan / self.sim.makespan
        raise ConfigError(f"no baseline named {baseline!r}: {[b.name for b in self.baselines]}")


def knobs_from_params(params: Mapping[str, Any], n_tenants: int, threshold: float) -> DecoderKnobs:
    """Decoder knobs from an Optuna trial's parameters (see :func:`_suggest`)."""
    weights = tuple(params.get(f"tenant_{i}", 0.0) for i in range(n_tenants))
    guard = params.get("guard", math.inf)
    if math.isinf(threshold) and not params.get("guard_on", False):
        guard = math.inf
    return DecoderKnobs(
        streams=int(params["streams"]),
        w_bottom=params["w_bottom"],
        w_work=params["w_work"],
        w_alternate=params["w_alternate"],
        w_chain=params.get("w_chain", 0.0),
        guard=guard,
        tenant_weight=weights if n_tenants <= MAX_TENANT_KNOBS else (),
        noise=params.get("noise", 0.0),
        noise_seed=int(params.get("noise_seed", 0)),
    )


def optimize(table: CostTable, config: SearchConfig, timer: Timer | None = None) -> SearchResult:
    """Search for the best schedule of ``table``'s graph; see the module docstring.

    ``timer``, if given, times schedules on the real device; it is called once with the
    ``top_k`` best simulated candidates plus the sequential baseline, and the fastest measured
    one is chosen. Raises
    :class:`SLOError` when no candidate meets every SLO, unless ``best_effort``.
    """
    check_slos(table, config)
    baselines = all_baselines(table, config.threshold)
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = _run_study(table, config, baselines)
    finally:
        optuna.logging.set_verbosity(previous)
    candidates = _candidates(table, config, study, baselines)
    candidates += _improved(table, config, candidates)
    pareto = _pareto(candidates, config) if config.multi_objective else ()
    chosen, measured = _choose(candidates, config, timer)
    sim = simulate(chosen.schedule, table)
    report = {t: (slo, sim.tenant_completion[t]) for t, slo in config.slo_ms.items()}
    if chosen.slo_excess > 0 and not config.best_effort:
        raise _slo_error(config, candidates)
    violations = sim.violations(config.threshold)
    return SearchResult(
        schedule=chosen.schedule,
        sim=sim,
        baselines=baselines,
        trials=sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials),
        pareto=pareto,
        violations=violations,
        interference_unavoidable=bool(violations),
        slo_met=chosen.slo_excess <= 0,
        slo_report=frozen_mapping(report),
        measured_ms=measured,
        study_name=study.study_name if config.storage else None,
    )


def check_slos(table: CostTable, config: SearchConfig) -> None:
    """SLOs name tenants of the table; multi-objective search needs one."""
    unknown = sorted(set(config.slo_ms) - set(table.tenants))
    if unknown:
        raise ConfigError(f"SLOs name unknown tenants {unknown}; tenants are {list(table.tenants)}")
    if config.multi_objective and not config.slo_ms:
        raise ConfigError("multi-objective search needs at least one tenant SLO (slo_ms)")


def _suggest(trial: optuna.Trial, table: CostTable, config: SearchConfig) -> DecoderKnobs:
    trial.suggest_int("streams", 1, stream_limit(table, config))
    trial.suggest_float("w_bottom", 0.0, 1.0)
    trial.suggest_float("w_work", -0.5, 0.5)
    trial.suggest_float("w_alternate", 0.0, 1.0)
    trial.suggest_float("w_chain", 0.0, 2.0)
    trial.suggest_float("noise", 0.0, 1.0)
    trial.suggest_int("noise_seed", 0, 2**16)
    if math.isinf(config.threshold):
        if trial.suggest_categorical("guard_on", [False, True]):
            trial.suggest_float("guard", 1.0, 3.0)
    else:
        trial.suggest_float("guard", 1.0, config.threshold)
    n = len(table.tenants)
    if n <= MAX_TENANT_KNOBS:
        for i in range(n):
            trial.suggest_float(f"tenant_{i}", 0.0, 1.0)
    return knobs_from_params(trial.params, n, config.threshold)


def _slo_excess(sim: SimResult, config: SearchConfig) -> float:
    return sum(max(0.0, sim.tenant_completion[t] / slo - 1.0) for t, slo in config.slo_ms.items())


def _objectives(sim: SimResult, config: SearchConfig) -> list[float]:
    values = [sim.makespan]
    if config.multi_objective:
        values += [sim.tenant_completion[t] / slo for t, slo in sorted(config.slo_ms.items())]
    return values


def _run_study(table: CostTable, config: SearchConfig, baselines: Sequence[Baseline]) -> optuna.Study:
    if config.multi_objective:
        sampler: optuna.samplers.BaseSampler = optuna.samplers.NSGAIISampler(seed=config.seed)
        directions: list[Direction] = ["minimize"] * (1 + len(config.slo_ms))
    else:
        sampler = optuna.samplers.TPESampler(seed=config.seed)
        directions = ["minimize"]
    try:
        if config.storage:
            study = open_study(table, config.storage, _objective_key(config), config.study_name,
                               sampler, directions)
        else:
            study = optuna.create_study(sampler=sampler, directions=directions)
    except (SQLAlchemyError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"study storage {config.storage!r} cannot hold the study: {reason}") from None
    if not study.trials:
        for params in _baseline_params(table, config):
            study.enqueue_trial(params)

    def objective(trial: optuna.Trial) -> list[float]:
        knobs = _suggest(trial, table, config)
        _, sim = decode(table, knobs, record_pairs=False)
        excess = sim.excess(config.threshold) if math.isfinite(config.threshold) else 0.0
        slo = _slo_excess(sim, config)
        trial.set_constraint("interference", excess)
        trial.set_constraint("slo", slo)
        trial.set_user_attr("constraints", [excess, slo])
        return _objectives(sim, config)

    if config.trials:
        study.optimize(
            objective,
            n_trials=config.trials,
            timeout=config.timeout_s,
            show_progress_bar=config.progress,
        )
    return study


def _objective_key(config: SearchConfig) -> dict[str, Any]:
    """What a stored trial's values and constraints mean (see :mod:`cosched.search.study`)."""
    return {
        "multi_objective": config.multi_objective,
        "slo_ms": sorted(config.slo_ms.items()),
        "threshold": repr(config.threshold),
    }


def _baseline_params(table: CostTable, config: SearchConfig) -> list[dict[str, Any]]:
    """Trial parameters that reproduce the greedy baseline and a one-stream schedule."""
    greedy = greedy_knobs(table, config.threshold)
    guard = {"guard": min(greedy.guard, config.threshold)} if math.isfinite(config.threshold) else {"guard_on": False}
    tenants = {f"tenant_{i}": 0.0 for i in range(len(table.tenants))} if len(table.tenants) <= MAX_TENANT_KNOBS else {}
    base = {
        "w_bottom": 1.0, "w_work": 0.0, "w_alternate": 0.0, "w_chain": 0.0, "noise": 0.0, "noise_seed": 0,
        **guard, **tenants,
    }
    limit = stream_limit(table, config)
    return [
        {**base, "streams": min(greedy.streams, limit)},
        {**base, "streams": 1},
        {**base, "streams": min(len(table.tenants), limit), "w_chain": 1.0},  # chains stay on their stream
    ]


def stream_limit(table: CostTable, config: SearchConfig) -> int:
    """The most streams the search tries: ``max_streams``, and on CPU no more than the cores
    (one intra-op thread each at least; more streams would oversubscribe them)."""
    runtime = table.runtime
    if runtime.kind == "cpu":
        return max(1, min(config.max_streams, runtime.cores))
    return config.max_streams


def _candidates(
    table: CostTable, config: SearchConfig, study: optuna.Study, baselines: Sequence[Baseline]
) -> list[Candidate]:
    out = [
        Candidate(b.schedule, b.sim, b.name, _excess(b.sim, config), _slo_excess(b.sim, config))
        for b in baselines
    ]
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    done.sort(key=lambda t: (*t.user_attrs["constraints"], t.values[0], t.number))
    keep = done if config.multi_objective else done[: max(config.top_k, 1)]
    n = len(table.tenants)
    for trial in keep:
        knobs = knobs_from_params(trial.params, n, config.threshold)
        schedule, sim = decode(table, knobs, method="optuna", record_pairs=False)
        schedule = schedule.with_method(
            "optuna-nsga2" if config.multi_objective else "optuna-tpe", trial=trial.number
        )
        out.append(Candidate(schedule, sim, f"trial {trial.number}", _excess(sim, config), _slo_excess(sim, config)))
    return out


def _improved(
    table: CostTable, config: SearchConfig, candidates: Sequence[Candidate]
) -> list[Candidate]:
    """Local-search improvements of the best ``improve_top`` distinct candidates.

    Each gets ``improve_budget // (tasks * improve_top)`` simulations; none run when that
    is zero. Schedules with more streams than ``max_streams`` (stream-per-tenant) are skipped.
    """
    top = config.improve_top
    evaluations = config.improve_budget // (table.n * top) if top else 0
    if evaluations < 1:
        return []
    picked: list[Candidate] = []
    for c in sorted(candidates, key=_rank):
        fits = len(c.schedule.streams) <= config.max_streams
        if fits and all(c.schedule.devices != p.schedule.devices for p in picked):
            picked.append(c)
        if len(picked) == top:
            break

    def score(sim: SimResult) -> tuple[float, float, float]:
        return (_excess(sim, config), _slo_excess(sim, config), sim.makespan)

    out = []
    for i, c in enumerate(picked):
        found = improve(table, c.schedule, score, evaluations, config.max_streams, config.seed + i)
        if found.moves:
            schedule = found.schedule.with_method(f"{c.schedule.method or c.source}+improve")
            out.append(Candidate(
                schedule, found.sim, f"{c.source} improved", _excess(found.sim, config),
                _slo_excess(found.sim, config),
            ))
    return out


def _excess(sim: SimResult, config: SearchConfig) -> float:
    return sim.excess(config.threshold) if math.isfinite(config.threshold) else 0.0


def _rank(c: Candidate) -> tuple[float, float, float]:
    return (c.excess, c.slo_excess, c.sim.makespan)


def _choose(
    candidates: Sequence[Candidate], config: SearchConfig, timer: Timer | None
) -> tuple[Candidate, tuple[float, ...]]:
    ranked = sorted(candidates, key=_rank)
    if timer is None:
        return ranked[0], ()
    top: list[Candidate] = []
    for c in ranked:
        if len(top) < config.top_k and all(c.schedule.devices != t.schedule.devices for t in top):
            if top and _rank(c)[:2] > _rank(top[0])[:2]:
                break
            top.append(c)
    # The sequential baseline is always measured beside the finalists (unless it misses an
    # SLO the finalists meet), so a plan that measures slower than it is never chosen.
    seq = next((c for c in candidates if c.source == "sequential"), None)
    if seq is not None and _rank(seq)[:2] <= _rank(top[0])[:2] and all(
        seq.schedule.devices != t.schedule.devices for t in top
    ):
        top.append(seq)
    times = tuple(float(x) for x in timer([c.schedule for c in top]))
    if len(times) != len(top):
        raise ConfigError(f"the timer returned {len(times)} timings for {len(top)} schedules")
    best = min(range(len(top)), key=lambda i: (times[i], i))
    return top[best], times


def _pareto(candidates: Sequence[Candidate], config: SearchConfig) -> tuple[Candidate, ...]:
    feasible = [c for c in candidates if c.excess <= 0]
    points = [(c, _objectives(c.sim, config)) for c in feasible]
    front = []
    for c, v in points:
        dominated = any(
            all(a <= b for a, b in zip(w, v, strict=True)) and w != v for _, w in points
        )
        if not dominated and all(v != _objectives(f.sim, config) for f in front):
            front.append(c)
    return tuple(sorted(front, key=lambda c: c.sim.makespan))


def _slo_error(config: SearchConfig, candidates: Sequence[Candidate]) -> SLOError:
    parts = []
    for tenant, slo in sorted(config.slo_ms.items()):
        best = min(c.sim.tenant_completion[tenant] for c in candidates)
        if best > slo:
            parts.append(f"tenant {tenant!r}: SLO {slo:.4g} ms, best achieved {best:.4g} ms")
    if not parts:
        parts.append(
            "each SLO is met by some schedule but no single schedule meets all of "
            + ", ".join(f"{t!r} <= {s:.4g} ms" for t, s in sorted(config.slo_ms.items()))
        )
    return SLOError(
        "no schedule meets the latency objectives: " + "; ".join(parts)
        + " (relax the SLOs, or pass best_effort=True to get the closest schedule flagged)"
    )
