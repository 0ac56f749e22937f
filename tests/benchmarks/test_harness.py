"""The benchmark harness on the tiny mix: structure of its result, agreement of outputs,
the output comparison itself, and BENCHMARKS.md section updates. Never timings."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.mixes import get_mix
from benchmarks.report import format_block, format_table, update_section, write_markdown
from benchmarks.run import check_runners, main, measure, prepare
from cosched.errors import ConfigError

RUNNERS = {"plan", "sequential", "sequential-1-thread", "stream-per-tenant", "ort-sequential", "ort-threads"}


@pytest.fixture(scope="module")
def result():
    bench = prepare("tiny", "cpu", trials=3, cost_model="roofline")
    try:
        yield measure(bench, iters=2, warmup=0)
    finally:
        bench.close()


def test_every_cpu_runner_is_timed_and_compared(result):
    assert set(result["runners"]) == RUNNERS
    assert set(result["outputs"]) == RUNNERS
    assert result["skipped"] == {}
    assert result["models"] == ["resnet50", "bert", "mobilenet_v2", "dlrm"]
    for r in result["runners"].values():
        assert r["median_ms"] > 0
    assert result["runners"]["plan"]["runner_over_plan"] == pytest.approx(1.0)
    assert result["runners"]["sequential"]["sequential_over_runner"] == pytest.approx(1.0)
    seq, plan = (result["runners"][n]["median_ms"] for n in ("sequential", "plan"))
    ort = result["runners"]["ort-threads"]
    assert ort["sequential_over_runner"] == pytest.approx(seq / ort["median_ms"])
    assert ort["runner_over_plan"] == pytest.approx(ort["median_ms"] / plan)


def test_outputs_of_every_runner_agree(result):
    assert result["outputs_agree"]
    for name in ("plan", "stream-per-tenant", "sequential-1-thread"):
        assert result["outputs"][name]["max_abs_diff"] <= 1e-5, name
    for name in ("ort-sequential", "ort-threads"):
        assert result["outputs"][name]["max_rel_err"] <= 1e-4, name


def test_fidelity_pairs_prediction_with_measurement(result):
    fid = result["fidelity"]
    assert set(fid) == {"plan", "sequential", "stream-per-tenant"}
    for name, f in fid.items():
        assert f["measured_ms"] == result["runners"][name]["median_ms"]
        assert f["predicted_over_measured"] == pytest.approx(f["predicted_ms"] / f["measured_ms"])


def test_result_is_json_and_prints(result):
    result = dict(result, command="python -m benchmarks.run --mix tiny")
    assert json.loads(json.dumps(result))["mix"] == "tiny"
    table = format_table(result)
    for name in RUNNERS:
        assert name in table
    block = format_block(result)
    assert "`python -m benchmarks.run --mix tiny`" in block
    assert "median ms" not in block  # CPU rows carry ratios only


def test_check_runners_flags_a_wrong_value_and_a_missing_output():
    ref = {"a": {"y": np.array([1.0, -2.0, 4.0], np.float32)}}
    close = {"a": {"y": np.array([1.0, -2.0, 4.0002], np.float32)}}
    wrong = {"a": {"y": np.array([1.0, -2.0, 4.1], np.float32)}}
    missing = {"a": {}}
    checks = check_runners({"ref": ref, "close": close, "wrong": wrong, "missing": missing}, "ref")
    assert checks["ref"]["agrees"] and checks["ref"]["max_abs_diff"] == 0.0
    assert checks["close"]["agrees"]  # 2e-4 / 4 = 5e-5 <= 1e-4
    assert checks["close"]["max_rel_err"] == pytest.approx(5e-5, rel=0.01)
    assert not checks["wrong"]["agrees"]
    assert checks["wrong"]["max_rel_err"] == pytest.approx(0.1 / 4, rel=1e-3)
    assert not checks["missing"]["agrees"]
    assert "'a'" in checks["missing"]["problems"][0] and "'y'" in checks["missing"]["problems"][0]


def test_check_runners_counts_nan_as_a_mismatch():
    ref = {"a": {"y": np.array([1.0, np.inf, 4.0], np.float32)}}
    same = {"a": {"y": np.array([1.0, np.inf, 4.0], np.float32)}}
    nan = {"a": {"y": np.array([1.0, np.inf, np.nan], np.float32)}}
    checks = check_runners({"ref": ref, "same": same, "nan": nan}, "ref")
    assert checks["same"]["agrees"] and checks["same"]["max_abs_diff"] == 0.0
    assert not checks["nan"]["agrees"] and checks["nan"]["max_abs_diff"] == float("inf")
    assert "'a'" in checks["nan"]["problems"][0] and "'y'" in checks["nan"]["problems"][0]
    nan_ref = check_runners({"ref": nan, "nan": nan}, "ref")
    assert not nan_ref["ref"]["agrees"]  # NaN never agrees, not even with itself


def test_unknown_mix_names_the_choices():
    with pytest.raises(ConfigError, match=r"'huge'.*tiny, vision, mixed"):
        get_mix("huge")


def test_section_update_keeps_other_text_and_replaces_same_day_block():
    text = "# Benchmarks\n\nIntro by someone else.\n\n## Other section\nkept\n"
    block1 = "#### 2025-01-01 · cpu A\n\nfirst\n"
    block2 = "#### 2025-01-02 · cpu A\n\nsecond\n"
    block1b = "#### 2025-01-01 · cpu A\n\nfirst again\n"
    once = update_section(text, "tiny", "cpu", block1)
    assert once.startswith(text.rstrip("\n"))
    assert "<!-- bench:run:tiny:cpu -->" in once and "<!-- /bench:run:tiny:cpu -->" in once
    twice = update_section(once, "tiny", "cpu", block2)
    thrice = update_section(twice, "tiny", "cpu", block1b)
    assert "first\n" not in thrice and "first again" in thrice and "second" in thrice
    assert thrice.count("#### 2025-01-01") == 1
    assert "## Other section\nkept\n" in thrice
    other = update_section(thrice, "vision", "cpu", block1)
    assert other.count("<!-- bench:run:") == 2
    assert update_section(other, "tiny", "cpu", block1b) == other


def test_main_writes_json_and_markdown(tmp_path):
    md, out = tmp_path / "BENCHMARKS.md", tmp_path / "r.json"
    md.write_text("# Benchmarks\n\nhand-written\n")
    argv = ["--mix", "tiny", "--iters", "1", "--warmup", "0", "--trials", "2",
            "--cost-model", "roofline", "--quiet", "--json", str(out)]
    assert main(argv) == 0
    data = json.loads(out.read_text())
    assert set(data["runners"]) == RUNNERS
    write_markdown(data, md)
    text = md.read_text()
    assert text.startswith("# Benchmarks\n\nhand-written\n")
    assert "| runner | t(sequential) / t(runner) |" in text
    assert "\n| plan | " in text and "\n| ort-threads | " in text


def test_main_refuses_to_write_cpu_rows(tmp_path):
    with pytest.raises(ConfigError, match=r"benchmarks\.isolated"):
        main(["--mix", "tiny", "--device", "cpu", "--write", str(tmp_path / "B.md")])
