from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from cosched import zoo
from cosched.cli import main


def test_list_shows_every_model_size_inputs_and_params(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["zoo", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["MODEL", "SIZE", "INPUTS", "OUTPUTS", "PARAMS"]
    rows = {(line.split()[0], line.split()[1]): line for line in lines[1:]}
    assert set(rows) == {(n, s) for n in zoo.names() for s in zoo.SIZES}
    assert "input:float32[B,3,224,224]" in rows["resnet50", "full"]
    assert rows["resnet50", "full"].endswith("25.56M")
    assert "input_ids:int64[B,128] attention_mask:int64[B,128]" in rows["bert", "full"]
    assert rows["bert", "full"].endswith("109.48M")
    assert "sparse_indices:int64[B,26,4]" in rows["dlrm", "full"]


def test_export_writes_the_requested_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "g.onnx"
    argv = ["zoo", "export", "googlenet", "-o", str(out), "--batch", "2", "--legacy-exporter"]
    assert main(argv) == 0
    assert capsys.readouterr().out.strip() == str(out)
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2
    assert out.read_bytes() == zoo.export("googlenet", batch=2, legacy=True).read_bytes()


def test_export_dynamic_batch_flag(tmp_path: Path) -> None:
    out = tmp_path / "s.onnx"
    assert main(["zoo", "export", "squeezenet1_1", "-o", str(out), "--dynamic-batch"]) == 0
    dim = onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_param and not dim.dim_value


def test_export_unknown_model_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["zoo", "export", "alexnet", "-o", str(tmp_path / "a.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'alexnet'" in err and "resnet50" in err
    assert not (tmp_path / "a.onnx").exists()


def test_export_requires_output_and_rejects_bad_size(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as missing:
        main(["zoo", "export", "bert"])
    assert missing.value.code == 2 and "-o" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["zoo", "export", "bert", "-o", "x.onnx", "--size", "huge"])
    assert "huge" in capsys.readouterr().err


def test_help_texts_name_the_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["zoo", "export", "--help"])
    text = capsys.readouterr().out
    for flag in ("--size", "--batch", "--dynamic-batch", "--legacy-exporter", "-o"):
        assert flag in text
