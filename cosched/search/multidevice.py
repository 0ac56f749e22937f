"""Search over placements and per-device stream schedules for a multi-device plan.

Each trial samples :class:`~cosched.search.placement.PlacementKnobs` (the order units are
placed in and how a device is chosen; the placement always fits the caps, or the trial is
pruned) and :class:`~cosched.search.decoder.DecoderKnobs` (the existing list scheduler, run
inside every device), decodes them into a multi-device schedule and simulates it: devices
run side by side, tasks interfere only with tasks of their own device, communication tasks
run on a communication stream per device at their modelled latency. TPE minimises the
makespan of one round of every tenant, under the interference and SLO constraints.

Baselines, always decoded and reported, each device scheduled by the greedy list scheduler
(:func:`~cosched.search.baselines.greedy_knobs`): ``one-device`` (everything on
the first device, when it fits its cap), ``round-robin`` (units in graph order over the
devices in turn; reported even over a cap, flagged) and ``largest-first`` (greedy by memory).
The best feasible candidate wins, so the result is never worse in simulation than a baseline
that fits. The report also gives the steady-state throughput if rounds are pipelined: one
round per the longest time any device is busy in a round.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import optuna

from cosched.errors import ConfigError, CoschedError, SLOError
from cosched.ir.sharding import SplitSpec
from cosched.search.baselines import greedy_knobs
from cosched.search.costtable import CostTable
from cosched.search.decoder import DecoderKnobs, decode
from cosched.search.optimizer import (
    MAX_TENANT_KNOBS,
    SearchConfig,
    check_slos,
    knobs_from_params,
    stream_limit,
)
from cosched.search.placement import (
    Footprint,
    PlacementKnobs,
    Unit,
    balanced,
    check_fits,
    device_bytes,
    footprints,
    largest_first,
    round_robin,
    task_devices,
)
from cosched.search.schedule import Schedule
from cosched.search.simulator import Interference, SimResult, simulate
from cosched.search.study import open_study
from cosched.sizes import format_bytes

__all__ = ["DeviceCandidate", "DeviceSearchResult", "Variant", "optimize_devices", "optimize_splits"]


@dataclass(frozen=True)
class Variant:
    """One choice of splits (none: every tenant whole): its graph's cost table and the
    latencies of its communication tasks."""

    splits: tuple[SplitSpec, ...]
    table: CostTable
    comm_ms: Mapping[int, float] = field(default_factory=dict)


Build = Callable[[tuple[SplitSpec, ...]], Variant]


@dataclass(frozen=True)
class DeviceCandidate:
    """A placement, its decoded multi-device schedule and what it costs."""

    name: str
    placement: Mapping[Unit, int]
    schedule: Schedule
    sim: SimResult
    memory_bytes: tuple[int, ...]
    fits: bool
    excess: float
    slo_excess: float
    variant: Variant | None = field(default=None, compare=False, repr=False)

    @property
    def throughput_rps(self) -> float:
        """Rounds per second if rounds are pipelined: one per the busiest device's span."""
        return 1000.0 / max(_device_spans(self.schedule, self.sim)) if self.sim.makespan > 0 else math.inf


@dataclass(frozen=True)
class DeviceSearchResult:
    """The chosen candidate, the baselines, the caps and the trials run."""

    best: DeviceCandidate
    baselines: tuple[DeviceCandidate, ...]
    caps: tuple[int, ...]
    names: tuple[str, ...]
    trials: int
    slo_ms: Mapping[str, float] = field(default_factory=dict)
    study_name: str | None = None
    threshold: float = math.inf

    # the fields a one-device SearchResult has, so reports and lowering read either
    @property
    def schedule(self) -> Schedule:
        return self.best.schedule

    @property
    def sim(self) -> SimResult:
        return self.best.sim

    @property
    def slo_met(self) -> bool:
        return self.best.slo_excess <= 0

    @property
    def slo_report(self) -> dict[str, tuple[float, float]]:
        return {t: (s, self.best.sim.tenant_completion[t]) for t, s in self.slo_ms.items()}

    @property
    def violations(self) -> tuple[Interference, ...]:
        return self.best.sim.violations(self.threshold)

    measured_ms: tuple[float, ...] = ()

    def report(self) -> dict[str, Any]:
        def row(c: DeviceCandidate) -> dict[str, Any]:
            return {"makespan_ms": c.sim.makespan, "throughput_rps": c.throughput_rps, "fits": c.fits,
                    "memory_bytes": list(c.memory_bytes),
                    "placement": {f"{t}" if s is None else f"{t}#{s}": d for (t, s), d in sorted(
                        c.placement.items(), key=lambda x: (x[0][0], -1 if x[0][1] is None else x[0][1]))}}
        return {"devices": list(self.names), "caps_bytes": list(self.caps), "trials": self.trials,
                "splits": [s.to_json() for s in self.variant.splits],
                "plan": row(self.best), "baselines": {b.name: row(b) for b in self.baselines}}

    @property
    def variant(self) -> Variant:
        """The splits, graph and communication latencies of the chosen candidate."""
        assert self.best.variant is not None
        return self.best.variant


