"""Serving under load: open-loop arrivals against cosched's server and three baselines.

``python -m benchmarks.serve --mix vision --rate R [R ...] --duration S --device cpu|cuda``

What it measures, in order:

1. **SLOs.** Each tenant's solo latency: its own graph alone, cosched's sequential executor,
   every core, the median of ``--solo-iters`` runs, in a child process per tenant. A tenant's
   SLO is ``--slo-factor`` (default 5) times that; the report lists both.
2. **The plan.** The mix compiled once by ``cosched.compile(files, slo_ms=..., serve=True)``
   (``best_effort``: a round of every tenant at once may not meet every SLO, serving rarely
   runs one) and saved; the ``cosched`` system's child loads it. A cosched without the
   ``serve`` option compiles without it, and the report says so.
3. **Arrivals.** ``R`` is the offered load of the whole mix (requests/s), split over the tenants
   by ``--weights`` (default equal). ``poisson``: per tenant a Poisson process (exponential
   gaps). ``bursty``: per tenant an on/off Markov-modulated Poisson process of the same mean
   rate: ON and OFF periods exponentially long, ON on average ``--burst-on-s`` (default 0.5 s),
   OFF ``(F - 1)`` times as long, Poisson at ``F x`` the mean rate while ON and silent while
   OFF, ``F = --burst-factor`` (default 4); it starts in ON with probability ``1 / F`` (the
   stationary share). The whole schedule is drawn before the run from a seeded numpy
   Generator (per tenant its own stream of ``(seed, repeat, tenant index)``) and is the same
   for every system. Each tenant's requests cycle through ``--pool`` distinct random inputs.
4. **Runs.** Each (system, rate, repeat) runs alone in a fresh child process, the systems'
   order rotated by one each repeat. The child builds the system, warms it up (``--warmup``
   requests per tenant, untimed), then a generator thread sleeps until each arrival time and
   submits, whatever the system's backlog (open loop), waits for every future (at most
   ``--drain-timeout`` s after the last arrival, else the run fails naming the system), checks
   every response against the reference output of its own input, and writes one record per
   request. A request's latency runs from its *scheduled* arrival to its completion, so a
   late submission counts against the system (no coordinated omission).
5. **Summary.** Per system, rate and tenant, over the records of every repeat: p50/p99 latency
   of completed requests, SLO attainment (requests completed correctly within their SLO over
   all requests: a rejected, failed or wrong response is a miss) and achieved throughput
   (completed / duration, per repeat, averaged). *Max sustained load*: the highest offered rate
   of the sweep up to which, at every rate, at least 99% of all the mix's requests met their SLO.

Writes ``--out`` (``result.json``, ``report.md``) and the load-latency curve (``--plot``,
default ``OUT/load-latency.png``): the worst tenant's p99 over its SLO, and SLO attainment,
against offered load, a line per system (:mod:`benchmarks.serve_report`). Systems and their
baselines: :mod:`benchmarks.serve_systems`.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.serve_report import plot, report_lines
from benchmarks.serve_systems import SYSTEMS, available, cores, run_child, solo_child
from cosched.errors import ConfigError, RuntimeFailure

__all__ = ["ARRIVALS", "Arrival", "Burst", "main", "max_sustained", "measure", "schedule", "summarise_run",
           "tenant_rates"]

ARRIVALS = ("poisson", "bursty")
SUSTAINED = 0.99
"""The share of a mix's requests that must meet their SLO for a load to count as sustained."""

CHILD_SLACK_S = 600.0
"""A child's start-up and warm-up budget on top of its schedule and drain (its process limit)."""


# ------------------------------------------------------------------------------ arrivals
@dataclasses.dataclass(frozen=True)
class Arrival:
    """One request of the schedule: when (s from the start), whose, and the tenant's how-many-th."""

    time_s: float
    tenant: str
    index: int


@dataclasses.dataclass(frozen=True)
class Burst:
    """The on/off modulation of bursty arrivals: Poisson at ``factor`` x the mean rate while ON,
    silent while OFF; ON lasts ``on_s`` on average, OFF ``on_s * (factor - 1)``, both
    exponentially distributed, so ON holds ``1 / factor`` of the time and the mean rate is kept."""

    factor: float = 4.0
    on_s: float = 0.5

    def __post_init__(self) -> None:
        if not (self.factor > 1 and self.on_s > 0):
            raise ConfigError(f"bursty arrivals need factor > 1 and on_s > 0, got factor={self.factor!r}, "
                              f"on_s={self.on_s!r}")

    @property
    def off_s(self) -> float:
        return self.on_s * (self.factor - 1)


