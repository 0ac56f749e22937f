"""Helpers of the GPU run kit (scripts/gpu/check.sh): zoo exports before the steps, and the
summary after them.

    python scripts/gpu/kit.py export --mix MIX --batch 1 8 --profile-zoo full --out DIR
    python scripts/gpu/kit.py two-rank --device cuda --work WORK --iters 20 --warmup 3
    python scripts/gpu/kit.py summarize --work WORK --out OUT --device cuda --quick 0

``export`` fills the zoo cache with every model the later steps load (the mix at each batch,
the profiled zoo at batch 1) and links the mix's batch-1 files as ``DIR/b1/<tenant>.onnx``,
so ``cosched compile DIR/b1/*.onnx`` names each tenant after its model.

``two-rank`` builds a two-rank plan (:func:`two_rank_plan`: the tiny zoo bert split tensor-parallel
over both devices, dlrm placed on rank 1) and runs it with ``cosched run PLAN --compare
sequential --json`` (NCCL on two GPUs, gloo on two CPU ranks); WORK/two-rank.json gets the
round time, the communication share and the agreement, or why it was skipped (a CUDA machine
with fewer than two GPUs: not a failure).

``summarize`` reads WORK/steps.tsv, the step logs and the harness JSONs, and writes at most
8 files into OUT: summary.md, results.json, profile.tar.gz, trace.json.gz, logs.tar.gz and
the bench JSONs check.sh wrote there. It exits 1 when a step failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gzip
import json
import platform
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

MAX_FILE_BYTES = 15 * 1024 * 1024
TAIL_LINES = 15
ROOT = Path(__file__).resolve().parents[2]
#: The device spec a CUDA plan is costed with when this machine's GPU cannot be measured.
STORED_CUDA_SPEC = ROOT / "benchmarks" / "devices" / "v100-sxm2-16gb.json"
#: Relative error (over the largest |reference|) within which the two-rank outputs agree.
AGREE_REL = 1e-4


def export(mix_name: str, batches: list[int], profile_zoo: str, out: Path) -> None:
    from benchmarks.mixes import get_mix
    from cosched import zoo

    mix = get_mix(mix_name)
    for batch in batches:
        paths = dataclasses.replace(mix, batch=batch).export()
        print(f"export: {mix.name} batch {batch}: {len(paths)} models", flush=True)
        if batch == 1:
            (out / "b1").mkdir(parents=True, exist_ok=True)
            for name, path in zip(mix.models, paths, strict=True):
                link = out / "b1" / f"{name}.onnx"
                link.unlink(missing_ok=True)
                link.symlink_to(path)
    for name in zoo.names():
        zoo.export(name, size=profile_zoo, batch=1)
        print(f"export: zoo {name} ({profile_zoo})", flush=True)


def two_rank_plan(out: Path, kind: str, size: str = "tiny") -> Path:
    """Compile a plan over two devices of ``kind`` ("cpu" or "cuda", indices 0 and 1) into
    ``out``: zoo bert (``size``) split tensor-parallel over both, dlrm placed on rank 1, two
    streams per device. A CUDA plan is costed with this GPU's measured spec, or with
    :data:`STORED_CUDA_SPEC` where it cannot be measured (the plan runs alike)."""
    from cosched import zoo
    from cosched.codegen import emit_python, lower, save_plan
    from cosched.costmodel import DeviceSpec, RooflineModel
    from cosched.errors import DeviceError
    from cosched.ir import analyse, fuse, load_models
    from cosched.ir.sharding import SplitSpec, apply_splits
    from cosched.search import CostTable
    from cosched.search.decoder import DecoderKnobs, decode

    splits = [SplitSpec("tensor", "bert", 2)]
    names = ["bert", "dlrm"]
    graph = analyse(fuse(apply_splits(load_models([zoo.export(n, size=size) for n in names], names=names), splits)))
    try:
        spec = DeviceSpec.detect(kind)
    except DeviceError as exc:
        if kind != "cuda":
            raise
        print(f"two-rank: {exc}; costing with {STORED_CUDA_SPEC.name}", flush=True)
        spec = DeviceSpec.load(STORED_CUDA_SPEC)
    table = CostTable(graph, RooflineModel(spec))
    comm = {t.id: 0.01 for t in graph.tasks if graph.op(t.ops[0]).is_comm}
    device_of = [t.shard if t.shard is not None else 1 for t in graph.tasks]
    schedule, _ = decode(table, DecoderKnobs(streams=2, noise=0.0), device_of=device_of, devices=2, comm_ms=comm)
    plan = lower(graph, schedule, device=spec, devices=[{"kind": kind, "index": 0}, {"kind": kind, "index": 1}],
                 splits=splits)
    save_plan(plan, out, graph=graph, module_source=emit_python(plan))
    return out


def two_rank(device: str, work: Path, iters: int, warmup: int) -> int:
    """The kit's ``two-rank`` step (see the module docstring); its exit code."""
    record = work / "two-rank.json"
    if device == "cuda":
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count < 2:
            why = f"skipped: {count} GPU(s); a two-rank NCCL run needs two"
            record.write_text(json.dumps({"skipped": why}) + "\n")
            print(f"two-rank: {why}", flush=True)
            return 0
    plan = two_rank_plan(work / "two-rank-plan", device)
    print(f"two-rank: built {plan}", flush=True)
    done = subprocess.run([sys.executable, "-m", "cosched.cli", "-q", "run", str(plan), "--iters", str(iters),
                           "--warmup", str(warmup), "--compare", "sequential", "--json"],
                          capture_output=True, text=True)
    print(done.stdout[-4000:] + done.stderr[-4000:], flush=True)
    if done.returncode != 0:
        record.write_text(json.dumps({"failed": done.stderr.strip().splitlines()[-1:]}) + "\n")
        return done.returncode
    report = json.loads(done.stdout)
    result = {"ranks": report["device"]["ranks"], "kind": report["device"]["kind"], "iters": iters,
              "round_ms": report["median_ms"]["plan"], "comm_share": report["comm_share"],
              "max_rel_err": report["max_rel_err"], "agrees": report["max_rel_err"] <= AGREE_REL}
    record.write_text(json.dumps(result) + "\n")
    print(f"two-rank: {json.dumps(result)}", flush=True)
    return 0 if result["agrees"] else 1


