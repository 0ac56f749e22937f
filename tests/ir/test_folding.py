"""The numpy evaluators of shape-computation ops, checked against ONNX's reference evaluator."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from cosched.ir.folding import FOLDABLE, NotFoldable, evaluate, shape_only

I = np.int64  # noqa: E741 - short for the int64 literals below

CASES: list[tuple[str, dict[str, Any], list[np.ndarray | None], int]] = [
    ("Shape", {}, [np.zeros((2, 3, 4), np.float32)], 1),
    ("Shape", {"start": 1, "end": -1}, [np.zeros((2, 3, 4, 5), np.float32)], 1),
    ("Size", {}, [np.zeros((2, 3), np.float32)], 1),
    ("Gather", {"axis": 0}, [np.array([5, 6, 7], I), np.array(-1, I)], 1),
    ("Gather", {"axis": 1}, [np.arange(6, dtype=I).reshape(2, 3), np.array([[2, 0]], I)], 1),
    ("Concat", {"axis": 0}, [np.array([1], I), np.array([-1, 4], I)], 1),
    ("Unsqueeze", {}, [np.array(3, I), np.array([0], I)], 1),
    ("Unsqueeze", {}, [np.ones((2, 3), I), np.array([-1, 0], I)], 1),
    ("Squeeze", {}, [np.ones((1, 3, 1), I), np.array([0], I)], 1),
    ("Squeeze", {}, [np.ones((1, 3, 1), I), None], 1),
    ("Slice", {}, [np.arange(10, dtype=I), np.array([1], I), np.array([-2], I)], 1),
    ("Slice", {}, [np.arange(10, dtype=I), np.array([-1], I), np.array([-(2**63) + 1], I),
                   np.array([0], I), np.array([-2], I)], 1),
    ("Slice", {}, [np.arange(12, dtype=I).reshape(3, 4), np.array([1], I), np.array([2**62], I),
                   np.array([1], I)], 1),
    ("Range", {}, [np.array(0, I), np.array(7, I), np.array(3, I)], 1),
    ("Range", {}, [np.array(1.0, np.float32), np.array(0.0, np.float32), np.array(-0.25, np.float32)], 1),
    ("ConstantOfShape", {"value": np.array([7], I)}, [np.array([2, 3], I)], 1),
    ("ConstantOfShape", {}, [np.array([0, 3], I)], 1),
    ("Cast", {"to": 1}, [np.array([1, -2], I)], 1),
    ("Cast", {"to": 7}, [np.array([1.9, -2.7], np.float32)], 1),
    ("Div", {}, [np.array([7, -7, 7, -7], I), np.array([2, 2, -2, -2], I)], 1),
    ("Div", {}, [np.array([1.0, -3.0], np.float32), np.array([4.0, 2.0], np.float32)], 1),
    ("Mod", {}, [np.array([7, -7, 7], I), np.array([3, 3, -3], I)], 1),
    ("Mod", {"fmod": 1}, [np.array([7, -7, 7], I), np.array([3, 3, -3], I)], 1),
    ("Add", {}, [np.array([1, 2], I), np.array(3, I)], 1),
    ("Sub", {}, [np.array([1, 2], I), np.array([[3], [4]], I)], 1),
    ("Mul", {}, [np.array([2, 3], I), np.array([4, 5], I)], 1),
    ("Equal", {}, [np.array([1, 2], I), np.array([1, 3], I)], 1),
    ("Less", {}, [np.array([1, 2], I), np.array([2, 2], I)], 1),
    ("Not", {}, [np.array([True, False])], 1),
    ("Where", {}, [np.array([True, False]), np.array([1, 2], I), np.array([3, 4], I)], 1),
    ("Expand", {}, [np.array([[1], [2]], I), np.array([1, 3], I)], 1),
    ("Reshape", {}, [np.arange(12, dtype=I).reshape(2, 6), np.array([0, -1, 2], I)], 1),
    ("Reshape", {"allowzero": 1}, [np.zeros((0, 3), I), np.array([3, 0], I)], 1),
    ("Identity", {}, [np.array([4, 5], I)], 1),
    ("Transpose", {"perm": (1, 0)}, [np.arange(6, dtype=I).reshape(2, 3)], 1),
    ("Flatten", {"axis": 2}, [np.zeros((2, 3, 4, 5), np.float32)], 1),
    ("Tile", {}, [np.array([1, 2], I), np.array([3], I)], 1),
    ("Max", {}, [np.array([1, 5], I), np.array([4, 2], I), np.array([3, 3], I)], 1),
    ("Neg", {}, [np.array([1, -2], I)], 1),
    ("ReduceProd", {"keepdims": 0}, [np.array([2, 3, 4], I), np.array([0], I)], 1),
    ("ReduceSum", {"keepdims": 1}, [np.arange(6, dtype=I).reshape(2, 3), None], 1),
    ("Split", {"axis": 0}, [np.arange(5, dtype=I), np.array([2, 3], I)], 2),
    ("Split", {"axis": 0, "num_outputs": 2}, [np.arange(5, dtype=I)], 2),
]


def _reference(op_type: str, attrs: dict[str, Any], inputs: list[np.ndarray | None], n_out: int) -> list[np.ndarray]:
    names = [f"in{i}" if x is not None else "" for i, x in enumerate(inputs)]
    outs = [f"out{i}" for i in range(n_out)]
    onnx_attrs = {k: numpy_helper.from_array(v) if isinstance(v, np.ndarray) else v for k, v in attrs.items()}
    node = helper.make_node(op_type, names, outs, **onnx_attrs)
    feeds = {n: x for n, x in zip(names, inputs, strict=True) if n}
    return ReferenceEvaluator(node, opsets={"": 18}).run(None, feeds)


@pytest.mark.parametrize(("op_type", "attrs", "inputs", "n_out"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_evaluator_matches_the_onnx_reference(
    op_type: str, attrs: dict[str, Any], inputs: list[np.ndarray | None], n_out: int
) -> None:
    ours = evaluate(op_type, attrs, inputs, opset=18, n_outputs=n_out)
    theirs = _reference(op_type, attrs, inputs, n_out)
    assert len(ours) == len(theirs)
    for got, want in zip(ours, theirs, strict=True):
        assert got.dtype == np.asarray(want).dtype, (op_type, got.dtype, want.dtype)
        np.testing.assert_array_equal(got, want)


def test_every_case_op_is_declared_foldable() -> None:
    assert {c[0] for c in CASES} <= FOLDABLE


def test_shape_only_needs_no_memory() -> None:
    view = shape_only((1024, 1024, 1024), np.float32)
    assert view.shape == (1024, 1024, 1024)
    assert view.strides == (0, 0, 0)
    (shape,) = evaluate("Shape", {}, [view], opset=18)
    np.testing.assert_array_equal(shape, [1024, 1024, 1024])


def test_opset_9_slice_and_unsqueeze_read_attributes() -> None:
    (sliced,) = evaluate("Slice", {"starts": (1,), "ends": (3,), "axes": (0,)}, [np.arange(5, dtype=I)], opset=9)
    np.testing.assert_array_equal(sliced, [1, 2])
    (unsq,) = evaluate("Unsqueeze", {"axes": (0,)}, [np.array(4, I)], opset=11)
    np.testing.assert_array_equal(unsq, [4])


def test_constant_attributes() -> None:
    (ints,) = evaluate("Constant", {"value_ints": (1, 2)}, [], opset=18)
    assert ints.dtype == np.int64 and ints.tolist() == [1, 2]
    (scalar,) = evaluate("Constant", {"value": np.array(2.5, np.float32)}, [], opset=18)
    assert scalar.shape == () and scalar.dtype == np.float32


def test_outputs_own_their_memory_and_keep_zero_rank() -> None:
    source = np.array([1, 2], I)
    (out,) = evaluate("Identity", {}, [source], opset=18)
    out[0] = 9
    assert source[0] == 1
    (zero_d,) = evaluate("Add", {}, [np.array(1, I), np.array(2, I)], opset=18)
    assert zero_d.shape == () and int(zero_d) == 3


@pytest.mark.parametrize(
    ("op_type", "inputs"),
    [
        ("Div", [np.array([1], I), np.array([0], I)]),
        ("Mod", [np.array([1], I), np.array([0], I)]),
        ("Range", [np.array(0, I), np.array(5, I), np.array(0, I)]),
        ("Range", [np.array(2048, np.float16), np.array(2060, np.float16), np.array(1, np.float16)]),
        ("Gather", [np.array([1, 2], I), np.array(5, I)]),
        ("Reshape", [np.arange(6, dtype=I), np.array([4, -1], I)]),
        ("Conv", [np.zeros((1, 1, 3, 3), np.float32)]),
        ("Add", [np.array([1], I), None]),
    ],
)
def test_unfoldable_cases_raise_not_foldable(op_type: str, inputs: list[np.ndarray | None]) -> None:
    with pytest.raises(NotFoldable):
        evaluate(op_type, {}, inputs, opset=18)
