from __future__ import annotations

import dataclasses

import pytest

from cosched.costmodel.roofline import Demand, RooflineModel, corun_slowdown, demand
from cosched.errors import CostModelError


def test_standalone_is_max_of_compute_and_memory_plus_overhead(make_device):
    dev = make_device(peak_flops=1e9, bandwidth=1e9, launch_overhead_s=1e-6)
    d = demand(flops=2e6, nbytes=1e6, n_ops=3, device=dev)
    assert d.time_s == pytest.approx(2e-3 + 3e-6)
    assert d.compute_share == pytest.approx(2e-3 / (2e-3 + 3e-6))


def test_slowdown_formula():
    compute = Demand(compute_s=1.0, memory_s=0.1, overhead_s=0.0)
    memory = Demand(compute_s=0.1, memory_s=1.0, overhead_s=0.0)
    assert corun_slowdown(compute, []) == 1.0
    assert corun_slowdown(compute, [compute]) == pytest.approx(2.0)
    assert corun_slowdown(compute, [compute, compute]) == pytest.approx(3.0)
    # compute share 1 + 0.1 = 1.1 -> 10 % slower; memory side 0.1 * (0.1 + 1) stays below
    assert corun_slowdown(compute, [memory]) == pytest.approx(1.1)


def test_model_predictions_and_round_trip(make_mlp, device, tmp_path):
    graph = make_mlp((16, 32, 256))
    model = RooflineModel(device)
    small, big = graph.tasks
    assert model.predict_task(graph, big) > model.predict_task(graph, small) > 0
    assert model.predict_slowdown(graph, big, []) == 1.0
    assert model.predict_slowdown(graph, big, [small, small]) >= 1.0
    model.save(tmp_path)
    again = RooflineModel.load(tmp_path)
    assert again.device == device
    assert again.predict_tasks(graph, graph.tasks).tolist() == model.predict_tasks(graph, graph.tasks).tolist()


def test_load_names_the_bad_file(tmp_path):
    (tmp_path / "roofline.json").write_text('{"schema_version": 99}')
    with pytest.raises(CostModelError, match=r"roofline\.json"):
        RooflineModel.load(tmp_path)


def test_one_model_keeps_graphs_and_tasks_apart(make_mlp, device):
    # The model caches each task's demand: a task with the same id in another graph, or a
    # task rebuilt with other ops under the same id, must still be priced from its own costs.
    narrow, wide = make_mlp((16, 32, 256)), make_mlp((16, 512, 256))
    model = RooflineModel(device)
    fresh = [RooflineModel(device).predict_task(g, g.tasks[1]) for g in (narrow, wide)]
    assert [model.predict_task(g, g.tasks[1]) for g in (narrow, wide)] == fresh
    assert fresh[0] != fresh[1]
    first, second = narrow.tasks
    merged = dataclasses.replace(first, ops=first.ops + second.ops)
    assert model.predict_task(narrow, merged) == RooflineModel(device).predict_task(narrow, merged)
    assert model.predict_task(narrow, merged) > model.predict_task(narrow, first)
    expected = RooflineModel(device).predict_slowdown(wide, wide.tasks[1], [wide.tasks[0]])
    assert model.predict_slowdown(wide, wide.tasks[1], [wide.tasks[0]]) == expected
