"""Shape, creation and indexing ops against onnxruntime on one-node models, plus errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from single_node import assert_matches_ort

from cosched.errors import ShapeError, UnsupportedOpError
from cosched.ops import run_op

X = np.arange(24, dtype=np.float32).reshape(2, 3, 4)


def _i64(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


@pytest.mark.parametrize(
    ("starts", "ends", "axes", "steps"),
    [
        ((-1,), (-1000,), (2,), (-1,)),  # whole axis reversed, end clamped to -1
        ((10,), (0,), (1,), (-2,)),  # start clamped to size-1
        ((0, 1), (2**62, -1), (0, 2), (1, 2)),  # huge end clamped to size
        ((-2,), (1,), (-1,), (-1,)),  # negative axis, negative start
        ((3,), (1,), (2,), (1,)),  # empty result
    ],
)
def test_slice_negative_steps_and_clamping(starts: tuple, ends: tuple, axes: tuple, steps: tuple) -> None:
    assert_matches_ort("Slice", [X, _i64(*starts), _i64(*ends), _i64(*axes), _i64(*steps)])


def test_slice_reversal_values() -> None:
    (out,) = assert_matches_ort("Slice", [X, _i64(-1), _i64(-1000), _i64(2), _i64(-1)])
    np.testing.assert_array_equal(out, X[:, :, ::-1])


@pytest.mark.parametrize(("shape", "allowzero"), [((0, -1), 0), ((-1, 4), 0), ((4, 0, 2), 0), ((0, 4), 1)])
def test_reshape_zero_copies_dim_and_minus_one_infers(shape: tuple, allowzero: int) -> None:
    x = X if not allowzero else np.zeros((0, 2), np.float32)
    (out,) = assert_matches_ort("Reshape", [x, _i64(*shape)], allowzero=allowzero)
    if shape == (0, -1):
        assert out.shape == (2, 12)


def test_reshape_with_bad_size_names_op() -> None:
    with pytest.raises(ShapeError, match=r"Reshape \('r7'\).*\(2, 3, 4\)"):
        run_op("Reshape", 14, [torch.zeros(2, 3, 4), torch.tensor([5, -1])], name="r7")


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
def test_pad_modes(mode: str) -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    pads = _i64(1, 2, 2, 3)  # begin axis0, axis1, end axis0, axis1
    value = np.array(1.5, np.float32) if mode == "constant" else None
    assert_matches_ort("Pad", [x, pads, value], opset=19, mode=mode)


def test_pad_negative_crops_and_axes_input() -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert_matches_ort("Pad", [x, _i64(-1, 2, 0, -2)], mode="constant")
    assert_matches_ort("Pad", [x, _i64(1, 2), None, _i64(-1)], mode="edge")


def test_pad_unknown_mode_is_unsupported() -> None:
    with pytest.raises(UnsupportedOpError, match=r"Pad.*'mirror'"):
        run_op("Pad", 19, [torch.zeros(2, 2), torch.tensor([1, 1, 1, 1])], {"mode": "mirror"})


def test_split_by_sizes_and_num_outputs() -> None:
    x = np.arange(10, dtype=np.float32).reshape(2, 5)
    outs = assert_matches_ort("Split", [x, _i64(2, 3)], n_out=2, axis=1)
    assert [o.shape for o in outs] == [(2, 2), (2, 3)]
    outs = assert_matches_ort("Split", [x], n_out=3, axis=1, num_outputs=3)  # uneven: last is smaller
    assert [o.shape for o in outs] == [(2, 2), (2, 2), (2, 1)]
    outs = assert_matches_ort("Split", [x[:, :4]], n_out=2, opset=13, axis=1)
    assert [o.shape for o in outs] == [(2, 2), (2, 2)]



def test_gather_negative_indices_and_scalar_index() -> None:
    assert_matches_ort("Gather", [X, _i64(-1, 0, 1).reshape(3, 1)], axis=1)
    (out,) = assert_matches_ort("Gather", [X, np.array(-2, np.int64)], axis=2)
    assert out.shape == (2, 3)


def test_gather_elements_and_gather_nd_batch_dims() -> None:
    assert_matches_ort("GatherElements", [X, np.array([[[0, -1]], [[2, 1]]], np.int64)], axis=1)
    assert_matches_ort("GatherND", [X, np.array([[1], [0]], np.int64)], batch_dims=1)
    assert_matches_ort("GatherND", [X, np.array([[1, 2], [0, -1]], np.int64)])


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
def test_scatter_nd_reductions(reduction: str) -> None:
    data = np.arange(8, dtype=np.float32).reshape(4, 2) + 1
    indices = np.array([[1], [3], [1]] if reduction != "none" else [[1], [3]], np.int64)
    updates = np.full((len(indices), 2), 2.0, np.float32)
    assert_matches_ort("ScatterND", [data, indices, updates], reduction=reduction)


def test_expand_is_bidirectional_and_tile_repeats() -> None:
    (out,) = assert_matches_ort("Expand", [np.ones((3, 1), np.float32), _i64(2, 1, 4)])
    assert out.shape == (2, 3, 4)
    assert_matches_ort("Tile", [X, _i64(1, 2, 3)])


def test_squeeze_unsqueeze_flatten_transpose_concat() -> None:
    x = np.ones((1, 3, 1, 2), np.float32)
    assert_matches_ort("Squeeze", [x, _i64(-2)])
    assert_matches_ort("Squeeze", [x])
    (out,) = assert_matches_ort("Unsqueeze", [X, _i64(-1, 0)])
    assert out.shape == (1, 2, 3, 4, 1)
    assert_matches_ort("Flatten", [X], axis=-1)
    assert_matches_ort("Transpose", [X], perm=[2, 0, 1])
    assert_matches_ort("Concat", [X, X[:, :1]], axis=-2)


def test_squeeze_non_unit_axis_names_op() -> None:
    with pytest.raises(ShapeError, match=r"Squeeze.*size 3"):
        run_op("Squeeze", 13, [torch.zeros(1, 3), torch.tensor([1])])


def test_shape_start_end_size_and_creation_ops() -> None:
    (out,) = assert_matches_ort("Shape", [X], opset=15, start=-2, end=10)
    np.testing.assert_array_equal(out, [3, 4])
    assert_matches_ort("Size", [X])
    assert_matches_ort("ConstantOfShape", [_i64(2, 3)])
    assert_matches_ort("Range", [np.array(5, np.int32), np.array(-4, np.int32), np.array(-3, np.int32)])
    assert_matches_ort("Range", [np.array(0.5, np.float32), np.array(2.0, np.float32), np.array(0.25, np.float32)])
    assert_matches_ort("Trilu", [X, np.array(-1, np.int64)], upper=0)
    (ints,) = run_op("Constant", 13, [], {"value_ints": [1, 2]})
    assert ints.dtype == torch.int64 and ints.tolist() == [1, 2]
    (arr,) = run_op("Constant", 13, [], {"value": np.array([[1.5]], np.float16)})
    assert arr.dtype == torch.float16 and arr.shape == (1, 1)


def _range27(start: float, limit: float, delta: float, **attrs: int) -> np.ndarray:
    inputs = [torch.tensor(v, dtype=torch.float16) for v in (start, limit, delta)]
    (out,) = run_op("Range", 27, inputs, attrs)
    assert out.dtype == torch.float16
    return out.numpy()


def test_range_27_computes_float16_in_stash_type() -> None:
    # In float16 2048 + 1 == 2048; computed in float32 and cast back the range still advances.
    want = np.arange(2048, 2060, dtype=np.float32).astype(np.float16)
    np.testing.assert_array_equal(_range27(2048, 2060, 1), want)
    np.testing.assert_array_equal(_range27(2048, 2060, 1, stash_type=11), want)
    # stash_type decides the rounding: 1 + 2**-11 + 2**-24 (element 2**13 + 1) is a tie, rounded
    # down to even, in float32 and then 1 + 2**-11 is one in float16; from float64 it rounds up.
    exact = 1 + np.arange(2**14, dtype=np.float64) * 2.0**-24
    as_float, as_double = _range27(1, 1 + 2**-10, 2**-24), _range27(1, 1 + 2**-10, 2**-24, stash_type=11)
    np.testing.assert_array_equal(as_float, exact.astype(np.float32).astype(np.float16))
    np.testing.assert_array_equal(as_double, exact.astype(np.float16))
    assert as_float[2**13 + 1] == 1 and as_double[2**13 + 1] == 1 + 2**-10


def test_range_27_rejects_other_stash_types_and_keeps_other_dtypes() -> None:
    with pytest.raises(UnsupportedOpError, match=r"Range.*stash_type must be 1 \(float\) or 11 \(double\), found 10"):
        _range27(0, 4, 1, stash_type=10)
    (out,) = run_op("Range", 27, [torch.tensor(5), torch.tensor(-4), torch.tensor(-3)], {"stash_type": 10})
    assert out.tolist() == [5, 2, -1]


def test_constant_string_is_unsupported() -> None:
    with pytest.raises(UnsupportedOpError, match=r"Constant.*value_string"):
        run_op("Constant", 13, [], {"value_string": "hi"})
