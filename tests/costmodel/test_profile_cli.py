from __future__ import annotations

import argparse
import json
import logging
from dataclasses import replace

import pytest

from cosched.cli import profile as cli_profile
from cosched.costmodel.store import ProfileStore
from cosched.costmodel.xgb import XGBoostModel
from cosched.errors import ConfigError, ProfileError


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


def _profile_dir(folder, device, data, fit=True):
    """A folder as `cosched profile -o` writes it: the store, and the model fitted on it."""
    with ProfileStore(folder / "profiles.sqlite") as store:
        store.add_standalone(device, list(data.standalone.values()))
        store.add_groups(device, data.groups)
    if fit:
        XGBoostModel(device, rounds=60).fit(data).save(folder / "model")
    return folder


def _parse(*argv):
    parser = argparse.ArgumentParser()
    cli_profile.register(parser.add_subparsers())
    args = parser.parse_args(["profile", *argv])
    args.quiet = True
    return args


def test_evaluate_on_reports_metrics_of_another_store_without_training(
        device, make_profiles, tmp_path, capsys):
    trained = _profile_dir(tmp_path / "trained", device, make_profiles(device, n=16, seed=0))
    other = _profile_dir(tmp_path / "other", device, make_profiles(device, n=24, seed=1), fit=False)
    model_files = {p.name: p.read_bytes() for p in (trained / "model").iterdir()}
    args = _parse("--evaluate-on", str(other / "profiles.sqlite"), "-o", str(trained))
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "corun_mape" in out and "standalone_spearman" in out
    written = json.loads((trained / "transfer-profiles.json").read_text())
    assert written["test_signatures"] == written["standalone_signatures"] == 24
    assert written["shared_signatures"] == 16  # the 8 others are shapes the model never saw
    assert written["fingerprint"] == device.fingerprint
    for key in cli_profile.REPORTED:
        assert key in written
    assert written["corun_mape"] >= 0 and -1 <= written["corun_spearman"] <= 1
    # nothing was measured or fitted: the model is as it was, the other store unchanged
    assert {p.name: p.read_bytes() for p in (trained / "model").iterdir()} == model_files
    assert sorted(p.name for p in trained.iterdir()) == ["model", "profiles.sqlite", "transfer-profiles.json"]
    with ProfileStore(other / "profiles.sqlite") as store:
        assert len(store.load(device.fingerprint).standalone) == 24


def test_evaluate_on_a_store_of_another_device_warns(device, make_device, make_profiles, tmp_path, caplog):
    trained = _profile_dir(tmp_path / "trained", device, make_profiles(device, n=16))
    elsewhere = make_device(fingerprint="fedcba9876543210", name="other cpu")
    data = replace(make_profiles(device, n=16, seed=2), device=elsewhere)
    other = _profile_dir(tmp_path / "other", elsewhere, data, fit=False)
    with caplog.at_level(logging.WARNING, logger="cosched.cli.profile"):
        metrics = cli_profile.run_evaluate(output=trained, store=other / "profiles.sqlite")
    assert "evaluating across devices" in caplog.text
    assert metrics["fingerprint"] == "fedcba9876543210" and metrics["test_signatures"] == 16


def test_evaluate_on_refuses_what_it_cannot_use(device, make_profiles, tmp_path):
    trained = _profile_dir(tmp_path / "trained", device, make_profiles(device, n=8))
    store = str(trained / "profiles.sqlite")
    args = _parse("--evaluate-on", store, "--budget-s", "10", "--seed", "3", "-o", str(trained))
    with pytest.raises(ConfigError, match="--budget-s, --seed do not apply"):
        args.func(args)
    args = _parse("--evaluate-on", str(tmp_path / "none.sqlite"), "-o", str(trained))
    with pytest.raises(ProfileError, match=r"none\.sqlite: no such profile store"):
        args.func(args)
    assert not (tmp_path / "none.sqlite").exists()
    args = _parse("--evaluate-on", store, "-o", str(tmp_path))
    with pytest.raises(ConfigError, match=r"model/metadata\.json"):
        args.func(args)


def test_comm_profiles_fits_and_writes_the_model(monkeypatch, tmp_path, capsys):
    from cosched.costmodel.comm import CommModel

    monkeypatch.setenv("COSCHED_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "out"
    args = _parse("--comm", "--world-sizes", "2", "--max-bytes", "2KiB", "-o", str(out), "--json")
    assert args.func(args) == 0
    printed = json.loads(capsys.readouterr().out)
    written = json.loads((out / "comm-metrics.json").read_text())
    assert printed == written and written["backend"] == "gloo" and written["max_bytes"] == 2048
    assert written["worlds_sharing_cores"] == ([2] if written["cores"] < 2 else [])
    kinds = {f["kind"] for f in written["fits"]}
    assert {"send_recv", "all_reduce", "all_gather"} <= kinds
    assert set(written["not_measured"]) | kinds == {"send_recv", "all_reduce", "all_gather", "all_to_all"}
    assert all(f["world"] == 2 and f["points"] >= 4 and f["held_out_ratios"] for f in written["fits"])
    assert all(row["ratio"] > 0 for row in written["held_out"])
    model = CommModel.load(out / "model" / "comm.json")
    assert model.backend == "gloo" and model.fingerprint == written["fingerprint"]
    assert model.predict_ms("all_reduce", 1024, 2) > 0
    with ProfileStore(out / "profiles.sqlite") as store:
        assert len(store.comm_records(written["fingerprint"], "gloo")) == written["records"]


@pytest.mark.parametrize(("argv", "message"), [
    (["--comm", "--batch", "2"], "--comm profiles communication, so --batch does not apply"),
    (["--zoo", "tiny", "--world-sizes", "2"], "--world-sizes applies only with --comm"),
    (["--comm", "--max-bytes", "12XB"], r"--max-bytes: '12XB' is not a size"),
    (["--comm", "--world-sizes", "4", "--max-bytes", "16"], "leaves one message size over 4 ranks"),
])
def test_comm_options_are_checked(argv, message, tmp_path):
    args = _parse(*argv, "-o", str(tmp_path))
    with pytest.raises(ConfigError, match=message):
        args.func(args)