def tenant_rates(total: float, tenants: Sequence[str], weights: Mapping[str, float]) -> dict[str, float]:
    """``total`` requests/s split over ``tenants`` in proportion to ``weights`` (missing: 1)."""
    unknown = sorted(set(weights) - set(tenants))
    if unknown:
        raise ConfigError(f"--weights name unknown tenant(s) {unknown}; the mix's tenants are {list(tenants)}")
    w = {t: float(weights.get(t, 1.0)) for t in tenants}
    bad = {t: v for t, v in w.items() if not (v >= 0 and np.isfinite(v))}
    if bad or not sum(w.values()) > 0:
        raise ConfigError(f"--weights must be finite, >= 0 and not all 0, got {w}")
    return {t: total * v / sum(w.values()) for t, v in w.items()}


def poisson_times(rate: float, start: float, end: float, rng: np.random.Generator) -> np.ndarray:
    """Arrival times of a Poisson process of ``rate``/s in ``[start, end)``."""
    if rate <= 0 or end <= start:
        return np.empty(0)
    times: list[np.ndarray] = []
    now = start
    while now < end:  # draw gaps in blocks of about the expected count until past the end
        gaps = rng.exponential(1.0 / rate, size=int(rate * (end - now)) + 16)
        block = now + np.cumsum(gaps)
        times.append(block[block < end])
        now = float(block[-1])
    return np.concatenate(times)


def bursty_times(rate: float, duration: float, rng: np.random.Generator, burst: Burst) -> np.ndarray:
    """Arrival times of the on/off Markov-modulated Poisson process of mean ``rate`` (:class:`Burst`)."""
    times: list[np.ndarray] = []
    now, on = 0.0, bool(rng.random() < 1.0 / burst.factor)  # the stationary share of ON
    while now < duration:
        length = float(rng.exponential(burst.on_s if on else burst.off_s))
        if on:
            times.append(poisson_times(rate * burst.factor, now, min(now + length, duration), rng))
        now, on = now + length, not on
    return np.concatenate(times) if times else np.empty(0)


def schedule(rates: Mapping[str, float], duration: float, kind: str = "poisson", *, seed: int = 0, repeat: int = 0,
             burst: Burst | None = None) -> list[Arrival]:
    """Every arrival of a run, by time: per tenant its own process (``kind``) and its own random
    stream, seeded by ``(seed, repeat, tenant's index)``, so a tenant's arrivals do not depend
    on the others' rates."""
    if kind not in ARRIVALS:
        raise ConfigError(f"unknown arrivals {kind!r}; expected one of {', '.join(ARRIVALS)}")
    out = []
    for i, (tenant, rate) in enumerate(rates.items()):
        rng = np.random.default_rng([seed, repeat, i])
        times = (poisson_times(rate, 0.0, duration, rng) if kind == "poisson"
                 else bursty_times(rate, duration, rng, burst or Burst()))
        out += [Arrival(float(t), tenant, k) for k, t in enumerate(times)]
    return sorted(out, key=lambda a: (a.time_s, a.tenant))


# ------------------------------------------------------------------------------ summary
def summarise_run(records: Sequence[Mapping[str, Any]], tenants: Sequence[str], slo_ms: Mapping[str, float],
                  duration_s: float) -> dict[str, dict[str, Any]]:
    """Per tenant and for ``"all"``: requests, completed (correct), p50/p99 latency (ms, of the
    completed; None when none), SLO attainment (completed within the tenant's SLO over all
    requests: a rejected, failed or wrong request is a miss), throughput (completed /
    ``duration_s``) and the p99 of how late the generator submitted (``submit - arrival``; it
    counts in the latency, so a large one says the load generator, not only the system, was
    slow). A record is ``{tenant, arrival, submit, done, ok}`` (seconds)."""
    out = {}
    for who in [*tenants, "all"]:
        mine = [r for r in records if who in ("all", r["tenant"])]
        done = [r for r in mine if r["ok"]]
        latency = np.array([(r["done"] - r["arrival"]) * 1e3 for r in done])
        met = sum(1 for r, ms in zip(done, latency, strict=True) if ms <= slo_ms[r["tenant"]])
        lag = [(r["submit"] - r["arrival"]) * 1e3 for r in mine if r.get("submit") is not None]
        out[who] = {"requests": len(mine), "completed": len(done), "failed": len(mine) - len(done),
                    "p50_ms": float(np.percentile(latency, 50)) if done else None,
                    "p99_ms": float(np.percentile(latency, 99)) if done else None,
                    "attainment": met / len(mine) if mine else 1.0,
                    "throughput_rps": len(done) / duration_s,
                    "submit_lag_p99_ms": float(np.percentile(lag, 99)) if lag else None}
    return out


