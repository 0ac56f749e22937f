"""Inputs checked where they enter: kinds, NaN and inf, index ranges; outputs where they leave."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cosched.errors import InputError, RuntimeFailure
from cosched.execution.bindings import (
    bind_inputs,
    check_finite,
    check_index_inputs,
    validate_inputs,
)
from cosched.ir import load_models
from cosched.ir.graph import Graph

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ir"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))
from onnx_models import mlp
from tiny_models import VOCAB, embedding


@pytest.fixture(scope="module")
def graph() -> Graph:
    return load_models([mlp("m", batch=1), embedding("e")], names=["m", "e"])


def _feed(ids: list[int]) -> dict[str, dict[str, np.ndarray]]:
    return {"m": {"x": np.zeros((1, 4), np.float32)}, "e": {"ids": np.array([ids], np.int64)}}


def test_valid_inputs_bind_by_graph_name(graph: Graph) -> None:
    bound = bind_inputs(graph, _feed([0, 1, 2, 3]))
    assert set(bound) == {"m/x", "e/ids"} and bound["e/ids"].dtype == torch.int64


@pytest.mark.parametrize(
    ("feed", "culprit"),
    [
        ("not a mapping", "inputs must map tenant"),
        ({"m": None, "e": {}}, "tenant 'm': inputs must map input name"),
        ({"m": {"x": None}, "e": {"ids": np.zeros((1, 4), np.int64)}}, "input 'x' must be an array of dtype float32"),
        ({"m": {"x": object()}, "e": {"ids": np.zeros((1, 4), np.int64)}}, "got object"),
        ({"m": {"x": np.zeros((1, 4), np.float64)}, "e": {"ids": np.zeros((1, 4), np.int64)}}, "dtype float32, got float64"),
    ],
)
def test_inputs_of_the_wrong_kind_name_tenant_and_tensor(graph: Graph, feed: object, culprit: str) -> None:
    with pytest.raises(InputError, match=culprit):
        validate_inputs(graph, feed)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [VOCAB, VOCAB + 100, -VOCAB - 1])
def test_index_inputs_outside_the_table_are_refused(graph: Graph, bad: int) -> None:
    with pytest.raises(InputError) as caught:
        check_index_inputs(graph, validate_inputs(graph, _feed([0, bad, 1, 2])))
    message = str(caught.value)
    for part in ("tenant 'e'", "input 'ids'", f"index {bad}", "'e/lookup'", "'e/table'", f"[{-VOCAB}, {VOCAB - 1}]"):
        assert part in message, message


def test_index_inputs_inside_the_table_pass(graph: Graph) -> None:
    check_index_inputs(graph, validate_inputs(graph, _feed([0, VOCAB - 1, -VOCAB, 2])))


def test_nonfinite_inputs_warn_by_tenant_and_tensor(caplog: pytest.LogCaptureFixture) -> None:
    values = {"m": {"x": np.array([np.nan, np.inf, -np.inf, 1.0], np.float32)}, "e": {"ids": np.zeros(2, np.int64)}}
    with caplog.at_level(logging.WARNING, logger="cosched"):
        found = check_finite(values, "input")
    assert found == {"m": ["tenant 'm': input 'x' holds 1 NaN and 2 inf of 4 values"]}
    assert found["m"][0] in caplog.text


def test_strict_raises_the_error_of_the_side(caplog: pytest.LogCaptureFixture) -> None:
    values = {"m": {"y": torch.tensor([1.0, float("nan")])}}
    with pytest.raises(InputError, match="tenant 'm': input 'y' holds 1 NaN of 2 values; strict"):
        check_finite(values, "input", strict=True)
    with pytest.raises(RuntimeFailure, match=r"tenant 'm': output 'y' holds 1 NaN .* inputs are finite"):
        check_finite(values, "output", strict=True)


def test_outputs_of_tenants_with_nonfinite_inputs_are_not_blamed() -> None:
    values = {"m": {"y": np.array([np.nan])}, "e": {"y": np.array([np.inf])}}
    assert list(check_finite(values, "output", skip={"m"})) == ["e"]
    assert check_finite({"m": {"y": np.zeros(0)}, "e": {"y": np.ones(3)}}, "output") == {}