def _two_rank_lines(result: dict[str, Any] | None) -> list[str]:
    if result is None:
        return []
    lines = ["", "## Two ranks (bert tensor-split + dlrm, `cosched run PLAN --compare sequential`)", ""]
    if "skipped" in result:
        return [*lines, result["skipped"]]
    if "failed" in result:
        return [*lines, f"failed: {' '.join(result['failed'])}"]
    return [*lines, f"round {result['round_ms']:.3f} ms (median of {result['iters']}, {result['kind']}); "
                    f"communication {100 * result['comm_share']:.0f}% of it (0 on CUDA: calls only enqueue); "
                    f"max relative error {result['max_rel_err']:.3g}: "
                    f"{'agrees' if result['agrees'] else 'DISAGREES'} within {AGREE_REL:g}"]


def _steps(work: Path) -> list[dict[str, Any]]:
    steps = []
    for line in (work / "steps.tsv").read_text().splitlines():
        name, rc, ms, budget = line.split("\t")
        log = work / "logs" / f"{name}.log"
        tail = log.read_text(errors="replace").splitlines()[-TAIL_LINES:] if log.exists() else []
        status = "ok" if rc == "0" else ("timed out" if rc in ("124", "137") else "failed")
        steps.append({"step": name, "status": status, "exit": int(rc), "seconds": int(ms) / 1000,
                      "budget_s": int(budget), "log_tail": tail})
    return steps


def _environment(device: str) -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine(),
                            "date": datetime.date.today().isoformat()}
    try:
        import torch

        info["torch"] = torch.__version__
        if device == "cuda" and torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["cuda"] = torch.version.cuda
    except Exception as exc:  # the summary must be written whatever broke
        info["torch"] = f"not importable: {exc}"
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        if smi.returncode == 0:
            info["nvidia_smi"] = smi.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def _bench_rows(result: dict[str, Any], gpu: bool) -> list[str]:
    """BENCHMARKS.md rows of one harness result: runner, ms (GPU only), ratios, agreement."""
    rows = []
    checks = result.get("outputs", {})
    for name, r in result.get("runners", {}).items():
        ms = f"{r['median_ms']:.3f}" if gpu else "-"
        agree = checks.get(name, {}).get("agrees")
        rows.append(f"| {result.get('mix')} b{result.get('batch')} | {name} | {ms} | {r['spread']:.1%} | "
                    f"{r['sequential_over_runner']:.2f}x | {r['runner_over_plan']:.2f}x | "
                    f"{'yes' if agree else 'NO' if agree is not None else '-'} |")
    return rows