def max_sustained(attainment: Mapping[float, float], target: float = SUSTAINED) -> float | None:
    """The highest offered rate up to which every rate of the sweep has attainment of at
    least ``target`` (a pass above a failing rate is luck, not capacity); None when the
    lowest rate fails."""
    best = None
    for rate in sorted(attainment):
        if attainment[rate] < target:
            break
        best = rate
    return best


# ------------------------------------------------------------------------------ preparing
def _prepare(work: Path, args: argparse.Namespace, notes: list[str]) -> dict[str, Any]:
    """Export the mix, measure solo latencies (SLOs), compile and save the plan, write the
    input pools and their reference outputs; returns what is written to ``meta.json``."""
    import cosched
    from benchmarks.mixes import get_mix
    from cosched.options import CompileOptions

    mix = get_mix(args.mix)
    models = {t: str(p) for t, p in zip(mix.models, mix.export(), strict=True)}
    provider = args.provider if args.provider != "auto" else ("ort" if args.device == "cpu" else "torch")
    meta: dict[str, Any] = {"mix": mix.name, "tenants": list(models), "models": models, "device": args.device,
                            "provider": provider, "pool": args.pool, "warmup": args.warmup,
                            "drain_timeout_s": args.drain_timeout, "solo_iters": args.solo_iters}
    _write_meta(work, meta)
    solo = {t: _solo(work, t) for t in models}
    meta["solo_ms"] = solo
    meta["slo_ms"] = {t: args.slo_factor * ms for t, ms in solo.items()}
    options: dict[str, Any] = {"names": list(models), "device": args.device, "slo_ms": meta["slo_ms"],
                               "best_effort": True, "trials": args.trials, "cost_model": args.cost_model,
                               "seed": args.seed, "provider": provider, "progress": False}
    if "serve" in {f.name for f in dataclasses.fields(CompileOptions)}:
        options["serve"] = True
    else:
        notes.append("cosched.compile() has no 'serve' option here: the plan was compiled without serve=True "
                     "(no plans for subsets of the tenants).")
    compiled = cosched.compile(list(models.values()), **options)
    compiled.save(work / "plan")
    meta["compile"] = {k: v for k, v in options.items() if k not in ("names", "progress")}
    pools = [compiled.inputs(seed=args.seed * 1000 + k) for k in range(args.pool)]
    references = [compiled.reference.run(feed) for feed in pools]  # op by op, on the plan's device
    for name, values in (("inputs", pools), ("reference", references)):
        (work / name).mkdir()
        for t in models:
            arrays: dict[str, Any] = {f"{k}::{n}": v for k, vals in enumerate(values) for n, v in vals[t].items()}
            np.savez(work / name / f"{t}.npz", **arrays)
    compiled.close()
    _write_meta(work, meta)
    return meta


def _write_meta(work: Path, meta: Mapping[str, Any]) -> None:
    (work / "meta.json").write_text(json.dumps(meta, indent=2, default=str))


def _solo(work: Path, tenant: str) -> float:
    out = work / f"solo-{tenant}.json"
    _child(["--child", "solo", "--tenant", tenant, "--work", str(work), "--out", str(out)], f"solo {tenant}",
           limit_s=CHILD_SLACK_S)
    return float(json.loads(out.read_text())["median_ms"])


STALLED_EXIT = 3
"""A run child's exit code when requests were still not done after the drain timeout: its
records (the stalled requests counted as misses) are written, and the run is a result."""


