"""`cosched compile` then `cosched run`, through cosched.cli.main, on a tiny zoo mix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import cosched
import cosched.ir
from cosched import zoo
from cosched.cli import main

TENANTS = ("mobilenet_v2", "bert", "dlrm")
FAST = ["--cost-model", "roofline", "--trials", "4"]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("models")
    return [zoo.export(name, folder / f"{name}.onnx") for name in TENANTS]


@pytest.fixture(scope="module")
def plan_dir(models: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("compiled") / "plan"
    assert main(["-q", "compile", *map(str, models), "-o", str(out), *FAST]) == 0
    return out


def _error_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    return err


def test_compile_writes_a_plan_directory(plan_dir: Path) -> None:
    assert (plan_dir / "plan.json").is_file()
    assert "def run(" in (plan_dir / "plan_module.py").read_text()
    assert sorted(p.name for p in (plan_dir / "models").iterdir()) == sorted(f"{t}.onnx" for t in TENANTS)
    plan = json.loads((plan_dir / "plan.json").read_text())
    assert [m["tenant"] for m in plan["models"]] == list(TENANTS)
    assert json.loads((plan_dir / "report.json").read_text())["tenants"] == list(TENANTS)


def test_compile_json_report(models: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["compile", *map(str, models), "-o", str(tmp_path / "p"), *FAST, "--seed", "3", "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    predicted = report["predicted_ms"]
    assert {"plan", "sequential", "stream_per_tenant", "greedy"} <= set(predicted)
    assert all(v > 0 for v in predicted.values())
    assert predicted["plan"] <= predicted["sequential"] * (1 + 1e-9)  # sequential is a candidate
    assert report["tenants"] == list(TENANTS)
    assert report["tasks"] == len(json.loads((tmp_path / "p" / "plan.json").read_text())["tasks"])
    assert report["streams"] >= 1 and report["compile_s"] > 0
    assert report["cost_model"] == "roofline" and report["plan_dir"] == str(tmp_path / "p")


def test_compile_text_report_names_every_baseline(
    models: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["compile", *map(str, models[:2]), "-o", str(tmp_path / "p"), *FAST, "--slo", "bert=1000"]) == 0
    out = capsys.readouterr().out
    for word in ("predicted makespan", "sequential", "stream_per_tenant", "greedy", "SLO bert", "tasks"):
        assert word in out, out


def test_run_compares_with_sequential(plan_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["run", str(plan_dir), "--compare", "sequential", "--iters", "2", "--warmup", "0", "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    medians = report["median_ms"]
    assert set(medians) == {"plan", "sequential"} and all(v > 0 for v in medians.values())
    assert report["speedup_vs_sequential"] == pytest.approx(medians["sequential"] / medians["plan"])
    assert report["max_abs_diff"] <= 1e-5
    assert report["inputs"] == dict.fromkeys(TENANTS, "random")


def test_run_text_report(plan_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(plan_dir), "--compare", "sequential", "--iters", "1", "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    for word in ("measured", "predicted", "speedup", "max abs diff", *TENANTS):
        assert word in out, out


def test_run_inputs_and_saved_outputs_match_onnxruntime(plan_dir: Path, tmp_path: Path) -> None:
    feeds = cosched.load(plan_dir).inputs(seed=7)
    argv = ["-q", "run", str(plan_dir), "--iters", "0", "--save-outputs", str(tmp_path / "out"),
            "--trace", str(tmp_path / "trace.json")]
    for tenant, arrays in feeds.items():
        np.savez(tmp_path / f"{tenant}_in.npz", **arrays)
        argv += ["--inputs", f"{tenant}={tmp_path / f'{tenant}_in.npz'}"]
    assert main(argv) == 0
    for tenant in TENANTS:
        session = ort.InferenceSession(str(plan_dir / "models" / f"{tenant}.onnx"), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        expected = dict(zip(names, session.run(names, feeds[tenant]), strict=True))
        with np.load(tmp_path / "out" / f"{tenant}.npz") as saved:
            assert sorted(saved.files) == sorted(names)
            for name in names:
                np.testing.assert_allclose(saved[name], expected[name], rtol=1e-4, atol=1e-4)
    trace = json.loads((tmp_path / "trace.json").read_text())
    assert trace["traceEvents"]


def test_missing_plan_dir_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _error_line(capsys, ["run", str(tmp_path / "nowhere")])
    assert "nowhere" in err and "plan.json" in err


@pytest.mark.parametrize(("slo", "culprit"), [("bert5", "'bert5'"), ("bert=fast", "'fast'"), ("bert=-1", "> 0")])
def test_bad_slo_syntax_is_one_line(
    models: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], slo: str, culprit: str
) -> None:
    err = _error_line(capsys, ["compile", *map(str, models), "-o", str(tmp_path / "p"), *FAST, "--slo", slo])
    assert "--slo" in err and culprit in err


def test_unknown_slo_tenant_is_one_line(models: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _error_line(capsys, ["compile", *map(str, models), "-o", str(tmp_path / "p"), *FAST, "--slo", "gpt=5"])
    assert "'gpt'" in err and "bert" in err
    assert not (tmp_path / "p").exists()


def test_bad_inputs_are_one_line(plan_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _error_line(capsys, ["run", str(plan_dir), "--inputs", f"gpt={tmp_path / 'x.npz'}"])
    assert "'gpt'" in err and "--inputs" in err
    err = _error_line(capsys, ["run", str(plan_dir), "--inputs", f"bert={tmp_path / 'missing.npz'}"])
    assert "missing.npz" in err and "'bert'" in err
    np.save(tmp_path / "array.npy", np.zeros(3, np.float32))
    err = _error_line(capsys, ["run", str(plan_dir), "--inputs", f"bert={tmp_path / 'array.npy'}"])
    assert "array.npy" in err and "not a .npz archive" in err
    np.savez(tmp_path / "wrong.npz", nonsense=np.zeros(3, np.float32))
    err = _error_line(capsys, ["run", str(plan_dir), "--iters", "0", "--inputs", f"bert={tmp_path / 'wrong.npz'}"])
    assert "'bert'" in err and "missing input" in err


def test_missing_model_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _error_line(capsys, ["compile", str(tmp_path / "absent.onnx"), "-o", str(tmp_path / "p"), *FAST])
    assert "absent.onnx" in err


def test_run_writes_measured_timings_to_a_profile_store(
    plan_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cosched.costmodel import ProfileStore

    store = tmp_path / "profiles.sqlite"
    assert main(["run", str(plan_dir), "--iters", "0", "--write-profile", str(store), "--json"]) == 0
    written = json.loads(capsys.readouterr().out)["profile_written"]
    assert written["standalone"] + written["corun_groups"] > 0
    with ProfileStore(store) as opened:
        (fingerprint,) = opened.fingerprints()
        data = opened.load(fingerprint)
    assert len(data.standalone) + len(data.groups) > 0
