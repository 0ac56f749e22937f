"""``cost_model="auto"``: a cached store and model are topped up to cover the graph compiled."""

from __future__ import annotations

import logging

import pytest

from cosched.costmodel.features import task_signature
from cosched.costmodel.roofline import RooflineModel
from cosched.costmodel.select import STORE_FILE, model_cache_dir, resolve_cost_model
from cosched.costmodel.store import ProfileStore
from cosched.costmodel.xgb import XGBoostModel

COVERAGE = "task signatures of this graph measured"


@pytest.fixture
def cache(monkeypatch, tmp_path):
    monkeypatch.setenv("COSCHED_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def seeded(cache, device, make_profiles):
    """A cached store of synthetic MLP-layer profiles and the model fitted on it."""
    data = make_profiles(device)
    directory = model_cache_dir(device)
    with ProfileStore(directory / STORE_FILE) as store:
        store.add_standalone(device, list(data.standalone.values()))
        store.add_groups(device, data.groups)
    model = XGBoostModel(device, rounds=60).fit(data)
    model.save(directory / "model")
    return model


def _store_rows(device):
    with ProfileStore(model_cache_dir(device) / STORE_FILE) as store:
        data = store.load(device.fingerprint)
    return data


def _coverage(caplog):
    return [r.getMessage() for r in caplog.records if COVERAGE in r.getMessage()]


def test_budget_zero_profiles_nothing_and_logs_coverage(seeded, device, make_mlp, caplog):
    graph = make_mlp((8, 16, 24, 32))  # layer 0 is in the synthetic store, layers 1 and 2 are not
    before = _store_rows(device)
    with caplog.at_level(logging.INFO, logger="cosched.costmodel"):
        model = resolve_cost_model("auto", device, graph, profile_budget_s=0)
    assert isinstance(model, XGBoostModel) and model.identity() == seeded.identity()
    after = _store_rows(device)
    assert (len(after.standalone), len(after.groups)) == (len(before.standalone), len(before.groups))
    assert _coverage(caplog) == [
        "cost model: 1 of 3 task signatures of this graph measured, 2 extrapolated (1 of 3 tasks measured)"]


def test_missing_signatures_are_profiled_appended_and_refitted(seeded, device, make_mlp, caplog):
    graph = make_mlp((8, 16, 24, 24, 24))  # layers 2 and 3 share a signature
    signatures = {task_signature(graph, t) for t in graph.tasks}
    before = _store_rows(device)
    missing = signatures - set(before.standalone)
    assert len(missing) == 2
    with caplog.at_level(logging.INFO, logger="cosched.costmodel"):
        model = resolve_cost_model("auto", device, graph, profile_budget_s=3)
    after = _store_rows(device)
    assert signatures <= set(after.standalone)
    assert set(before.standalone) <= set(after.standalone)
    new_groups = [g for g in after.groups if g.group_id not in {h.group_id for h in before.groups}]
    assert new_groups and all(missing.intersection(g.signatures) for g in new_groups)
    assert all(set(g.signatures) <= signatures for g in new_groups)
    # refitted on the whole store, saved in place of the cached model
    assert isinstance(model, XGBoostModel) and model.identity() != seeded.identity()
    assert model.metrics["train_standalone_samples"] == len(after.standalone)
    assert XGBoostModel.load(model_cache_dir(device) / "model").identity() == model.identity()
    assert _coverage(caplog) == [
        "cost model: 3 of 3 task signatures of this graph measured, 0 extrapolated (4 of 4 tasks measured)"]

    # covered now: nothing is profiled and the same model comes back (a study would resume)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="cosched.costmodel"):
        again = resolve_cost_model("auto", device, graph, profile_budget_s=3)
    assert again.identity() == model.identity()
    assert len(_store_rows(device).groups) == len(after.groups)
    assert "profiling" not in caplog.text and len(_coverage(caplog)) == 1


def test_store_grown_since_the_fit_is_refitted_without_profiling(seeded, device, make_mlp, make_profiles):
    extra = make_profiles(device, n=30, seed=1)  # six more signatures than the model saw
    with ProfileStore(model_cache_dir(device) / STORE_FILE) as store:
        store.add_standalone(device, list(extra.standalone.values()))
    model = resolve_cost_model("auto", device, make_mlp((8, 16)), profile_budget_s=0)
    assert model.identity() != seeded.identity()
    assert model.metrics["train_standalone_samples"] == 30


def test_first_profile_without_a_cache_covers_the_graph(cache, device, make_mlp, caplog):
    graph = make_mlp((8, 16, 24, 32))
    with caplog.at_level(logging.INFO, logger="cosched.costmodel"):
        model = resolve_cost_model("auto", device, graph, profile_budget_s=3)
    assert isinstance(model, XGBoostModel)
    assert _coverage(caplog) == [
        "cost model: 3 of 3 task signatures of this graph measured, 0 extrapolated (3 of 3 tasks measured)"]


def test_no_cache_and_budget_zero_is_the_roofline(cache, device, make_mlp, caplog):
    with caplog.at_level(logging.WARNING, logger="cosched.costmodel"):
        model = resolve_cost_model("auto", device, make_mlp((8, 16)), profile_budget_s=0)
    assert isinstance(model, RooflineModel)
    assert "profiling is off" in caplog.text
    assert not (model_cache_dir(device) / STORE_FILE).exists()