def _child(args: list[str], what: str, *, limit_s: float) -> None:
    cmd = [sys.executable, "-m", "benchmarks.serve", *args]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=limit_s)
    except subprocess.TimeoutExpired:
        raise RuntimeFailure(f"{what}: its process ran past {limit_s:.0f} s and was stopped") from None
    if done.returncode == STALLED_EXIT and "--schedule" in args:  # overload: a result, not a failure
        print(f"  {what}: {done.stderr.strip().splitlines()[-1]}", file=sys.stderr, flush=True)
        return
    if done.returncode != 0:
        raise RuntimeFailure(f"{what} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")


# ------------------------------------------------------------------------------ measuring
def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """The whole benchmark in ``work``: prepare, run every (system, rate, repeat) alone, summarise."""
    notes: list[str] = []
    systems = []
    for name in args.systems:
        reason = available(name, args.device)
        if reason is None:
            systems.append(name)
        else:
            notes.append(reason)
    if not systems:
        raise ConfigError(f"none of the systems {args.systems} can run here: {'; '.join(notes)}")
    meta = _prepare(work, args, notes)
    burst = Burst(args.burst_factor, args.burst_on_s)
    records: dict[str, dict[float, list[list[dict[str, Any]]]]] = {s: {r: [] for r in args.rate} for s in systems}
    stats: dict[str, dict[str, list[Any]]] = {s: {f"{r:g}": [] for r in args.rate} for s in systems}
    for rep in range(args.repeats):
        order = systems[rep % len(systems):] + systems[: rep % len(systems)]
        for rate in args.rate:
            rates = tenant_rates(rate, meta["tenants"], args.weights)
            arrivals = schedule(rates, args.duration, args.arrivals, seed=args.seed, repeat=rep, burst=burst)
            plan_file = work / f"schedule-{rate:g}-{rep}.json"
            plan_file.write_text(json.dumps([[a.time_s, a.tenant, a.index] for a in arrivals]))
            for system in order:
                out = work / f"records-{system}-{rate:g}-{rep}.json"
                _child(["--child", system, "--work", str(work), "--schedule", str(plan_file), "--out", str(out)],
                       f"system {system} at {rate:g} req/s (repeat {rep})",
                       limit_s=args.duration + args.drain_timeout + CHILD_SLACK_S)
                run = json.loads(out.read_text())
                records[system][rate].append(run["records"])
                stats[system][f"{rate:g}"].append(run["stats"])
                if args.progress:
                    ok = sum(r["ok"] for r in run["records"])
                    print(f"  repeat {rep} {system:10s} {rate:8g} req/s: {ok}/{len(run['records'])} ok",
                          file=sys.stderr, flush=True)
    results = {s: {f"{r:g}": summarise_run([x for rep in runs for x in rep], meta["tenants"], meta["slo_ms"],
                                           args.duration * len(runs))
                   for r, runs in by_rate.items()} for s, by_rate in records.items()}
    sustained = {s: max_sustained({float(r): v["all"]["attainment"] for r, v in by_rate.items()})
                 for s, by_rate in results.items()}
    return {"meta": meta, "notes": notes, "systems": systems, "rates": list(args.rate), "results": results,
            "max_sustained_rps": sustained, "burst": dataclasses.asdict(burst) if args.arrivals == "bursty" else None,
            "system_stats": {s: by_rate for s, by_rate in stats.items() if any(any(v) for v in by_rate.values())},
            "records": {s: {f"{r:g}": runs for r, runs in by_rate.items()} for s, by_rate in records.items()}
            if args.keep_records else None}