def optimize_devices(table: CostTable, caps: Sequence[int], names: Sequence[str], config: SearchConfig,
                     comm_ms: Mapping[int, float] | None = None) -> DeviceSearchResult:
    """Place ``table``'s units on ``len(caps)`` devices and schedule each (no split to choose);
    see :func:`optimize_splits`."""
    fixed = Variant((), table, dict(comm_ms or {}))
    return optimize_splits(lambda _: fixed, {}, caps, names, config)


def optimize_splits(build: Build, choices: Mapping[str, Sequence[SplitSpec]], caps: Sequence[int],
                    names: Sequence[str], config: SearchConfig) -> DeviceSearchResult:
    """Choose a split of each tenant of ``choices`` (tenant -> the splits that make it fit,
    :func:`cosched.search.splitting.split_choices`; ``build`` makes the cost table of a choice)
    jointly with the placement and the schedule of every device; see the module docstring.
    Raises :class:`ConfigError` when no placement can fit the caps, and :class:`SLOError`
    when no candidate meets the SLOs (unless ``best_effort``)."""
    if len(caps) != len(names) or len(caps) < 2:
        raise ConfigError(f"a multi-device search needs two or more devices with a cap each; got {list(names)}")
    if config.multi_objective:
        raise ConfigError("a multi-device search minimises the makespan (TPE); the pareto objective is for one device")
    tenants = sorted(choices)
    searches: dict[tuple[int, ...], _Search | ConfigError] = {}

    def search_of(picked: tuple[int, ...]) -> _Search | ConfigError:
        """The search inside one choice of splits, or why that choice cannot fit."""
        if picked not in searches:
            try:
                variant = build(tuple(choices[t][i] for t, i in zip(tenants, picked, strict=True)))
                prints = footprints(variant.table.graph, variant.table.latency)
                check_fits(prints, caps, names, variant.table.graph)
                searches[picked] = _Search(variant, prints, tuple(caps), config)
            except CoschedError as exc:  # this choice cannot fit, or its communication cannot be priced
                searches[picked] = exc if isinstance(exc, ConfigError) else ConfigError(str(exc))
        return searches[picked]

    first = _first_feasible(search_of, [len(choices[t]) for t in tenants])
    check_slos(first.table, config)
    baselines = first.baselines()
    study = _study(search_of, tenants, choices, first, config)
    candidates = [b for b in baselines if b.fits] + _finalists(study, search_of, tenants, config)
    if not candidates:
        raise ConfigError(f"no placement found that fits the caps {_caps(caps, names)} (only tenants larger than "
                          "every cap are split); raise the caps or add devices")
    best = min(candidates, key=_rank)
    if best.slo_excess > 0 and not config.best_effort:
        misses = ", ".join(f"{t!r} {best.sim.tenant_completion[t]:.4g} ms > {slo:.4g} ms"
                           for t, slo in sorted(config.slo_ms.items()) if best.sim.tenant_completion[t] > slo)
        raise SLOError(f"no multi-device schedule meets the latency objectives: best found {misses} (relax the "
                       "SLOs, add devices, or pass best_effort=True)")
    done = sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials) if study else 0
    assert best.variant is not None
    best = replace(best, sim=simulate(best.schedule, best.variant.table, record_pairs=True,  # with its pairs
                                      comm_ms=best.variant.comm_ms))
    return DeviceSearchResult(best, tuple(baselines), tuple(caps), tuple(names), done, dict(config.slo_ms),
                              study.study_name if study is not None and config.storage else None, config.threshold)


