"""Multi-device plans on torch.distributed: one process per rank, through `cosched run`, the
Python API and torchrun; outputs against single-device sequential execution; faults and bad
input end every rank with one clear error, never a hang."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dist_plans import split_plan

import cosched
from cosched import zoo
from cosched.cli import main
from cosched.codegen.plan import load_plan
from cosched.errors import ConfigError, DeviceError, PlanError, RuntimeFailure
from cosched.execution.bindings import random_inputs
from cosched.execution.compare import compare_outputs
from cosched.ir import load_models
from cosched.runtime import SequentialExecutor
from cosched.runtime.launch import launch

MIX = ["resnet50", "bert", "mobilenet_v2", "dlrm"]
SPLIT = ["bert", "dlrm", "resnet50"]


@pytest.fixture(scope="module")
def split_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bert tensor-parallel, dlrm with row-sharded tables, resnet50 in two pipeline stages,
    mobilenet_v2 whole on one rank: every kind of communication the plans have."""
    return split_plan(tmp_path_factory.mktemp("split") / "plan", MIX, SPLIT)


def unsplit(names: list[str], feed: dict, size: str = "tiny") -> dict:  # type: ignore[type-arg]
    return SequentialExecutor(load_models([zoo.export(n, size=size) for n in names], names=names)).run(feed)


