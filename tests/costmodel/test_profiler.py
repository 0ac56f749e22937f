from __future__ import annotations

import itertools
import threading
import time

import pytest
import torch

from cosched.costmodel.features import task_features, task_signature
from cosched.costmodel.profiler import (
    ProfileConfig,
    Profiler,
    plan_groups,
    standalone_threads,
    strata,
)
from cosched.costmodel.runner import TaskRunner, corun_cpu, loop_concurrent, time_standalone
from cosched.costmodel.store import ProfileStore, StandaloneRecord
from cosched.errors import ProfileError, UnsupportedOpError

TINY = ProfileConfig(budget_s=20, max_groups=4, warmup=1, min_repeats=2, max_repeats=3,
                     corun_min_iters=1, corun_window_s=0.0, restandalone_every=0, quiet=True)


def test_runner_computes_the_task(make_mlp):
    graph = make_mlp((4, 3))
    runner = TaskRunner(graph, graph.tasks[0], torch.device("cpu"), {})
    runner()  # runs MatMul then Relu on a random input and the constant weight
    assert set(runner._inputs) == {"a/x", "a/w0"}
    assert runner._inputs["a/w0"].shape == (4, 3)


def test_profile_tiny_graph_measures_each_signature_once(make_mlp, device, tmp_path):
    graph = make_mlp((8, 16, 16, 16))  # layers 1 and 2 share a signature
    with ProfileStore(tmp_path / "p.sqlite") as store:
        data = Profiler(device, TINY).profile([graph], store)
        assert len(data.standalone) == 2
        assert all(r.median_ms > 0 and r.repeats >= 2 for r in data.standalone.values())
        assert 1 <= len(data.groups) <= 4
        assert all(2 <= len(g.signatures) <= 4 for g in data.groups)
        assert all(g.threads == (1, 1) for g in data.groups)
        assert all(min(g.latencies_ms) > 0 for g in data.groups)
        # profiling again appends groups but re-measures no known signature
        again = Profiler(device, TINY).profile([graph], store)
        assert len(again.standalone) == 2 and len(again.groups) > len(data.groups)
        assert {s: r.repeats for s, r in again.standalone.items()} == {
            s: r.repeats for s, r in data.standalone.items()}


def test_standalone_is_measured_again_between_groups(make_mlp, device, tmp_path):
    graph = make_mlp((8, 16, 24))
    config = ProfileConfig(**{**TINY.__dict__, "restandalone_every": 2, "max_groups": 8})
    with ProfileStore(tmp_path / "p.sqlite") as store:
        data = Profiler(device, config).profile([graph], store)
        rows = store._rows("SELECT signature FROM standalone")
    assert len(data.groups) == 8
    assert len(rows) == 2 + 8 // 2  # 2 signatures, then one again after every 2nd group
    assert {r[0] for r in rows} == set(data.standalone)


def test_graph_without_tasks_is_named(make_mlp, device, tmp_path):
    graph = make_mlp((8, 16)).replace(tasks=())
    with ProfileStore(tmp_path / "p.sqlite") as store, pytest.raises(ProfileError, match="'a'"):
        Profiler(device, TINY).profile([graph], store)


def test_groups_cover_every_strata_mix(make_mlp, make_device):
    device = make_device(peak_flops=1e9, bandwidth=1e12)  # MatMul layers are compute-bound
    records = {}
    for i, width in enumerate((8, 64, 512)):
        graph = make_mlp((width, width))
        sig = task_signature(graph, graph.tasks[0])
        records[sig] = StandaloneRecord(sig, task_features(graph, graph.tasks[0]), float(10**i))
    memory = dict(next(iter(records.values())).features, flops=0.0)
    records["mem"] = StandaloneRecord("mem", memory, 5.0)
    by = strata(records, device)
    assert by[("memory", 1)] == ["mem"]
    compute = {s: size for (bound, size), sigs in by.items() if bound == "compute" for s in sigs}
    by_latency = sorted(compute, key=lambda s: records[s].median_ms)
    assert [compute[s] for s in by_latency] == sorted(compute.values()) and compute[by_latency[0]] == 0
    groups = [g for _, g in zip(range(200), plan_groups(records, device, (2, 3), seed=0), strict=False)]
    pairs = [g for g in groups if len(g) == 2]
    assert any("mem" in p for p in pairs)
    assert len(pairs) == len(groups) // 2  # sizes take turns: as many pairs as triples
    # every pair of strata appears among the first round of pairs
    kinds = {frozenset((a, b)) for a in by for b in by}
    seen = {frozenset(next(k for k, v in by.items() if s in v) for s in p) for p in pairs}
    assert seen == kinds


