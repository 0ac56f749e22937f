"""Elementwise and reduction ops against onnxruntime on one-node models, plus dtype errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from single_node import assert_matches_ort

from cosched.errors import UnsupportedOpError
from cosched.ops import run_op

RNG = np.random.default_rng(0)


def _f32(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Equal", "Less", "Greater"])
def test_binary_ops_broadcast_numpy_style(op: str) -> None:
    a, b = np.abs(_f32(2, 1, 4)) + 0.5, np.abs(_f32(3, 1)) + 0.5
    (out,) = assert_matches_ort(op, [a, b])
    assert out.shape == (2, 3, 4)


def test_integer_div_truncates_toward_zero() -> None:
    a = np.array([-7, 7, -7, 7, -1], dtype=np.int32)
    b = np.array([2, 2, -2, -2, 3], dtype=np.int32)
    (out,) = assert_matches_ort("Div", [a, b])
    np.testing.assert_array_equal(out, [-3, 3, 3, -3, 0])


def test_mod_follows_divisor_sign_and_fmod_follows_dividend() -> None:
    a = np.array([-7, 7, -7, 7], dtype=np.int64)
    b = np.array([3, -3, -3, 3], dtype=np.int64)
    np.testing.assert_array_equal(assert_matches_ort("Mod", [a, b])[0], [2, -2, -1, 1])
    np.testing.assert_array_equal(assert_matches_ort("Mod", [a, b], fmod=1)[0], [-1, 1, -1, 1])


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_float_mod_follows_opset_28_definition(dtype: type) -> None:
    """Mod-28 defines float fmod=0 as ``A - floor(A / B) * B`` (numpy's ``mod``): NaN for an
    infinite A or a zero B, A or B for an infinite B, and a zero result takes B's sign."""
    inf, nan = np.inf, np.nan
    a = np.array([0.0, -0.0, 0.0, -0.0, 6.0, -6.0, inf, 5.0, 5.0, -5.0, 5.5, -4.3, nan, 1.0], dtype)
    b = np.array([3.0, 3.0, -3.0, -3.0, -3.0, 3.0, 2.0, 0.0, inf, inf, -2.0, 2.1, 1.0, nan], dtype)
    (out,) = run_op("Mod", 28, [torch.from_numpy(a), torch.from_numpy(b)])
    with np.errstate(divide="ignore", invalid="ignore"):
        want = np.mod(a, b)
    got = out.numpy()
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)
    numbers = ~np.isnan(want)
    np.testing.assert_array_equal(np.signbit(got[numbers]), np.signbit(want[numbers]))


def test_pow_keeps_base_dtype_with_integer_exponent() -> None:
    (out,) = assert_matches_ort("Pow", [np.array([1.5, -2.0, 3.0], np.float32), np.array([2, 3, 0], np.int64)])
    np.testing.assert_allclose(out, [2.25, -8.0, 1.0])


@pytest.mark.parametrize("dtype", [np.uint32, np.uint64, np.int8])
def test_unsigned_and_small_int_arithmetic(dtype: type) -> None:
    a = np.array([5, 100, 7], dtype=dtype)
    b = np.array([3, 50, 9], dtype=dtype)
    for op in ("Add", "Mul", "Div", "Max", "Less"):
        assert_matches_ort(op, [a, b])


def test_uint64_order_is_unsigned_above_2_pow_63() -> None:
    big = np.array([2**63 + 5, 1], dtype=np.uint64)
    small = np.array([3, 2], dtype=np.uint64)
    (out,) = assert_matches_ort("Max", [big, small])
    np.testing.assert_array_equal(out, np.array([2**63 + 5, 2], dtype=np.uint64))


def test_variadic_max_three_inputs_with_broadcast() -> None:
    assert_matches_ort("Max", [_f32(3, 1), _f32(1, 4), _f32(4)])
    assert_matches_ort("Sum", [_f32(3, 1), _f32(1, 4), _f32(4)])
    assert_matches_ort("Mean", [_f32(3, 1), _f32(1, 4)])


