from __future__ import annotations

import pytest
import torch

from cosched.costmodel.features import task_features, task_signature
from cosched.costmodel.profiler import ProfileConfig, Profiler, plan_groups, strata
from cosched.costmodel.runner import TaskRunner, corun_cpu
from cosched.costmodel.store import ProfileStore, StandaloneRecord
from cosched.errors import ProfileError

TINY = ProfileConfig(budget_s=20, max_groups=4, warmup=1, min_repeats=2, max_repeats=3,
                     corun_min_iters=1, corun_window_s=0.0, quiet=True)


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
        assert all(r.repeats <= 3 for r in again.standalone.values())


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
    assert any("mem" in p for p in pairs) and any(len(g) == 3 for g in groups)
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