# ------------------------------------------------------------------------------ reporting
# ------------------------------------------------------------------------------ the CLI
def _weights(text: str) -> dict[str, float]:
    out = {}
    for item in filter(None, text.split(",")):
        tenant, sep, value = item.partition("=")
        try:
            out[tenant.strip()] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--weights: {item!r} is not tenant=number") from None
        if not sep:
            raise argparse.ArgumentTypeError(f"--weights: {item!r} is not tenant=number")
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serve", description=(__doc__ or "").splitlines()[0],
                                     epilog="See the module docstring (benchmarks/serve.py).")
    parser.add_argument("--mix", default="vision", help="tenant mix of benchmarks.mixes (default vision; tiny)")
    parser.add_argument("--rate", type=float, nargs="+", default=[10.0],
                        help="offered loads of the sweep, requests/s of the whole mix")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of arrivals per run (default 30)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    parser.add_argument("--arrivals", choices=ARRIVALS, default="poisson")
    parser.add_argument("--weights", type=_weights, default={}, help="per-tenant rate weights, t=w,... (default equal)")
    parser.add_argument("--burst-factor", type=float, default=4.0, help="bursty: ON rate / mean rate (default 4)")
    parser.add_argument("--burst-on-s", type=float, default=0.5, help="bursty: mean ON period, s (default 0.5)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--slo-factor", type=float, default=5.0, help="SLO = factor x solo latency (default 5)")
    parser.add_argument("--pool", type=int, default=8, help="distinct inputs per tenant, cycled (default 8)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed requests per tenant first (default 3)")
    parser.add_argument("--solo-iters", type=int, default=20, help="timed solo runs per tenant (default 20)")
    parser.add_argument("--drain-timeout", type=float, default=120.0,
                        help="longest wait for the last responses after the last arrival, s (default 120)")
    parser.add_argument("--trials", type=int, default=40, help="search trials of the cosched plan (default 40)")
    parser.add_argument("--cost-model", default="auto")
    parser.add_argument("--provider", choices=("auto", "ort", "torch"), default="auto")
    parser.add_argument("--out", type=Path, default=Path("serve-results"), help="report.md, result.json (directory)")
    parser.add_argument("--plot", type=Path, help="the load-latency PNG (default OUT/load-latency.png)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON, not the markdown report")
    parser.add_argument("--keep-records", action="store_true", help="keep every request's record in result.json")
    parser.add_argument("--quiet", dest="progress", action="store_false", help="no progress lines on stderr")
    for hidden in ("--child", "--work", "--schedule", "--tenant"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    return parser


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    positive = {"--rate": min(args.rate), "--duration": args.duration, "--slo-factor": args.slo_factor,
                "--burst-on-s": args.burst_on_s, "--drain-timeout": args.drain_timeout}
    for flag, value in positive.items():
        if not value > 0:
            parser.error(f"{flag} must be > 0, got {value:g}")
    for flag, count in (("--repeats", args.repeats), ("--pool", args.pool), ("--solo-iters", args.solo_iters)):
        if count < 1:
            parser.error(f"{flag} must be >= 1, got {count}")
    if args.burst_factor <= 1:
        parser.error(f"--burst-factor must be > 1 (ON rate over mean rate), got {args.burst_factor:g}")
    if args.warmup < 0:
        parser.error(f"--warmup must be >= 0, got {args.warmup}")
    args.rate = sorted(set(args.rate))
    labels = [f"{r:g}" for r in args.rate]  # how results and files name a rate
    if len(set(labels)) < len(labels):
        parser.error(f"--rate values must differ in their first 6 significant digits, got {args.rate}")
    args.systems = list(dict.fromkeys(args.systems))


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.child:
        work, out = Path(args.work), Path(args.out)
        if args.child == "solo":
            solo_child(work, args.tenant, out)
            return 0
        return run_child(args.child, work, Path(args.schedule), out)
    _check(parser, args)
    from benchmarks.mixes import get_mix

    get_mix(args.mix)  # an unknown mix fails before any work
    with tempfile.TemporaryDirectory(prefix="cosched-servebench-") as tmp:
        result = measure(args, Path(tmp))
    result = {"command": "python -m benchmarks.serve " + " ".join(sys.argv[1:] if argv is None else argv),
              "machine": f"{_cpu_model()}, {cores()} cores" + (f", {_gpu()}" if args.device == "cuda" else ""),
              "date": datetime.date.today().isoformat(), "arrivals": args.arrivals, "duration_s": args.duration,
              "repeats": args.repeats, "seed": args.seed, "slo_factor": args.slo_factor,
              "weights": args.weights, "loadavg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
              **result}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "result.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    lines = report_lines(result)
    (args.out / "report.md").write_text("\n".join(lines) + "\n")
    png = plot(result, args.plot or args.out / "load-latency.png")
    print(json.dumps(result, indent=2, default=str) if args.json else "\n".join([*lines, "", f"Plot: {png}"]))
    return 0


def _cpu_model() -> str:
    from benchmarks.run import _cpu_model as model

    return model()


def _gpu() -> str:
    import torch

    return torch.cuda.get_device_name(0)


if __name__ == "__main__":
    sys.exit(main())
