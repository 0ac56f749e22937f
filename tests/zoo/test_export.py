from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from cosched import zoo
from cosched.errors import ConfigError


def batch_dims(path: Path) -> list[onnx.TensorShapeProto.Dimension]:
    graph = onnx.load(str(path), load_external_data=False).graph
    return [v.type.tensor_type.shape.dim[0] for v in (*graph.input, *graph.output)]


def test_second_export_is_served_from_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    first = zoo.export("squeezenet1_1")
    stamp = first.stat().st_mtime_ns

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("torch.onnx.export called although the export is cached")

    monkeypatch.setattr(torch.onnx, "export", refuse)
    again = zoo.export("squeezenet1_1")
    assert again == first and again.stat().st_mtime_ns == stamp
    assert first.parent == zoo.cache_dir()
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".")]  # no temp files


def test_path_gets_a_copy_of_the_cached_file(tmp_path: Path) -> None:
    cached = zoo.export("dlrm", legacy=True)
    dest = zoo.export("dlrm", tmp_path / "sub" / "model.onnx", legacy=True)
    assert dest == tmp_path / "sub" / "model.onnx"
    assert dest.read_bytes() == cached.read_bytes()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["model.onnx"]


def test_cache_key_separates_every_option() -> None:
    options = [
        dict(size="tiny", batch=1, dynamic_batch=False, legacy=False),
        dict(size="full", batch=1, dynamic_batch=False, legacy=False),
        dict(size="tiny", batch=2, dynamic_batch=False, legacy=False),
        dict(size="tiny", batch=1, dynamic_batch=True, legacy=False),
        dict(size="tiny", batch=1, dynamic_batch=False, legacy=True),
    ]
    names = {zoo.cached_name("bert", **o) for o in options}  # type: ignore[arg-type]
    assert len(names) == len(options)
    assert zoo.cached_name("dlrm", **options[0]) != zoo.cached_name("bert", **options[0])  # type: ignore[arg-type]


def test_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(zoo.CACHE_ENV, str(tmp_path / "c"))
    assert zoo.cache_dir() == tmp_path / "c" / "zoo"
    monkeypatch.delenv(zoo.CACHE_ENV)
    assert zoo.cache_dir() == Path.home() / ".cache" / "cosched" / "zoo"


def test_static_batch_is_fixed_in_the_file() -> None:
    dims = batch_dims(zoo.export("mobilenet_v2", batch=3))
    assert [d.dim_value for d in dims] == [3, 3]


@pytest.mark.parametrize("legacy", [False, True], ids=["dynamo", "legacy"])
@pytest.mark.parametrize("name", ["bert", "resnet50"])
def test_dynamic_batch_is_symbolic_and_runs_any_batch(name: str, legacy: bool) -> None:
    path = zoo.export(name, dynamic_batch=True, legacy=legacy)
    dims = batch_dims(path)
    assert len(dims) == len(zoo.ZOO[name].input_names("tiny")) + len(zoo.ZOO[name].output_names)
    assert all(d.dim_param == "batch" and not d.dim_value for d in dims)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        feeds = zoo.example_inputs(name, "tiny", batch)
        module = zoo.build(name)
        with torch.no_grad():
            expected = module(
                *[torch.from_numpy(feeds[n]) for n in zoo.ZOO[name].input_names("tiny")]
            )
        expected = expected if isinstance(expected, tuple) else (expected,)
        for got, want in zip(session.run(None, feeds), expected, strict=True):
            assert got.shape[0] == batch
            np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-5)


def test_legacy_bert_carries_shape_computation_chains() -> None:
    graph = onnx.load(str(zoo.export("bert", dynamic_batch=True, legacy=True))).graph
    ops = {n.op_type for n in graph.node}
    assert {"Shape", "Gather", "Concat", "Reshape", "MatMul", "Softmax"} <= ops


def test_unknown_model_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"'alexnet'.*resnet50.*dlrm"):
        zoo.export("alexnet")
    with pytest.raises(ConfigError, match="'vgg'"):
        zoo.example_inputs("vgg")


def test_unknown_size_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"'bert' has no size 'huge'.*tiny, full"):
        zoo.export("bert", size="huge")
    with pytest.raises(ConfigError, match="'medium'"):
        zoo.build("resnet50", "medium")


@pytest.mark.parametrize("batch", [0, -1, 1.5, True])
def test_bad_batch_is_rejected(batch: object) -> None:
    with pytest.raises(ConfigError, match=f"batch must be an integer >= 1, got {batch!r}"):
        zoo.export("dlrm", batch=batch)  # type: ignore[arg-type]


def test_exporter_failure_is_an_export_error_and_leaves_no_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def explode(*args: object, **kwargs: object) -> None:
        print("exporter chatter before the crash")
        raise RuntimeError("unsupported operator aten::frobnicate")

    monkeypatch.setattr(torch.onnx, "export", explode)
    with pytest.raises(
        zoo.ExportError, match=r"'dlrm' \(size tiny, batch 5, dynamo.*frobnicate"
    ) as info:
        zoo.export("dlrm", batch=5)
    assert "exporter chatter" in str(info.value)
    assert not list(zoo.cache_dir().glob("dlrm-tiny-b5-*")) and not list(
        zoo.cache_dir().glob(".dlrm-tiny-b5*")
    )


def test_unwritable_cache_dir_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv(zoo.CACHE_ENV, str(blocker / "cache"))
    with pytest.raises(ConfigError, match=f"{blocker / 'cache'}.*{zoo.CACHE_ENV}"):
        zoo.export("dlrm")


def test_public_names_are_exported() -> None:
    public = {n for n in vars(zoo) if not n.startswith("_")}
    modules = {
        "bert",
        "dlrm",
        "googlenet",
        "inception",
        "mobilenet",
        "resnet",
        "squeezenet",
        "nn",
        "annotations",
    }
    assert public - modules == set(zoo.__all__)
