"""Broken and hostile input through the CLI: one line naming the culprit and exit 2, never a
traceback; NaN and inf never pass silently; plans are validated wherever they are loaded."""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from tiny_models import VOCAB, write_models

from cosched.cli import main

FAST = ["--cost-model", "roofline", "--trials", "2"]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def plan_dir(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("compiled") / "plan"
    assert main(["-q", "compile", str(models["a"]), str(models["b"]), str(models["emb"]), "-o", str(out), *FAST]) == 0
    return out


def _error_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(["-q", *argv]) == 2  # -q: no progress bars on stderr
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def _nan_x(tmp_path: Path) -> Path:
    return _npz(tmp_path / "nan.npz", x=np.array([[np.nan, 1, 2, np.inf]], np.float32))


def _huge_x(tmp_path: Path) -> Path:
    """Finite inputs whose outputs overflow to inf."""
    return _npz(tmp_path / "huge.npz", x=np.full((1, 4), 3e38, np.float32))


# ------------------------------------------------------------ 2. NaN and inf
def test_exec_warns_about_nan_inputs_naming_tenant_and_tensor(
    models: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert main(["exec", str(models["a"]), "--inputs", f"a={_nan_x(tmp_path)}"]) == 0
    assert "tenant 'a': input 'x' holds 1 NaN and 1 inf of 4 values" in caplog.text


def test_exec_strict_refuses_nan_inputs(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _error_line(capsys, ["exec", str(models["a"]), "--inputs", f"a={_nan_x(tmp_path)}", "--strict"])
    assert "tenant 'a'" in err and "input 'x'" in err and "NaN" in err


def test_exec_outputs_non_finite_from_finite_inputs_warn_or_fail(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    argv = ["exec", str(models["a"]), "--inputs", f"a={_huge_x(tmp_path)}"]
    assert main(argv) == 0
    assert "tenant 'a': output 'y' holds" in caplog.text and "inputs are finite" in caplog.text
    err = _error_line(capsys, [*argv, "--strict"])
    assert "output 'y'" in err and "inf" in err


def test_run_warns_about_nan_inputs_and_strict_refuses(
    plan_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["run", str(plan_dir), "--iters", "0", "--inputs", f"a={_nan_x(tmp_path)}"]
    assert main([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert any("tenant 'a': input 'x'" in w for w in report["warnings"])
    err = _error_line(capsys, [*argv, "--strict"])
    assert "tenant 'a'" in err and "input 'x'" in err


def test_run_warns_about_outputs_that_overflow(plan_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["run", str(plan_dir), "--iters", "0", "--inputs", f"a={_huge_x(tmp_path)}"]
    assert main([*argv, "--json"]) == 0
    assert any("output 'y'" in w for w in json.loads(capsys.readouterr().out)["warnings"])
    assert "output 'y'" in _error_line(capsys, [*argv, "--strict"])


@pytest.mark.parametrize("iters", ["0", "1"])
def test_compare_reports_nan_outputs_as_a_mismatch_not_zero(
    plan_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], iters: str
) -> None:
    argv = ["run", str(plan_dir), "--iters", iters, "--warmup", "0", "--compare", "sequential",
            "--inputs", f"a={_nan_x(tmp_path)}"]
    assert main([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["max_abs_diff"] == float("inf")
    assert any("tenant 'a': output 'y'" in m for m in report["mismatches"])
    assert main(argv) == 0
    assert "MISMATCH" in capsys.readouterr().out


# ----------------------------------------------------- 3. output paths first
def test_compile_output_under_a_file_fails_before_any_work(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("x")
    err = _error_line(capsys, ["compile", str(models["a"]), "-o", str(tmp_path / "file" / "plan"), *FAST])
    assert "-o" in err and "file" in err and "not a directory" in err


def test_compile_into_an_unwritable_place_fails_before_any_work(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != locked and access(p, mode, **kw))
    err = _error_line(capsys, ["compile", str(models["a"]), "-o", str(locked / "plan"), *FAST])
    assert str(locked) in err and "not writable" in err


def test_full_disk_leaves_no_partial_plan_and_keeps_the_old_one(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "plan"
    assert main(["-q", "compile", str(models["a"]), "-o", str(out), *FAST]) == 0
    before = sorted(p.relative_to(out) for p in out.rglob("*"))

    def full(src: Any, dst: Any, **kw: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))

    monkeypatch.setattr(shutil, "copyfile", full)
    err = _error_line(capsys, ["compile", str(models["a"]), str(models["b"]), "-o", str(out), *FAST])
    assert str(out) in err and "No space left on device" in err
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # the old plan, whole
    assert [p.name for p in tmp_path.iterdir()] == ["plan"]  # no temporary left behind
    err = _error_line(capsys, ["compile", str(models["a"]), "-o", str(tmp_path / "new"), *FAST])
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize(
    ("flag", "verb"),
    [("--trace", "run"), ("--save-outputs", "run"), ("--write-profile", "run"), ("--png", "show")],
)
def test_output_flags_pointing_at_the_wrong_kind_of_path(
    plan_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, verb: str
) -> None:
    (tmp_path / "file").write_text("x")
    wrong = tmp_path / "file" if flag == "--save-outputs" else tmp_path
    extra = ["--iters", "0"] if verb == "run" else []
    err = _error_line(capsys, [verb, str(plan_dir), *extra, flag, str(wrong)])
    assert flag in err and str(wrong) in err
    under_file = tmp_path / "file" / "out.x"
    err = _error_line(capsys, [verb, str(plan_dir), *extra, flag, str(under_file)])
    assert flag in err and "not a directory" in err


def test_exec_save_outputs_into_a_file(models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("x")
    err = _error_line(capsys, ["exec", str(models["a"]), "--save-outputs", str(tmp_path / "file")])
    assert "--save-outputs" in err and "not a directory" in err


@pytest.mark.parametrize(
    ("study", "culprit"),
    [("not a url", "not a database URL"), ("sqlite:///{dir}", "is a directory"),
     ("sqlite:///{dir}/garbage.db", "not an SQLite database"), ("sqlite:///{dir}/none/s.db", "does not exist")],
)
def test_bad_study_storage(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], study: str, culprit: str
) -> None:
    (tmp_path / "garbage.db").write_bytes(b"this is no database at all")
    url = study.format(dir=tmp_path)
    err = _error_line(capsys, ["compile", str(models["a"]), "-o", str(tmp_path / "p"), *FAST, "--study", url])
    assert repr(url) in err and culprit in err
    assert not (tmp_path / "p").exists()


def _edit_plan(plan_dir: Path, target: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    shutil.copytree(plan_dir, target)
    path = target / "plan.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    return target


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without a CUDA device")
def test_cuda_plan_on_a_machine_without_cuda(plan_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cuda = _edit_plan(plan_dir, tmp_path / "cuda", lambda d: d["device"].update(kind="cuda"))
    err = _error_line(capsys, ["run", str(cuda), "--iters", "0"])
    assert "cuda:0" in err and "no CUDA device" in err and str(cuda) in err
    assert main(["-q", "show", str(cuda)]) == 0  # a plan made for another machine can still be shown


@pytest.mark.parametrize(
    "argv",
    [["--batch", "100000000000"], ["--shape", "dyn:x=100000000000x4"]],
)
def test_sizes_out_of_reason_are_refused_with_the_memory_they_need(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    for verb in (["compile", "-o", str(tmp_path / "p"), *FAST], ["exec"]):
        err = _error_line(capsys, [verb[0], str(models["dyn"]), *verb[1:], *argv])
        assert "'dyn/x'" in err and "TB" in err and "lower the batch" in err
    assert not (tmp_path / "p").exists()


def test_batch_beyond_int64_is_refused(models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _error_line(capsys, ["compile", str(models["dyn"]), "-o", str(tmp_path / "p"), *FAST,
                               "--batch", "99999999999999999999999"])
    assert "--batch" in err and "99999999999999999999999" in err


@pytest.mark.parametrize("verb", ["run", "exec"])
def test_out_of_range_token_id_is_one_line_naming_tenant_op_and_tensor(
    models: dict[str, Path], plan_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], verb: str
) -> None:
    ids = _npz(tmp_path / "ids.npz", ids=np.array([[1, 2, VOCAB + 5, 3]], np.int64))
    where = [str(plan_dir), "--iters", "0"] if verb == "run" else [str(models["emb"])]
    err = _error_line(capsys, [verb, *where, "--inputs", f"emb={ids}"])
    assert "tenant 'emb'" in err and "input 'ids'" in err and "'emb/lookup'" in err and str(VOCAB + 5) in err
    assert "TorchScript" not in err


# ------------------------------------------------------ 4. loading validates
@pytest.mark.parametrize(
    ("change", "culprit"),
    [
        (lambda d: d["streams"][0]["instructions"].append({"op": "run", "task": 0}), "task 0 runs twice"),
        (lambda d: d["streams"][0]["instructions"].append({"op": "run", "task": 999}), "unknown tasks [999]"),
        (lambda d: d["inputs"][0].update(shape=[2, 4]), "inputs[0] (a:x): shape"),
        (lambda d: d["outputs"].pop(), "outputs: the plan binds"),
        (lambda d: d["tasks"][0].update(tenant="zzz"), "tenant 'zzz'"),
    ],
)
def test_show_validates_like_run(
    plan_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], change: Callable[[dict[str, Any]], None],
    culprit: str,
) -> None:
    broken = _edit_plan(plan_dir, tmp_path / "broken", change)
    for argv in (["show", str(broken)], ["run", str(broken), "--iters", "0"]):
        err = _error_line(capsys, argv)
        assert str(broken / "plan.json") in err and culprit in err


def test_trials_zero_reports_what_ran(models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["compile", str(models["a"]), str(models["b"]), "-o", str(tmp_path / "p"), "--cost-model", "roofline",
            "--trials", "0"]
    assert main([*argv, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["trials"] == 0
    assert main(argv) == 0
    assert "search trials      0 (baselines only)" in capsys.readouterr().out


def test_compiling_into_a_plan_directory_replaces_it_whole(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "plan"
    assert main(["-q", "compile", str(models["a"]), str(models["b"]), "-o", str(out), *FAST]) == 0
    (out / "stale.txt").write_text("old")
    assert main(["-q", "compile", str(models["a"]), "-o", str(out), *FAST]) == 0
    assert sorted(p.name for p in (out / "models").iterdir()) == ["a.onnx"]
    assert not (out / "stale.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["plan"]


def test_compiling_into_a_directory_of_other_files_is_refused(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    err = _error_line(capsys, ["compile", str(models["a"]), "-o", str(tmp_path), *FAST])
    assert str(tmp_path) in err and "plan.json" in err
    assert (tmp_path / "mine.txt").read_text() == "keep me"


# ------------------------------------------------- 5. messages that say right
def test_compile_on_a_directory_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _error_line(capsys, ["compile", str(tmp_path), "-o", str(tmp_path / "p"), *FAST])
    assert "is a directory" in err and "does not exist" not in err


def test_profile_max_groups_zero_on_a_new_store(models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "profiles"
    err = _error_line(capsys, ["profile", "--models", str(models["a"]), "--max-groups", "0", "-o", str(out)])
    assert "--max-groups 0" in err and "profiles.sqlite" in err and "--budget-s" not in err
    assert not out.exists()


def test_profile_negative_max_groups(models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _error_line(capsys, ["profile", "--models", str(models["a"]), "--max-groups", "-1", "-o", str(tmp_path)])
    assert "--max-groups" in err and "-1" in err


@pytest.mark.parametrize(("slo", "culprit"), [("a=inf", "finite"), ("a=nan", "finite"), ("a=0", "> 0 ms")])
def test_slo_messages(models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], slo: str, culprit: str) -> None:
    err = _error_line(capsys, ["compile", str(models["a"]), "-o", str(tmp_path / "p"), *FAST, "--slo", slo])
    assert f"--slo {slo}" in err and culprit in err


def test_zero_dim_shape_is_refused_like_a_zero_batch(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in (["--shape", "dyn:x=0x4"], ["--batch", "0"]):
        err = _error_line(capsys, ["compile", str(models["dyn"]), "-o", str(tmp_path / "p"), *FAST, *argv])
        assert argv[1] in err and ">= 1" in err


@pytest.mark.parametrize(
    ("argv", "culprit", "python_name"),
    [
        (["--shape", "gpt:x=1x4"], "--shape", "input_shapes"),
        (["--batch", "gpt=2"], "--batch", "batch names"),
        (["--slo", "gpt=2"], "--slo", "slo_ms"),
    ],
)
def test_cli_errors_speak_in_flags(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], culprit: str,
    python_name: str,
) -> None:
    err = _error_line(capsys, ["compile", str(models["a"]), "-o", str(tmp_path / "p"), *FAST, *argv])
    assert culprit in err and "'gpt'" in err and python_name not in err


def test_tenant_names_with_separators_need_name(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    odd = tmp_path / "a=1.onnx"
    shutil.copyfile(models["a"], odd)
    err = _error_line(capsys, ["compile", str(odd), "-o", str(tmp_path / "p"), *FAST])
    assert "'a=1'" in err and "--name" in err
    twice = ["compile", str(models["a"]), str(models["a"]), "-o", str(tmp_path / "p"), *FAST]
    err = _error_line(capsys, twice)
    assert "'a' is used twice" in err and "--name" in err and "names=" not in err
    assert main(["-q", *twice, "--name", "first", "--name", "second", "--slo", "second=1000"]) == 0