def _archive(out: Path, name: str, paths: list[Path], base: Path) -> None:
    target = out / name
    with tarfile.open(target, "w:gz") as tar:
        for p in paths:
            if p.exists():
                tar.add(p, arcname=str(p.relative_to(base)))
    if target.stat().st_size > MAX_FILE_BYTES:
        target.unlink()
        print(f"summarize: {name} exceeds {MAX_FILE_BYTES} bytes; left out", file=sys.stderr)


def summarize(work: Path, out: Path, device: str, quick: bool) -> int:
    steps = _steps(work)
    env = _environment(device)
    benches = {p.stem: json.loads(p.read_text()) for p in sorted(out.glob("bench-b*.json"))}
    metrics_file = work / "profile" / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else None
    two_file = work / "two-rank.json"
    two = json.loads(two_file.read_text()) if two_file.exists() else None
    results = {"device": device, "quick": quick, "environment": env, "steps": steps,
               "profile_metrics": metrics, "benchmarks": benches, "two_rank": two}
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    if (work / "profile").exists():
        _archive(out, "profile.tar.gz", sorted((work / "profile").iterdir()), work)
    trace = work / "trace.json"
    if trace.exists():
        with trace.open("rb") as src, gzip.open(out / "trace.json.gz", "wb") as dst:
            shutil.copyfileobj(src, dst)
    _archive(out, "logs.tar.gz", sorted((work / "logs").iterdir()), work)

    lines = [f"# cosched GPU kit: {'quick ' if quick else ''}{device}", "",
             "Environment: " + ", ".join(f"{k} {v}" for k, v in env.items()), "",
             "| step | status | seconds | budget |", "|---|---|---|---|"]
    lines += [f"| {s['step']} | {s['status']} | {s['seconds']:.1f} | {s['budget_s']} |" for s in steps]
    if benches:
        lines += ["", "## BENCHMARKS.md rows", "",
                  f"Command: `scripts/gpu/check.sh OUT{' --device cpu --quick' if quick else ''}`; machine: "
                  f"{env.get('gpu', env.get('machine'))}; date {env['date']}. Ratios: sequential / runner and "
                  "runner / plan (medians).", "",
                  "| mix | runner | median ms | spread | seq/runner | runner/plan | outputs agree |",
                  "|---|---|---|---|---|---|---|"]
        for result in benches.values():
            lines += _bench_rows(result, gpu=device == "cuda")
        for result in benches.values():
            for name, why in result.get("skipped", {}).items():
                lines.append(f"\nSkipped {name} ({result.get('mix')} b{result.get('batch')}): {why}")
    lines += _two_rank_lines(two)
    if metrics:
        lines += ["", "## Cost model (held out)", "", "```json", json.dumps(metrics, indent=1)[:4000], "```"]
    for s in steps:
        lines += ["", f"## {s['step']}: {s['status']} ({s['seconds']:.1f} s)", "", "```",
                  *s["log_tail"], "```"]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[: 8 + len(steps)]))
    return 0 if steps and all(s["status"] == "ok" for s in steps) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/gpu/kit.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export")
    e.add_argument("--mix", required=True)
    e.add_argument("--batch", type=int, nargs="+", default=[1])
    e.add_argument("--profile-zoo", default="full", choices=("tiny", "full"))
    e.add_argument("--out", type=Path, required=True)
    t = sub.add_parser("two-rank")
    t.add_argument("--device", default="cuda", choices=("cpu", "cuda"))
    t.add_argument("--work", type=Path, required=True)
    t.add_argument("--iters", type=int, default=20)
    t.add_argument("--warmup", type=int, default=3)
    s = sub.add_parser("summarize")
    s.add_argument("--work", type=Path, required=True)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--device", default="cuda")
    s.add_argument("--quick", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "export":
        export(args.mix, args.batch, args.profile_zoo, args.out)
        return 0
    if args.command == "two-rank":
        return two_rank(args.device, args.work, args.iters, args.warmup)
    return summarize(args.work, args.out, args.device, bool(args.quick))


if __name__ == "__main__":
    sys.exit(main())
