"""`cosched exec` through cosched.cli.main on tiny zoo models: outputs vs onnxruntime, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import cosched.ir
from cosched import zoo
from cosched.cli import main
from cosched.runtime import random_inputs

TENANTS = ("bert", "dlrm")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny exports with a symbolic batch, named after their tenant."""
    folder = tmp_path_factory.mktemp("models")
    return {name: zoo.export(name, folder / f"{name}.onnx", dynamic_batch=True) for name in TENANTS}


def _onnxruntime(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


def _saved(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {name: data[name] for name in data.files}


def _assert_close(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(want)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_random_inputs_outputs_are_saved_and_equal_onnxruntime(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    paths = [str(models[t]) for t in TENANTS]
    assert main(["exec", *paths, "--batch", "2", "--seed", "7", "--save-outputs", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["bert.npz", "dlrm.npz"]
    printed = capsys.readouterr().out
    for word in ("bert:", "dlrm:", "last_hidden_state: float32[2, 16, 64]", "click_probability: float32[2, 1]",
                 "random, seed 7", "ms"):
        assert word in printed, printed
    # The same seeded inputs, drawn again from the same graph, fed to onnxruntime.
    feeds = random_inputs(cosched.ir.load_models(paths, batch=2), seed=7)
    for tenant in TENANTS:
        _assert_close(_saved(out / f"{tenant}.npz"), _onnxruntime(models[tenant], feeds[tenant]))


def test_same_seed_same_outputs_other_seed_other_outputs(models: dict[str, Path], tmp_path: Path) -> None:
    runs = {}
    for label, seed in (("a", 3), ("b", 3), ("c", 4)):
        out = tmp_path / label
        assert main(["-q", "exec", str(models["bert"]), "--batch", "1", "--seed", str(seed),
                     "--save-outputs", str(out)]) == 0
        runs[label] = _saved(out / "bert.npz")["pooler_output"]
    np.testing.assert_array_equal(runs["a"], runs["b"])
    assert not np.allclose(runs["a"], runs["c"])


def test_input_files_fix_shapes_and_outputs_equal_onnxruntime(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """dlrm reads its inputs (batch 3, valid indices) from a file; bert gets random ones at batch 2."""
    feeds = zoo.example_inputs("dlrm", "tiny", batch=3)
    np.savez(tmp_path / "dlrm_in.npz", **feeds)  # type: ignore[arg-type]
    out = tmp_path / "out"
    argv = ["exec", str(models["bert"]), str(models["dlrm"]), "--batch", "bert=2",
            "--inputs", f"dlrm={tmp_path / 'dlrm_in.npz'}", "--save-outputs", str(out)]
    assert main(argv) == 0
    assert f"from {tmp_path / 'dlrm_in.npz'}" in capsys.readouterr().out
    dlrm = _saved(out / "dlrm.npz")
    assert dlrm["click_probability"].shape == (3, 1)
    _assert_close(dlrm, _onnxruntime(models["dlrm"], feeds))
    assert _saved(out / "bert.npz")["last_hidden_state"].shape[0] == 2


def _error_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    assert err.startswith("cosched exec: error: "), err
    return err


def test_missing_npz_file_is_one_line(models: dict[str, Path], tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.npz"
    err = _error_line(capsys, ["exec", str(models["dlrm"]), "--inputs", f"dlrm={missing}"])
    assert str(missing) in err and "does not exist" in err and "'dlrm'" in err


def test_unreadable_npz_file_is_one_line(models: dict[str, Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip archive")
    err = _error_line(capsys, ["exec", str(models["dlrm"]), "--inputs", f"dlrm={bad}"])
    assert str(bad) in err and "npz" in err


def test_npz_missing_an_input_names_file_and_input(models: dict[str, Path], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    feeds = zoo.example_inputs("dlrm", "tiny", batch=2)
    path = tmp_path / "partial.npz"
    np.savez(path, dense_features=feeds["dense_features"])
    err = _error_line(capsys, ["exec", str(models["dlrm"]), "--batch", "2", "--inputs", f"dlrm={path}"])
    assert str(path) in err and "missing" in err and "sparse_indices" in err


def test_npz_with_wrong_dtype_names_input_and_dtypes(models: dict[str, Path], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    feeds = zoo.example_inputs("dlrm", "tiny", batch=2)
    path = tmp_path / "f64.npz"
    np.savez(path, dense_features=feeds["dense_features"].astype(np.float64),
             sparse_indices=feeds["sparse_indices"])
    err = _error_line(capsys, ["exec", str(models["dlrm"]), "--inputs", f"dlrm={path}"])
    assert "'dense_features'" in err and "float32" in err and "float64" in err


def test_npz_batch_disagreeing_with_batch_flag(models: dict[str, Path], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "b3.npz"
    np.savez(path, **zoo.example_inputs("dlrm", "tiny", batch=3))  # type: ignore[arg-type]
    err = _error_line(capsys, ["exec", str(models["dlrm"]), "--batch", "2", "--inputs", f"dlrm={path}"])
    assert str(path) in err and "batch 3" in err and "--batch says 2" in err


def test_inputs_for_an_unknown_tenant_and_malformed_spec(models: dict[str, Path], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "x.npz"
    np.savez(path, x=np.zeros(2, np.float32))
    err = _error_line(capsys, ["exec", str(models["dlrm"]), "--inputs", f"vision={path}"])
    assert "'vision'" in err and "dlrm" in err
    err = _error_line(capsys, ["exec", str(models["dlrm"]), "--inputs", str(path)])
    assert "TENANT=" in err


def test_missing_model_file_and_unfixed_batch(models: dict[str, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    err = _error_line(capsys, ["exec", str(tmp_path / "ghost.onnx")])
    assert "ghost.onnx" in err
    err = _error_line(capsys, ["exec", str(models["dlrm"])])
    assert "--batch" in err and "dense_features" in err


def test_help_has_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["exec", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "cosched exec bert.onnx dlrm.onnx --save-outputs out/" in text
    assert "--inputs" in text and "--seed" in text and "--batch" in text
