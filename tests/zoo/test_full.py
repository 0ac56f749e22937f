"""Every full-size model exports with both exporters and passes onnx.checker (slow)."""

from __future__ import annotations

import time

import onnx
import pytest

from cosched import zoo


@pytest.mark.slow
@pytest.mark.parametrize("legacy", [False, True], ids=["dynamo", "legacy"])
@pytest.mark.parametrize("name", zoo.names())
def test_full_size_exports_and_checks(name: str, legacy: bool) -> None:
    start = time.perf_counter()
    path = zoo.export(name, size="full", legacy=legacy)
    seconds = time.perf_counter() - start
    onnx.checker.check_model(str(path))
    model = onnx.load(str(path))
    shapes = {
        i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input
    }
    expected = {s.name: list(s.batched(1)) for s in zoo.ZOO[name].input_specs("full")}
    assert shapes == expected
    assert path.stat().st_size < 500e6
    print(
        f"{name} full {'legacy' if legacy else 'dynamo'}: {seconds:.1f}s, {path.stat().st_size / 1e6:.1f} MB"
    )
