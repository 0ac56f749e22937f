"""Sizes out of reason are refused with the memory they need against what the device has."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from cosched.errors import ConfigError
from cosched.ir import load_models
from cosched.runtime.memory import check_fits, device_memory, required_bytes

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ir"))
from onnx_models import mlp


def test_required_bytes_is_a_lower_bound_from_weights_bindings_and_largest_tensor() -> None:
    graph = load_models([mlp("m", batch=2)])
    need, largest = required_bytes(graph)
    # w[4,3] + b[3] + x[2,4] + y[2,3] (bound) + the largest other tensor, h or z [2,3]
    assert need == 4 * (12 + 3 + 8 + 6 + 6)
    assert largest is not None and largest.name in ("m/w", "m/x")


def test_a_graph_that_fits_passes_and_unknown_capacity_checks_nothing() -> None:
    graph = load_models([mlp("m", batch=2)])
    check_fits(graph, 1 << 30, "cpu")
    check_fits(graph, 0, "cpu")


def test_a_huge_batch_is_refused_naming_need_tensor_and_device() -> None:
    graph = load_models([mlp("m")], batch=100_000_000_000)
    with pytest.raises(ConfigError) as caught:
        check_fits(graph, 16 * 10**9, "cpu (test)")
    message = str(caught.value)
    for part in ("['m']", "need at least", "'m/x' [100000000000x4] float32", "1.6 TB", "cpu (test) has 16 GB"):
        assert part in message, message


def test_device_memory_of_the_cpu_is_known() -> None:
    assert device_memory("cpu") > 0