def test_corun_cpu_reports_every_member(make_mlp):
    graph = make_mlp((32, 64, 64))
    runners = [TaskRunner(graph, t, torch.device("cpu"), {}) for t in graph.tasks]
    measure = corun_cpu(runners, threads=1, min_iters=2, window_s=0.0)
    assert len(measure.latencies_ms) == 2 and min(measure.latencies_ms) > 0
    assert measure.makespan_ms > 0


def test_standalone_runs_like_a_corun_member():
    """Both measurements run the task on a worker thread with the member's thread count."""
    seen: list[tuple[int, bool]] = []

    def probe() -> None:
        seen.append((torch.get_num_threads(), threading.current_thread() is threading.main_thread()))

    time_standalone(probe, torch.device("cpu"), min_repeats=3, target_s=0.0, threads=1)
    corun_cpu([probe, lambda: None], threads=1, min_iters=2, window_s=0.0)
    assert seen and set(seen) == {(1, False)}


def test_corun_beside_a_trivial_task_is_near_standalone(make_mlp, make_device):
    """A member co-running with a near-empty task is measured like its standalone run: not
    many times faster (the bug this guards: standalone timed with another thread count or
    another clock than the co-run), and never slower than the group's makespan."""
    heavy = make_mlp((256, 512), batch=16)
    cheap = make_mlp((2, 2))
    run_heavy = TaskRunner(heavy, heavy.tasks[0], torch.device("cpu"), {})
    run_cheap = TaskRunner(cheap, cheap.tasks[0], torch.device("cpu"), {})
    threads = standalone_threads(make_device(cores=2), (2, 3))
    assert threads == make_device(cores=2).threads_per_member(2) == 1
    alone, _spread, n = time_standalone(run_heavy, torch.device("cpu"), min_repeats=20,
                                        target_s=0.05, threads=threads)
    measure = corun_cpu([run_heavy, run_cheap], threads=threads, min_iters=20, window_s=0.05)
    assert n >= 20
    assert alone / 3 < measure.latencies_ms[0] < alone * 20
    assert max(measure.latencies_ms) == measure.makespan_ms


def test_loop_concurrent_keeps_only_overlapping_executions():
    samples = loop_concurrent([lambda: time.sleep(0.004), lambda: None], threads=1,
                              min_iters=3, window_s=0.02)
    assert len(samples[0]) >= 3 and len(samples[1]) >= 3
    # the slow member's executions all ended before the stop: none is cut short or stretched
    assert all(3.5 < ms < 200 for ms in samples[0])


def test_runner_of_an_unsupported_op_names_task_and_op(make_mlp):
    graph = make_mlp((8, 16))
    bad = graph.replace(ops=tuple(op.replace(op_type="FancyOp") if i == 0 else op
                                  for i, op in enumerate(graph.ops)))
    with pytest.raises(UnsupportedOpError, match=r"cannot be profiled.*FancyOp"):
        TaskRunner(bad, bad.tasks[0], torch.device("cpu"), {})


def test_anchored_groups_each_hold_an_anchor(make_mlp, device):
    records = {}
    for width in (8, 16, 32, 64, 128, 256):
        graph = make_mlp((width, width))
        sig = task_signature(graph, graph.tasks[0])
        records[sig] = StandaloneRecord(sig, task_features(graph, graph.tasks[0]), width / 100)
    anchors = sorted(records)[:2]
    groups = list(itertools.islice(plan_groups(records, device, (2, 3, 4), anchors=anchors), 60))
    assert all(g[0] in anchors for g in groups)
    assert [len(g) for g in groups[:6]] == [2, 3, 4, 2, 3, 4]
    assert {g[0] for g in groups} == set(anchors)  # anchors take turns
    assert len({frozenset(g[1:]) for g in groups if len(g) == 2}) > 2  # co-runners vary
    assert list(plan_groups(records, device, (2,), anchors=["not measured"])) == []


def test_runner_on_onnxruntime_keeps_a_session_per_thread_count(make_mlp):
    graph = make_mlp((16, 32))
    runner = TaskRunner(graph, graph.tasks[0], torch.device("cpu"), {}, provider="ort")
    assert runner.provider == "ort" and not runner.traced
    before = torch.get_num_threads()
    try:
        for threads in (1, 2, 1):
            torch.set_num_threads(threads)
            runner()
    finally:
        torch.set_num_threads(before)
    assert sorted(runner._sessions) == [1, 2]


def test_profiler_measures_cpu_tasks_on_onnxruntime_by_default(tmp_path):
    from cosched.costmodel import DeviceSpec
    from cosched.costmodel.profiler import Profiler

    assert Profiler(DeviceSpec.detect("cpu")).provider == "ort"
    assert Profiler(DeviceSpec.detect("cpu"), ProfileConfig(provider="torch")).provider == "torch"
