"""Multi-device plans on two CPU ranks against one process, each runner timed alone.

    python -m benchmarks.distributed [--mix vision|mixed|tiny] [--size full|tiny] \\
        [--repeats 3] [--iters 10] [--warmup 3] [--trials 40] [--cost-model auto|roofline|DIR] \\
        [--comm-model auto|FILE] [--cases mix,split] [--out FILE.json]

Two cases, each compiled once into a work directory:

- ``mix``: the tenants of ``--mix`` (:mod:`benchmarks.mixes`, at ``--size``) placed whole on
  ``cpu:0`` and ``cpu:1`` by ``cosched.compile(..., devices=["cpu:0", "cpu:1"])``;
- ``split``: bert (at ``--size``) split tensor-parallel over the two ranks, asked of
  ``cosched.compile(..., splits={"bert": "tensor"})`` (bert fits one rank whole, so without
  the option it would be placed, not split).

Runners, with the protocol of :mod:`cosched.isolated` (each alone in a fresh process, the
order rotated across repeats; every child with ``MALLOC_TOP_PAD_``):

- ``ranks``: the multi-device plan through :func:`cosched.runtime.launch.launch` in a process
  that does nothing else: 2 ranks, each pinned to its share of the cores; its time is rank
  0's median round (barrier to barrier);
- ``one-process``: a one-device plan of the same models compiled for this machine (every
  core), run by :mod:`cosched.isolated`'s ``plan`` runner;
- ``sequential``: that plan's sequential baseline, :mod:`cosched.isolated`'s ``sequential``.

Both plans are compiled with one ``--provider`` (default ``torch``: traced torch tasks;
``auto`` gives the CPU default, onnxruntime sessions, which the ranks run as well), so the
ratios measure distribution, not the provider. Reported per case: ranks / one-process and ranks /
sequential (ratios of medians), the communication share of a round and each rank's
``comm_ms``, predicted against measured ms, each rank's resident memory (peak, held, at
start-up) against the plan's accounting, and every runner's outputs against op-by-op
execution of the unsplit models. Writes ``--out`` (JSON) and prints BENCHMARKS.md rows.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cosched.isolated import load_inputs, run_isolated, summarise

__all__ = ["CASES", "RUNNERS", "measure_case", "prepare_mix", "prepare_split", "rows"]

CASES = ("mix", "split")
DEVICES = ("cpu:0", "cpu:1")
#: runner -> its name in :mod:`cosched.isolated` (``ranks`` is this module's own child)
RUNNERS = {"ranks": "ranks", "one-process": "plan", "sequential": "sequential"}
SPLIT_TENANT = "bert"


# ------------------------------------------------------------------------------ preparing
def prepare_mix(work: Path, mix_name: str, size: str, **options: Any) -> dict[str, Any]:
    """Case ``mix``: the mix's tenants placed whole on two CPU ranks, and one device."""
    import dataclasses

    import cosched
    from benchmarks.mixes import get_mix

    mix = dataclasses.replace(get_mix(mix_name), size=size)
    paths = dict(zip(mix.models, mix.export(), strict=True))
    started = time.perf_counter()
    ranks = cosched.compile(list(paths.values()), names=list(paths), devices=list(DEVICES),
                            **_compile_options(options), comm_model=options["comm_model"])
    ranks.save(work / "ranks")
    what = f"{mix.name} mix ({size}) placed whole on {', '.join(DEVICES)} by cosched.compile(devices=...)"
    return _finish(work, "mix", what, paths, mix.inputs(), ranks, time.perf_counter() - started, options)


def prepare_split(work: Path, size: str, **options: Any) -> dict[str, Any]:
    """Case ``split``: bert tensor-parallel over two CPU ranks (``compile(splits=...)``)."""
    import cosched
    from cosched import zoo

    paths = {SPLIT_TENANT: zoo.export(SPLIT_TENANT, size=size)}
    started = time.perf_counter()
    ranks = cosched.compile(list(paths.values()), names=list(paths), devices=list(DEVICES),
                            splits={SPLIT_TENANT: "tensor"}, **_compile_options(options),
                            comm_model=options["comm_model"])
    ranks.save(work / "ranks")
    what = f"{SPLIT_TENANT} ({size}) split tensor-parallel over {', '.join(DEVICES)} (compile splits=)"
    feeds = {SPLIT_TENANT: zoo.example_inputs(SPLIT_TENANT, size, 1)}
    return _finish(work, "split", what, paths, feeds, ranks, time.perf_counter() - started, options)


def _compile_options(options: Mapping[str, Any]) -> dict[str, Any]:
    return {k: options[k] for k in ("trials", "cost_model", "seed", "provider", "progress")}