def _study(search_of: Callable[[tuple[int, ...]], _Search | ConfigError], tenants: Sequence[str],
           choices: Mapping[str, Sequence[SplitSpec]], first: _Search, config: SearchConfig) -> optuna.Study | None:
    if not config.trials:
        return None
    sampler = optuna.samplers.TPESampler(seed=config.seed)
    if config.storage:
        key = {"multi_device": True, "caps": list(first.caps), "threshold": repr(config.threshold),
               "slo_ms": sorted(config.slo_ms.items()),
               "splits": {t: [s.to_json() for s in choices[t]] for t in tenants}}
        study = open_study(first.table, config.storage, key, config.study_name, sampler, ["minimize"])
    else:
        study = optuna.create_study(sampler=sampler, direction="minimize")

    def objective(trial: optuna.Trial) -> float:
        picked = tuple(trial.suggest_int(f"split_{i}", 0, len(choices[t]) - 1) for i, t in enumerate(tenants))
        search = search_of(picked)
        if isinstance(search, ConfigError):
            raise optuna.TrialPruned(str(search))
        c = search.trial(trial)
        trial.set_user_attr("rank", [c.excess, c.slo_excess])
        return c.sim.makespan + 1e6 * (c.excess + c.slo_excess)

    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        if not study.trials:
            zero = {f"split_{i}": 0 for i in range(len(tenants))}
            for params in ({"w_memory": 1.0, "balance": 0.0}, {"w_memory": 0.0, "balance": 1.0}):
                study.enqueue_trial(zero | params)
        study.optimize(objective, n_trials=config.trials, timeout=config.timeout_s, show_progress_bar=config.progress)
    finally:
        optuna.logging.set_verbosity(previous)
    return study


def _finalists(study: optuna.Study | None, search_of: Callable[[tuple[int, ...]], _Search | ConfigError],
               tenants: Sequence[str], config: SearchConfig) -> list[DeviceCandidate]:
    if study is None:
        return []
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    done.sort(key=lambda t: (t.value, t.number))
    out = []
    for trial in done[: max(1, config.top_k)]:
        search = search_of(tuple(int(trial.params[f"split_{i}"]) for i in range(len(tenants))))
        c = None if isinstance(search, ConfigError) else search.replay(trial.params, trial.number)
        if c is not None and c.fits:
            out.append(c)
    return out