def left_behind(marker: str) -> list[int]:
    """Live processes whose command line holds ``marker`` (a plan directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                state = next((line for line in (entry / "status").read_text().splitlines()
                              if line.startswith("State:")), "")
            except OSError:
                continue
            if marker in cmdline and "zombie" not in state and int(entry.name) != os.getpid():
                found.append(int(entry.name))
    return found


# ------------------------------------------------------------------ outputs
def test_a_placed_mix_compiles_and_runs_through_cosched_run(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    models = [zoo.export(n, size="tiny") for n in MIX]
    names = [arg for n in MIX for arg in ("--name", n)]
    plan_dir = tmp_path / "plan"
    assert main(["-q", "compile", *map(str, models), *names, "-o", str(plan_dir), "--cost-model", "roofline",
                 "--trials", "4", "--devices", "cpu:0,cpu:1"]) == 0
    capsys.readouterr()
    out = tmp_path / "outputs"
    assert main(["run", str(plan_dir), "--iters", "2", "--warmup", "1", "--compare", "sequential", "--json",
                 "--save-outputs", str(out), "--trace", str(tmp_path / "trace.json")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["device"]["ranks"] == 2 and [r["rank"] for r in report["ranks"]] == [0, 1]
    assert report["max_rel_err"] <= 1e-4 and "mismatches" not in report
    assert report["median_ms"]["plan"] > 0 and report["comm_share"] == 0.0  # tenants whole: nothing to send
    assert all(r["rss_peak_bytes"] >= r["rss_held_bytes"] > 0 for r in report["ranks"])
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}.npz" for n in MIX)
    trace = json.loads((tmp_path / "trace.json").read_text())
    assert {e["pid"] for e in trace["traceEvents"] if e["ph"] == "X" and not e["args"].get("predicted")} == {0, 1}


def test_a_rank_with_nothing_to_run_takes_part(tmp_path: Path) -> None:
    plan = cosched.compile([zoo.export("mobilenet_v2", size="tiny")], names=["mobilenet_v2"], cost_model="roofline",
                           trials=2, devices=["cpu:0", "cpu:1"])
    assert {s.device for s in plan.plan.streams} == {0}  # one tenant, whole: rank 1 idles
    plan.save(tmp_path / "plan")
    report = launch(tmp_path / "plan", args=["--iters", "1", "--compare", "sequential"])["report"]
    assert [r["tasks"] for r in report["ranks"]] == [len(plan.plan.tasks), 0] and report["max_rel_err"] <= 1e-4


def test_every_kind_of_split_matches_sequential_execution(split_dir: Path) -> None:
    feed = random_inputs(load_models([zoo.export(n, size="tiny") for n in MIX], names=MIX), seed=7)
    result = launch(split_dir, inputs=feed, args=["--iters", "2", "--warmup", "1", "--compare", "sequential"])
    plan = load_plan(split_dir)
    assert {c.op for c in plan.comms} >= {"transfer", "all_reduce", "all_gather"}
    assert compare_outputs(result["outputs"], unsplit(MIX, feed)).agrees(1e-4)
    report = result["report"]
    assert report["max_rel_err"] <= 1e-4 and report["comm_share"] > 0
    assert [r["comm_tasks"] for r in report["ranks"]] == [
        sum(1 for c in plan.comms for s in plan.streams if s.device == r and c.task in s.tasks) for r in (0, 1)]


def test_torchrun_runs_the_same_plan(split_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "outputs"
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
                           "cosched.runtime.distributed", str(split_dir), "--iters", "1", "--warmup", "0",
                           "--seed", "3", "--save-outputs", str(out), "--json"],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout[done.stdout.index("{"):])
    assert report["device"]["ranks"] == 2
    got = {n: dict(np.load(out / f"{n}.npz")) for n in MIX}
    feed = random_inputs(load_models([zoo.export(n, size="tiny") for n in MIX], names=MIX), seed=3)
    assert compare_outputs(got, unsplit(MIX, feed)).agrees(1e-4)


def test_compiled_plan_run_starts_the_ranks(tmp_path: Path) -> None:
    names = MIX[1:]  # bert fits no device whole under the cap: it is split
    models = [zoo.export(n, size="tiny") for n in names]
    from cosched.search.placement import footprints

    prints = footprints(load_models(models, names=names))
    biggest = max(prints.values(), key=lambda f: f.total_bytes)
    cap = int(max(biggest.total_bytes * 0.8, 0.65 * sum(f.total_bytes for f in prints.values())))
    link = tmp_path / "comm.json"
    from cosched.costmodel.comm import CommModel

    CommModel.from_link("gloo", "test-link", latency_s=50e-6, bandwidth=1e9).save(link)
    plan = cosched.compile(models, names=names, cost_model="roofline", trials=4, devices=["cpu:0", "cpu:1"],
                           memory_cap=cap, comm_model=str(link))
    assert plan.plan.splits and plan.directory is None
    feed = plan.inputs(seed=2)
    try:
        assert compare_outputs(plan.run(feed), unsplit(names, feed)).agrees(1e-4)
        measured = plan.benchmark(feed, iters=2, warmup=0)
        assert measured["median_ms"]["plan"] > 0 and measured["max_rel_err"] <= 1e-4
    finally:
        plan.close()


@pytest.mark.slow
def test_full_size_splits_match_sequential_execution(tmp_path: Path) -> None:
    names = ["bert", "dlrm", "mobilenet_v2"]
    plan_dir = split_plan(tmp_path / "plan", names, ["bert", "dlrm"], size="full")
    feed = random_inputs(load_models([zoo.export(n, size="full") for n in names], names=names), seed=1)
    result = launch(plan_dir, inputs=feed, args=["--iters", "1", "--warmup", "0"])
    assert compare_outputs(result["outputs"], unsplit(names, feed, "full")).agrees(1e-4)


# ------------------------------------------------------------------ faults
def victim(plan_dir: Path) -> int:
    """A task in the middle of rank 1's first stream."""
    stream = next(s for s in load_plan(plan_dir).streams if s.device == 1)
    return stream.tasks[len(stream.tasks) // 2]


@pytest.mark.parametrize(("kind", "said"), [
    ("kill", r"rank 1 \(cpu:1\) was killed by SIGKILL \(last started stream \d+: task {task} "),
    ("raise", r"rank 1: fault injected before task {task}"),
    ("hang", r"rank 0: .*(a peer rank did not answer in time|and gave up).* rank 1 stopped by the launcher "
             r"\(last started stream \d+: task {task} "),
])
def test_a_failing_rank_ends_every_rank_within_the_timeout(split_dir: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch, kind: str,
                                                           said: str) -> None:
    plan_dir = tmp_path / f"plan-{kind}"  # a path of its own: its processes are found by it
    shutil.copytree(split_dir, plan_dir)
    task = victim(plan_dir)
    monkeypatch.setenv("COSCHED_FAULT", f"1:{task}:{kind}")
    timeout = 4.0
    start = time.monotonic()
    with pytest.raises(RuntimeFailure, match=said.format(task=task)):
        launch(plan_dir, args=["--iters", "2", "--warmup", "0"], timeout_s=timeout)
    assert time.monotonic() - start < timeout + 30  # start-up, the timeout, the agent's stop
    assert left_behind(str(plan_dir)) == []


def test_the_cli_exits_non_zero_with_one_line(split_dir: Path, tmp_path: Path) -> None:
    task = victim(split_dir)
    env = {**os.environ, "COSCHED_FAULT": f"1:{task}:raise"}
    done = subprocess.run([sys.executable, "-m", "cosched.cli", "run", str(split_dir), "--iters", "1"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("cosched run: error: the distributed run failed: rank 1")


# ------------------------------------------------------------------ bad input
def test_a_world_size_that_is_not_the_plans_stops_every_rank(split_dir: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "3", "-m",
                           "cosched.runtime.distributed", str(split_dir)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("cosched: error:")]
    assert errors == [f"cosched: error: ranks 0, 1, 2: {split_dir}: the plan runs on 2 devices, but this job has "
                      "world size 3; start it with --nproc-per-node 2"]


def test_a_changed_shard_is_refused_before_any_rank_starts(split_dir: Path, tmp_path: Path) -> None:
    plan_dir = tmp_path / "plan"
    shutil.copytree(split_dir, plan_dir)
    shard = plan_dir / "weights" / "device1.safetensors"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(PlanError, match=r"weight shard .*device1.safetensors of device cpu:1 has sha256"):
        launch(plan_dir)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
                           "cosched.runtime.distributed", str(plan_dir)], capture_output=True, text=True,
                          timeout=120)
    errors = [line for line in done.stderr.splitlines() if line.startswith("cosched: error:")]
    assert done.returncode != 0 and len(errors) == 1 and "ranks 0, 1:" in errors[0] and "sha256" in errors[0]
    shard.unlink()
    with pytest.raises(PlanError, match=r"weight shard of device cpu:1 not found"):
        launch(plan_dir)


def test_a_port_in_use_is_named(split_dir: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError, match=f"port {port} is in use"):
            launch(split_dir, port=port)


def test_a_cuda_plan_needs_its_gpus(tmp_path: Path) -> None:
    import torch

    if torch.cuda.device_count() >= 2:
        pytest.skip("this machine has the GPUs")
    cuda = [{"kind": "cuda", "index": 0, "memory_bytes": 10**9}, {"kind": "cuda", "index": 1, "memory_bytes": 10**9}]
    plan_dir = split_plan(tmp_path / "plan", ["bert", "mobilenet_v2"], ["bert"], devices=cuda)
    with pytest.raises(DeviceError, match=r"runs on cuda:0, cuda:1, but this machine has \d CUDA device"):
        launch(plan_dir)


def test_a_one_device_plan_is_not_for_the_distributed_runtime(tmp_path: Path) -> None:
    plan = cosched.compile([zoo.export("mobilenet_v2", size="tiny")], cost_model="roofline", trials=2)
    plan.save(tmp_path / "plan")
    with pytest.raises(ConfigError, match="a one-device plan runs in this process"):
        launch(tmp_path / "plan")
    done = subprocess.run([sys.executable, "-m", "cosched.runtime.distributed", str(tmp_path / "plan")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "a one-device plan; run it with `cosched run" in done.stderr


def test_bad_fault_specs_and_options_are_named(split_dir: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "cosched.runtime.distributed", str(split_dir), "--timeout", "0"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--timeout must be > 0" in done.stderr
    assert main(["run", str(split_dir), "--cuda-graph"]) == 2