def _finish(work: Path, case: str, what: str, paths: Mapping[str, Path], feeds: Mapping[str, Mapping[str, Any]],
            ranks: Any, ranks_compile_s: float, options: Mapping[str, Any]) -> dict[str, Any]:
    """The one-device plan of the same models, the inputs and meta.json beside the ranks' plan."""
    import cosched

    one = cosched.compile(list(paths.values()), names=list(paths), device="cpu", **_compile_options(options))
    one.save(work / "plan")
    (work / "inputs").mkdir()
    for tenant, values in feeds.items():
        np.savez(work / "inputs" / f"{tenant}.npz", **values)
    placement = {t: sorted({s.device for s in ranks.plan.streams for k in s.tasks
                            if ranks.plan.task_spec(k).tenant == t}) for t in paths}
    meta = {
        "case": case, "what": what, "models": {t: str(p) for t, p in paths.items()},
        "splits": [dict(s) for s in ranks.plan.splits],
        "placement": placement, "cost_model": one.cost_model, "provider": one.plan.tasks[0].provider,
        "compile_s": {"ranks": ranks_compile_s, "one_process": one.compile_s},
        "tasks": {"ranks": len(ranks.plan.tasks), "one_process": len(one.plan.tasks)},
        "streams": {"ranks": len(ranks.plan.streams), "one_process": len(one.plan.streams)},
        "predicted_ms": {"ranks": ranks.plan.predicted_ms.get("plan"), "one-process": one.plan.predicted_ms.get("plan"),
                         "sequential": one.plan.predicted_ms.get("sequential")},
    }
    (work / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
    one.close()
    return meta


# ------------------------------------------------------------------------------ measuring
def measure_case(work: Path, meta: Mapping[str, Any], *, repeats: int, iters: int, warmup: int) -> dict[str, Any]:
    """Time the three runners of one prepared case and summarise them (see the module docstring)."""
    from benchmarks.isolated import check_outputs

    times = run_isolated(work, list(RUNNERS.values()), repeats=repeats, iters=iters, warmup=warmup,
                         children={"ranks": "benchmarks.distributed"})
    summary = summarise(times)
    runners = {shown: summary[name] for shown, name in RUNNERS.items()}
    reports = [json.loads((work / f"times-ranks-{rep}.json").read_text())["report"] for rep in range(repeats)]
    ranks_ms = runners["ranks"]["median_ms"]
    checks = check_outputs(work, list(RUNNERS.values()))
    return {
        **meta,
        "runners": runners,
        "ratios": {"ranks_over_one_process": ranks_ms / runners["one-process"]["median_ms"],
                   "ranks_over_sequential": ranks_ms / runners["sequential"]["median_ms"]},
        "comm_share": statistics.median(r["comm_share"] for r in reports),
        "fidelity": {name: {"predicted_ms": pred, "measured_ms": runners[name]["median_ms"],
                            "predicted_over_measured": pred / runners[name]["median_ms"]}
                     for name, pred in meta["predicted_ms"].items() if pred},
        "ranks": _rank_memory(reports),
        "outputs": {shown: checks[name] for shown, name in RUNNERS.items()},
        "times_ms": {shown: times[name] for shown, name in RUNNERS.items()},
    }


def _rank_memory(reports: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per rank: the plan's accounting, and the median over repeats of what the rank measured."""
    keys = ("comm_ms", "rss_base_bytes", "rss_peak_bytes", "rss_held_bytes")
    out = []
    for i, first in enumerate(reports[0]["ranks"]):
        entry = {k: first[k] for k in ("rank", "device", "streams", "tasks", "comm_tasks", "weight_bytes",
                                       "peak_activation_bytes", "needed_bytes")}
        entry |= {k: statistics.median(r["ranks"][i][k] for r in reports) for k in keys}
        entry["peak_over_needed"] = (entry["rss_peak_bytes"] - entry["rss_base_bytes"]) / entry["needed_bytes"]
        entry["held_over_needed"] = (entry["rss_held_bytes"] - entry["rss_base_bytes"]) / entry["needed_bytes"]
        out.append(entry)
    return out


def child(work: Path, iters: int, warmup: int, out: Path, save_outputs: bool, timeout_s: float) -> None:
    """The ``ranks`` runner's process: launch the ranks, write rank 0's report; nothing else."""
    from cosched.runtime.launch import launch

    feeds = load_inputs(work)
    result = launch(work / "ranks", inputs=feeds, args=["--iters", str(iters), "--warmup", str(warmup)],
                    timeout_s=timeout_s)
    report = result["report"]
    out.write_text(json.dumps({"runner": "ranks", "times_ms": [report["median_ms"]["plan"]], "report": report},
                              default=_plain))
    if save_outputs:
        np.savez(work / "outputs-ranks.npz",
                 **{f"{t}::{k}": v for t, outs in result["outputs"].items() for k, v in outs.items()})
    sys.stdout.flush()
    os._exit(0)


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} in the ranks' report is not JSON")


# ------------------------------------------------------------------------------ reporting
def rows(result: Mapping[str, Any]) -> list[str]:
    """The BENCHMARKS.md section of a result: a heading, the command, machine and date, the tables."""
    lines = [f"### Multi-device plans on two CPU ranks against one process ({result['size']} models)", "",
             f"Command: `{result['command']}`; machine: {result['machine']}; date {result['date']}; "
             f"{result['repeats']} repeats x {result['iters']} runs ({result['warmup']} warm-up), each runner alone "
             "in a fresh process, order rotated.", "",
             "| case | ranks / one-process | ranks / sequential | spread (ranks, one-process, sequential) "
             "| comm share | predicted / measured (ranks, one-process, sequential) | outputs agree |",
             "|---|---|---|---|---|---|---|"]
    for name, case in result["cases"].items():
        r, fid = case["runners"], case["fidelity"]
        spread = ", ".join(f"{r[n]['spread']:.0%}" for n in RUNNERS)
        pred = ", ".join(f"{fid[n]['predicted_over_measured']:.2f}" if n in fid else "-" for n in RUNNERS)
        agree = "yes" if all(c["agrees"] for c in case["outputs"].values()) else "NO"
        lines.append(f"| {name}: {case['what']} | {case['ratios']['ranks_over_one_process']:.2f}x | "
                     f"{case['ratios']['ranks_over_sequential']:.2f}x | {spread} | {case['comm_share']:.0%} | "
                     f"{pred} | {agree} |")
    lines += ["", "| case | rank | tasks (comm) | comm ms / round | plan's accounting | peak over start-up "
              "| held over start-up | start-up |", "|---|---|---|---|---|---|---|---|"]
    for name, case in result["cases"].items():
        for k in case["ranks"]:
            lines.append(f"| {name} | {k['rank']} ({k['device']}) | {k['tasks']} ({k['comm_tasks']}) | "
                         f"{k['comm_ms']:.3f} | {_mib(k['needed_bytes'])} | "
                         f"{_mib(k['rss_peak_bytes'] - k['rss_base_bytes'])} ({k['peak_over_needed']:.2f}x) | "
                         f"{_mib(k['rss_held_bytes'] - k['rss_base_bytes'])} ({k['held_over_needed']:.2f}x) | "
                         f"{_mib(k['rss_base_bytes'])} |")
    return lines


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.distributed", description=__doc__.splitlines()[0],
                                     epilog="See the module docstring (benchmarks/distributed.py).")
    parser.add_argument("--mix", default="vision", help="the mix of case 'mix' (default vision)")
    parser.add_argument("--size", default="full", choices=("full", "tiny"), help="zoo model size (default full)")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated subset of mix,split")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cost-model", default="auto")
    parser.add_argument("--comm-model", default="auto", help="prices the split's communication (default auto)")
    parser.add_argument("--provider", choices=("torch", "ort", "auto"), default="torch",
                        help="who runs the one-device plan's tasks (default torch, as the ranks do)")
    parser.add_argument("--timeout", type=float, default=300.0, help="the ranks' longest wait for a peer (s)")
    parser.add_argument("--out", type=Path, help="write the result as JSON")
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--save-outputs", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        if args.child != "ranks":
            parser.error(f"--child: this module runs the 'ranks' runner only, not {args.child!r}")
        child(args.work, args.iters, args.warmup, args.out, args.save_outputs, args.timeout)
    cases = [c for c in args.cases.split(",") if c]
    if not cases or set(cases) - set(CASES):
        parser.error(f"--cases must name some of {', '.join(CASES)}, got {args.cases!r}")
    options = {"trials": args.trials, "cost_model": args.cost_model, "comm_model": args.comm_model, "seed": args.seed,
               "provider": args.provider, "progress": False}
    result: dict[str, Any] = {
        "command": "python -m benchmarks.distributed " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": _machine(), "date": datetime.date.today().isoformat(), "repeats": args.repeats,
        "iters": args.iters, "warmup": args.warmup, "size": args.size, "loadavg_1min": [_loadavg()], "cases": {},
    }
    for case in cases:
        with tempfile.TemporaryDirectory(prefix=f"cosched-distbench-{case}-") as tmp:
            work = Path(tmp)
            meta = (prepare_mix(work, args.mix, args.size, **options) if case == "mix"
                    else prepare_split(work, args.size, **options))
            print(f"{case}: {meta['what']}; compiled", file=sys.stderr, flush=True)
            result["cases"][case] = measure_case(work, meta, repeats=args.repeats, iters=args.iters,
                                                 warmup=args.warmup)
    result["loadavg_1min"].append(_loadavg())
    if args.out:
        args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print("\n".join(rows(result)))
    agree = all(c["agrees"] for case in result["cases"].values() for c in case["outputs"].values())
    return 0 if agree else 1


def _machine() -> str:
    from benchmarks.isolated import _machine as machine

    return machine()


def _loadavg() -> float | None:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


if __name__ == "__main__":
    sys.exit(main())