def test_where_and_logic() -> None:
    cond = np.array([[True], [False]])
    assert_matches_ort("Where", [cond, _f32(2, 3), _f32(3)])
    a, b = np.array([True, True, False]), np.array([True, False, False])
    for op in ("And", "Or", "Xor"):
        assert_matches_ort(op, [a, b])
    assert_matches_ort("Not", [a])


def test_cast_float_to_int_truncates_and_to_bool_is_nonzero() -> None:
    x = np.array([2.7, -2.7, 0.4, -0.0, 3.0], dtype=np.float32)
    (ints,) = assert_matches_ort("Cast", [x], to=6)
    np.testing.assert_array_equal(ints, [2, -2, 0, 0, 3])
    (bools,) = assert_matches_ort("Cast", [x], to=9)
    np.testing.assert_array_equal(bools, [True, True, True, False, True])
    assert_matches_ort("Cast", [x], to=10)
    assert_matches_ort("Cast", [np.array([True, False])], to=1)


def test_cast_to_bfloat16_is_unsupported_and_names_op() -> None:
    with pytest.raises(UnsupportedOpError, match=r"Cast.*bfloat16"):
        run_op("Cast", 19, [torch.ones(2)], {"to": 16}, name="c0")


def test_bfloat16_input_is_unsupported() -> None:
    with pytest.raises(UnsupportedOpError, match=r"Add.*bfloat16"):
        run_op("Add", 14, [torch.ones(2, dtype=torch.bfloat16), torch.ones(2, dtype=torch.bfloat16)])


@pytest.mark.parametrize("op", ["ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2"])
@pytest.mark.parametrize("keepdims", [0, 1])
def test_reductions_axes_input_and_keepdims(op: str, keepdims: int) -> None:
    x = _f32(2, 3, 4)
    assert_matches_ort(op, [x, np.array([0, -1], np.int64)], keepdims=keepdims)
    assert_matches_ort(op, [x, None], keepdims=keepdims)


def test_reduce_axes_attribute_before_opset_18() -> None:
    assert_matches_ort("ReduceMean", [_f32(2, 3, 4)], opset=13, axes=[1], keepdims=0)


def test_reduce_noop_with_empty_axes_is_identity() -> None:
    x = _f32(2, 3)
    (out,) = assert_matches_ort("ReduceSum", [x, np.array([], np.int64)], noop_with_empty_axes=1)
    np.testing.assert_array_equal(out, x)


def test_reduce_max_of_empty_set_is_minus_inf() -> None:
    (out,) = run_op("ReduceMax", 18, [torch.zeros(2, 0, 4), torch.tensor([1])], {"keepdims": 1})
    assert out.shape == (2, 1, 4) and bool(torch.isneginf(out).all())


def test_topk_ties_pick_lower_index_first() -> None:
    x = np.array([[1, 3, 3, 2, 3], [0, 0, 0, 0, 0]], dtype=np.float32)
    values, indices = assert_matches_ort("TopK", [x, np.array([3], np.int64)], n_out=2)
    np.testing.assert_array_equal(indices, [[1, 2, 4], [0, 1, 2]])
    np.testing.assert_array_equal(values, [[3, 3, 3], [0, 0, 0]])
    _, smallest = assert_matches_ort("TopK", [x, np.array([2], np.int64)], n_out=2, largest=0)
    np.testing.assert_array_equal(smallest, [[0, 3], [0, 1]])


def test_argmax_select_last_index_and_keepdims() -> None:
    x = np.array([[1, 5, 5], [7, 7, 2]], dtype=np.float32)
    (first,) = assert_matches_ort("ArgMax", [x], axis=1, keepdims=0)
    np.testing.assert_array_equal(first, [1, 0])
    (last,) = assert_matches_ort("ArgMax", [x], axis=1, select_last_index=1)
    np.testing.assert_array_equal(last, [[2], [1]])
    assert_matches_ort("ArgMin", [x], axis=0)


@pytest.mark.parametrize(("exclusive", "reverse"), [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_cumsum_exclusive_reverse(exclusive: int, reverse: int) -> None:
    x = np.arange(1, 7, dtype=np.float32).reshape(2, 3)
    assert_matches_ort("CumSum", [x, np.array(1, np.int64)], exclusive=exclusive, reverse=reverse)