class _Search:
    """Placements and schedules of one variant (one choice of splits)."""

    def __init__(self, variant: Variant, prints: Mapping[Unit, Footprint], caps: tuple[int, ...],
                 config: SearchConfig) -> None:
        self.variant, self.table, self.prints, self.caps, self.config = variant, variant.table, prints, caps, config
        self.tenants = list(dict.fromkeys(u[0] for u in prints))

    def candidate(self, name: str, placement: Mapping[Unit, int], knobs: DecoderKnobs) -> DeviceCandidate:
        graph, config = self.table.graph, self.config
        schedule, _ = decode(self.table, knobs, method=name, record_pairs=False,
                             device_of=task_devices(graph, placement), devices=len(self.caps),
                             comm_ms=self.variant.comm_ms)
        # priced again with each device at its own stream count (the decoder gives every device
        # the knob's), as its rank will run: what is ranked is what is reported
        sim = simulate(schedule, self.table, record_pairs=False, comm_ms=self.variant.comm_ms)
        memory = device_bytes(self.prints, placement, graph, len(self.caps))
        fits = all(m <= c for m, c in zip(memory, self.caps, strict=True))
        excess = sim.excess(config.threshold) if math.isfinite(config.threshold) else 0.0
        slo = sum(max(0.0, sim.tenant_completion[t] / s - 1.0) for t, s in config.slo_ms.items())
        return DeviceCandidate(name, dict(placement), schedule.with_method(name), sim, memory, fits, excess, slo,
                               self.variant)

    def baselines(self) -> list[DeviceCandidate]:
        # the greedy list scheduler inside every device (bottom-level priorities, the guard at
        # the threshold, as many streams as the search may use), so that baselines and plan
        # differ in placement, not in what runs inside a device
        greedy = greedy_knobs(self.table, self.config.threshold)
        one = replace(greedy, streams=min(greedy.streams, stream_limit(self.table, self.config)))
        out = []
        everything = dict.fromkeys(self.prints, 0)
        if device_bytes(self.prints, everything, self.table.graph, len(self.caps))[0] <= self.caps[0] and not any(
                u[1] is not None for u in self.prints):
            out.append(self.candidate("one-device", everything, one))
        out.append(self.candidate("round-robin", round_robin(self.prints, len(self.caps)), one))
        packed = largest_first(self.prints, self.caps, self.table.graph)
        if packed is not None:
            out.append(self.candidate("largest-first", packed, one))
        return out

    def placement(self, params: Mapping[str, Any]) -> dict[Unit, int] | None:
        bias = {t: params.get(f"place_{i}", 0.0) for i, t in enumerate(self.tenants)}
        knobs = PlacementKnobs(params["w_memory"], params["balance"], bias)
        return balanced(self.prints, self.caps, self.table.graph, knobs)

    def trial(self, trial: optuna.Trial) -> DeviceCandidate:
        """Sample placement and decoder knobs in ``trial`` and decode them (pruned when the
        placement cannot fit)."""
        config = self.config
        trial.suggest_float("w_memory", 0.0, 1.0)
        trial.suggest_float("balance", 0.0, 1.0)
        if len(self.tenants) <= MAX_TENANT_KNOBS:
            for i in range(len(self.tenants)):
                trial.suggest_float(f"place_{i}", 0.0, 1.0)
        placement = self.placement(trial.params)
        if placement is None:
            raise optuna.TrialPruned("no device fits a unit under these placement knobs")
        trial.suggest_int("streams", 1, stream_limit(self.table, config))
        for name, low, high in (("w_bottom", 0.0, 1.0), ("w_work", -0.5, 0.5), ("w_alternate", 0.0, 1.0),
                                ("w_chain", 0.0, 2.0), ("noise", 0.0, 1.0)):
            trial.suggest_float(name, low, high)
        trial.suggest_int("noise_seed", 0, 2**16)
        if math.isfinite(config.threshold):
            trial.suggest_float("guard", 1.0, config.threshold)
        knobs = knobs_from_params(trial.params, len(self.table.tenants), config.threshold)
        return self.candidate("optuna-tpe", placement, knobs)

    def replay(self, params: Mapping[str, Any], number: int) -> DeviceCandidate | None:
        """The candidate of a finished trial's parameters."""
        placement = self.placement(params)
        if placement is None:
            return None
        c = self.candidate("optuna-tpe", placement, knobs_from_params(params, len(self.table.tenants),
                                                                      self.config.threshold))
        return replace(c, name=f"trial {number}", schedule=c.schedule.with_method("optuna-tpe", trial=number))


def _first_feasible(search_of: Callable[[tuple[int, ...]], _Search | ConfigError], counts: Sequence[int],
                    tries: int = 64) -> _Search:
    """The search of the first choice of splits (in order: smallest worlds first) that can fit
    the caps at all; the reason of the first choice when none of the first ``tries`` can."""
    reason = None
    for picked in itertools.islice(itertools.product(*(range(n) for n in counts)), tries):
        search = search_of(picked)
        if not isinstance(search, ConfigError):
            return search
        reason = reason or search
    assert reason is not None
    raise reason


def _rank(c: DeviceCandidate) -> tuple[float, float, float]:
    return c.excess, c.slo_excess, c.sim.makespan


def _device_spans(schedule: Schedule, sim: SimResult) -> list[float]:
    spans = []
    for device in schedule.devices:
        tasks = [t for stream in device for t in stream]
        spans.append(max(sim.end[t] for t in tasks) - min(sim.start[t] for t in tasks) if tasks else 0.0)
    return spans


def _caps(caps: Sequence[int], names: Sequence[str]) -> str:
    return ", ".join(f"{n} {format_bytes(c)}" for n, c in zip(names, caps, strict=True))
