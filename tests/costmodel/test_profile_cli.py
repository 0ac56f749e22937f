from __future__ import annotations

import json

import pytest

from cosched.cli import profile as cli_profile
from cosched.costmodel.xgb import XGBoostModel
from cosched.errors import ConfigError


def test_run_profile_writes_store_model_and_metrics(make_mlp, monkeypatch, tmp_path):
    graph = make_mlp((8, 16, 24, 32, 48, 64, 96, 128, 160, 192, 256), batch=2)
    monkeypatch.setattr(cli_profile, "_load", lambda models, size, batch: [graph])
    monkeypatch.setenv("COSCHED_CACHE_DIR", str(tmp_path / "cache"))
    metrics = cli_profile.run_profile(
        device="cpu", models=["unused.onnx"], zoo_size=None, batch=2, budget_s=30, max_groups=40,
        seed=0, output=tmp_path, quiet=True)
    written = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("standalone_mape", "standalone_spearman", "corun_mape", "corun_spearman", "samples",
                "roofline_corun_mape", "no_interference_corun_mape"):
        assert key in written
    assert written["standalone_signatures"] == 10 and written["corun_groups"] == 40
    assert metrics["samples"] == written["samples"] > 40
    assert (tmp_path / "profiles.sqlite").exists()
    model = XGBoostModel.load(tmp_path / "model")
    assert model.metrics["held_out"]["test_signatures"] >= 1
    assert model.predict_task(graph, graph.tasks[-1]) > 0
    # --max-groups 0 over a store that covers the graph measures nothing: refit, re-evaluate
    again = cli_profile.run_profile(
        device="cpu", models=["unused.onnx"], zoo_size=None, batch=2, budget_s=30, max_groups=0,
        seed=1, output=tmp_path, quiet=True)
    assert again["samples"] == metrics["samples"] and again["corun_groups"] == 40


def test_bad_budget_is_a_config_error(tmp_path):
    import argparse

    parser = argparse.ArgumentParser()
    cli_profile.register(parser.add_subparsers())
    args = parser.parse_args(["profile", "--zoo", "tiny", "--budget-s", "0", "-o", str(tmp_path)])
    args.quiet = True
    with pytest.raises(ConfigError, match="--budget-s"):
        args.func(args)


def test_several_batch_sizes_profile_each_graph(make_mlp, monkeypatch, tmp_path):
    loaded: list[int] = []

    def load(models, size, batch):
        loaded.append(batch)
        return [make_mlp((8, 16, 32), batch=batch, tenant=f"m{batch}")]

    monkeypatch.setattr(cli_profile, "_load", load)
    monkeypatch.setenv("COSCHED_CACHE_DIR", str(tmp_path / "cache"))
    metrics = cli_profile.run_profile(
        device="cpu", models=["unused.onnx"], zoo_size=None, batch=[1, 4], budget_s=30, max_groups=8,
        seed=0, output=tmp_path, quiet=True)
    assert loaded == [1, 4]
    assert metrics["standalone_signatures"] == 4  # two layers at two batch sizes


def test_every_batch_size_is_checked(tmp_path):
    import argparse

    parser = argparse.ArgumentParser()
    cli_profile.register(parser.add_subparsers())
    args = parser.parse_args(["profile", "--zoo", "tiny", "--batch", "1", "0", "-o", str(tmp_path)])
    assert args.batch == [1, 0]
    args.quiet = True
    with pytest.raises(ConfigError, match="every --batch"):
        args.func(args)
