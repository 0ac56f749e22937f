from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from cosched.costmodel import xgb
from cosched.costmodel.evaluate import evaluate, evaluate_on, spearman, split_by_signature
from cosched.costmodel.xgb import XGBoostModel
from cosched.errors import CostModelError


@pytest.fixture(scope="module")
def fitted(make_device, make_profiles):
    device = make_device()
    return XGBoostModel(device, rounds=60).fit(make_profiles(device))


def test_ranks_a_heavier_task_above_a_lighter_one(fitted, make_mlp):
    graph = make_mlp((16, 24, 160))
    light, heavy = graph.tasks
    assert fitted.predict_task(graph, heavy) > fitted.predict_task(graph, light)
    assert fitted.predict_slowdown(graph, heavy, []) == 1.0
    # trained on slowdown 1 + 0.3 (k - 1): more co-runners must predict a larger slowdown
    two = fitted.predict_slowdown(graph, heavy, [light])
    four = fitted.predict_slowdown(graph, heavy, [light, light, light])
    assert 1.0 <= two < four


def test_batched_paths_agree_with_single_calls(fitted, make_mlp):
    graph = make_mlp((16, 24, 160, 40))
    t = graph.tasks
    queries = [(t[0], [t[1]]), (t[1], []), (t[2], [t[0], t[1]]), (t[0], [t[1]])]
    batched = fitted.predict_slowdowns(graph, queries)
    assert batched.tolist() == [fitted.predict_slowdown(graph, a, b) for a, b in queries]
    assert fitted.predict_tasks(graph, t).tolist() == [fitted.predict_task(graph, x) for x in t]


def test_save_load_gives_identical_predictions(fitted, make_mlp, tmp_path):
    graph = make_mlp((16, 24, 160, 40))
    fitted.save(tmp_path)
    meta = json.loads((tmp_path / "metadata.json").read_text())
    assert meta["schema_version"] == xgb.SCHEMA_VERSION and meta["device"]["fingerprint"] == fitted.device.fingerprint
    again = XGBoostModel.load(tmp_path)
    assert again.predict_tasks(graph, graph.tasks).tolist() == fitted.predict_tasks(graph, graph.tasks).tolist()
    q = [(graph.tasks[0], graph.tasks[1:])]
    assert again.predict_slowdowns(graph, q).tolist() == fitted.predict_slowdowns(graph, q).tolist()
    assert not list(tmp_path.glob("*.pkl"))


def test_load_rejects_mismatched_files(fitted, tmp_path):
    fitted.save(tmp_path)
    meta = json.loads((tmp_path / "metadata.json").read_text())
    meta["corun_features"] = meta["corun_features"][:-1]
    (tmp_path / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(CostModelError, match=r"metadata\.json"):
        XGBoostModel.load(tmp_path)
    fitted.save(tmp_path)
    (tmp_path / "slowdown.json").write_text("{broken")
    with pytest.raises(CostModelError, match=r"slowdown\.json"):
        XGBoostModel.load(tmp_path)


def test_unfitted_and_wrong_device(make_device, make_profiles, make_mlp):
    graph = make_mlp((16, 24))
    with pytest.raises(CostModelError, match="not fitted"):
        XGBoostModel(make_device()).predict_task(graph, graph.tasks[0])
    with pytest.raises(CostModelError, match="fedcba"):
        XGBoostModel(make_device(fingerprint="fedcba")).fit(make_profiles(make_device()))


def test_split_holds_out_signatures_everywhere(make_device, make_profiles):
    data = make_profiles(make_device())
    train, test, held = split_by_signature(data, 0.25, seed=1)
    assert held and not held & set(train.standalone)
    assert all(not held & set(g.signatures) for g in train.groups)
    assert all(held & set(g.signatures) for g in test.groups)


def test_evaluate_reports_metrics_that_beat_no_interference(make_device, make_profiles):
    data = make_profiles(make_device())
    metrics = evaluate(data, model=XGBoostModel(data.device, rounds=60))
    for key in ("standalone_mape", "standalone_spearman", "corun_mape", "corun_spearman",
                "roofline_corun_mape", "no_interference_corun_mape", "samples"):
        assert key in metrics
    # the synthetic law slows every member by 30-90 %, which ignoring interference misses
    assert metrics["slowdown_mape"] < metrics["no_interference_slowdown_mape"]


def test_evaluate_on_judges_a_fitted_model_on_every_record_without_fitting(make_device, make_profiles):
    device = make_device()
    model = XGBoostModel(device, rounds=60).fit(make_profiles(device, n=16, seed=0))
    before = model.identity()
    other = make_profiles(device, n=24, seed=1)  # 8 layer shapes the model never saw
    metrics = evaluate_on(model, other)
    assert model.identity() == before
    assert metrics["test_signatures"] == 24 and metrics["samples"] == other.samples
    assert metrics["test_corun_members"] == sum(len(g.signatures) for g in other.groups)
    assert "train_signatures" not in metrics
    assert 0 <= metrics["corun_mape"] < math.inf and -1 <= metrics["standalone_spearman"] <= 1
    assert metrics["slowdown_mape"] < metrics["no_interference_slowdown_mape"]


def test_evaluate_on_without_groups_is_named(make_device, make_profiles):
    device = make_device()
    model = XGBoostModel(device, rounds=20).fit(make_profiles(device, n=8))
    alone = replace(make_profiles(device, n=8), groups=())
    with pytest.raises(CostModelError, match="no co-run group holds a signature with a standalone profile"):
        evaluate_on(model, alone)


def test_spearman():
    assert spearman(np.array([1, 2, 3]), np.array([10, 20, 30])) == pytest.approx(1.0)
    assert spearman(np.array([1, 2, 3]), np.array([3, 2, 1])) == pytest.approx(-1.0)
