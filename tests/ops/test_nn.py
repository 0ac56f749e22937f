"""Tricky NN-op semantics checked against onnxruntime on tiny inline models.

ONNX's node cases cover most ops (tests/ops/test_conformance.py); these add the variants
they miss or generate only at opsets cosched does not claim (Einsum's cases are opset 28),
plus the backend's own contract (one error listing every unsupported op, inference only).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import cosched.onnx_backend
from cosched.errors import UnsupportedOpError

RNG = np.random.default_rng(0)


def _model(
    op: str, inputs: dict[str, np.ndarray], opset: int, n_outputs: int = 1, **attrs: object
) -> onnx.ModelProto:
    """One node ``op`` reading ``inputs`` in order; an input named ``_k`` is omitted (``""``)."""
    names = ["" if n.startswith("_") else n for n in inputs]
    node = helper.make_node(op, names, [f"y{i}" for i in range(n_outputs)], name="n0", **attrs)
    graph = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
            for n, v in inputs.items()
            if not n.startswith("_")
        ],
        [helper.make_empty_tensor_value_info(f"y{i}") for i in range(n_outputs)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)


def _check(op: str, inputs: dict[str, np.ndarray], opset: int, n_outputs: int = 1, **attrs: object) -> None:
    model = _model(op, inputs, opset, n_outputs, **attrs)
    expected = ort.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    ).run(None, {n: v for n, v in inputs.items() if not n.startswith("_")})
    got = cosched.onnx_backend.prepare(model).run(
        [v for n, v in inputs.items() if not n.startswith("_")]
    )
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert g.shape == e.shape and g.dtype == e.dtype
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5)


def _rand(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID"])
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_conv_auto_pad_with_stride(auto_pad: str, rank: int) -> None:
    x = _rand(1, 4, *[7] * rank)
    w = _rand(6, 2, *[4] * rank)
    _check("Conv", {"x": x, "w": w}, 22, auto_pad=auto_pad, strides=[2] * rank, group=2)


def test_conv_asymmetric_pads_dilation_bias() -> None:
    x, w, b = _rand(2, 3, 9, 8), _rand(5, 3, 3, 2), _rand(5)
    _check("Conv", {"x": x, "w": w, "b": b}, 11, pads=[0, 2, 3, 1], dilations=[2, 1], strides=[1, 2])


@pytest.mark.parametrize(
    "attrs",
    [
        {"strides": [2, 2], "output_padding": [1, 0]},
        {"strides": [3, 2], "pads": [1, 0, 2, 1], "dilations": [1, 2]},
        {"strides": [2, 2], "auto_pad": "SAME_UPPER"},
        {"strides": [2, 2], "output_shape": [9, 10]},
        {"strides": [1, 1], "group": 2},
    ],
)
def test_conv_transpose_geometry(attrs: dict[str, object]) -> None:
    x, w, b = _rand(1, 4, 4, 5), _rand(4, 3, 3, 3), _rand(6 if attrs.get("group") else 3)
    _check("ConvTranspose", {"x": x, "w": w, "b": b}, 22, **attrs)


@pytest.mark.parametrize(
    "attrs",
    [
        {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1},
        {"kernel_shape": [3, 2], "strides": [2, 2], "pads": [1, 0, 1, 1], "ceil_mode": 1},
        {"kernel_shape": [2, 2], "dilations": [2, 2], "pads": [1, 1, 1, 1]},
        {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_LOWER"},
    ],
)
def test_max_pool_with_indices(attrs: dict[str, object]) -> None:
    _check("MaxPool", {"x": _rand(2, 3, 8, 7)}, 22, n_outputs=2, **attrs)


def test_max_pool_indices_column_major() -> None:
    _check("MaxPool", {"x": _rand(1, 2, 5, 6)}, 12, n_outputs=2, kernel_shape=[2, 2], storage_order=1)


@pytest.mark.parametrize("count_include_pad", [0, 1])
@pytest.mark.parametrize("ceil_mode", [0, 1])
def test_average_pool_padding_counts(count_include_pad: int, ceil_mode: int) -> None:
    _check(
        "AveragePool", {"x": _rand(1, 2, 7, 8)}, 19, kernel_shape=[3, 3], strides=[2, 2],
        pads=[1, 0, 1, 1], count_include_pad=count_include_pad, ceil_mode=ceil_mode,
    )


_NEAREST_MODES = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]
_COORD_MODES = ["half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel"]


@pytest.mark.parametrize("nearest_mode", _NEAREST_MODES)
@pytest.mark.parametrize("coord", _COORD_MODES)
def test_resize_nearest_modes(nearest_mode: str, coord: str) -> None:
    # onnxruntime's align_corners divides by the integer output length, ONNX's reference by
    # scale * length; they agree when that product is an integer, as it is for 2 x 5 and 0.5 x 8.
    scales = np.array([1, 1, 2.0, 0.5] if coord == "align_corners" else [1, 1, 1.7, 0.6], np.float32)
    _check(
        "Resize", {"x": _rand(1, 2, 5, 8), "roi": np.zeros(0, np.float32), "scales": scales}, 13,
        mode="nearest", nearest_mode=nearest_mode, coordinate_transformation_mode=coord,
    )


@pytest.mark.parametrize("coord", [*_COORD_MODES, "half_pixel_symmetric"])
def test_resize_linear_sizes(coord: str) -> None:
    sizes = np.array([1, 2, 11, 3], dtype=np.int64)
    _check(
        "Resize", {"x": _rand(1, 2, 5, 7), "_roi": np.zeros(0), "_scales": np.zeros(0), "sizes": sizes},
        19, mode="linear", coordinate_transformation_mode=coord,
    )


def test_resize_nearest_integer_upsample_uint8() -> None:
    x = RNG.integers(0, 255, (1, 3, 4, 4), dtype=np.uint8)
    scales = np.array([1, 1, 2, 2], dtype=np.float32)
    _check("Resize", {"x": x, "roi": np.zeros(0, np.float32), "scales": scales}, 18, mode="nearest")


@pytest.mark.parametrize(
    ("equation", "shapes"),
    [
        ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
        ("...ij,...jk", [(2, 3, 4), (2, 4, 5)]),
        ("ii->i", [(4, 4)]),
        ("bhqd, bhkd -> bhqk", [(1, 2, 3, 4), (1, 2, 5, 4)]),
        ("i,j->ij", [(3,), (4,)]),
    ],
)
def test_einsum(equation: str, shapes: list[tuple[int, ...]]) -> None:
    inputs = {f"x{i}": _rand(*s) for i, s in enumerate(shapes)}
    _check("Einsum", inputs, 12, equation=equation)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize(("opset", "axis"), [(11, 1), (11, 2), (13, 1), (13, -2)])
def test_softmax_axis_semantics_change_at_13(op: str, opset: int, axis: int) -> None:
    _check(op, {"x": _rand(2, 3, 4)}, opset, axis=axis)


def test_gemm_transposed_with_broadcast_bias() -> None:
    a, b, c = _rand(4, 3), _rand(5, 4), _rand(5)
    _check("Gemm", {"a": a, "b": b, "c": c}, 13, transA=1, transB=1, alpha=0.5, beta=2.0)


def test_batch_norm_and_instance_norm() -> None:
    x = _rand(2, 3, 4, 5)
    scale, bias, mean = _rand(3), _rand(3), _rand(3)
    var = np.abs(_rand(3)) + 0.1
    _check("BatchNormalization", {"x": x, "s": scale, "b": bias, "m": mean, "v": var}, 15, epsilon=1e-3)
    _check("InstanceNormalization", {"x": x, "s": scale, "b": bias}, 6)


def test_layer_norm_outputs_mean_and_inv_std() -> None:
    x, scale, bias = _rand(2, 3, 4), _rand(3, 4), _rand(3, 4)
    _check("LayerNormalization", {"x": x, "s": scale, "b": bias}, 17, n_outputs=3, axis=1)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu(approximate: str) -> None:
    _check("Gelu", {"x": _rand(3, 5)}, 20, approximate=approximate)


def test_clip_with_only_max_input() -> None:
    node = helper.make_node("Clip", ["x", "", "hi"], ["y"], name="clip")
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [6])],
        [onnx.numpy_helper.from_array(np.array(0.5, np.float32), "hi")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    x = np.array([-2, -0.5, 0, 0.4, 0.6, 3], np.float32)
    (y,) = cosched.onnx_backend.prepare(model).run([x])
    np.testing.assert_array_equal(y, np.minimum(x, 0.5))


def test_unsupported_ops_are_all_listed_before_running() -> None:
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="fine"),
        helper.make_node("LSTMish", ["a"], ["b"], name="first_bad"),
        helper.make_node("Relu", ["b"], ["c"], name="fine2"),
        helper.make_node("NonMaxSuppression", ["c"], ["y"], name="second_bad"),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(UnsupportedOpError) as err:
        cosched.onnx_backend.prepare(model)
    message = str(err.value)
    assert "LSTMish" in message and "'first_bad'" in message
    assert "NonMaxSuppression" in message and "'second_bad'" in message
    assert "fine" not in message.replace("first_bad", "")


def test_dropout_training_mode_is_refused_but_inference_mask_is_all_true() -> None:
    x = _rand(3, 4)
    ratio, on = np.array(0.5, np.float32), np.array(True)
    model = _model("Dropout", {"x": x, "r": ratio, "t": on}, 13, n_outputs=2)
    with pytest.raises(UnsupportedOpError, match=r"Dropout.*training_mode"):
        cosched.onnx_backend.prepare(model).run([x, ratio, on])
    y, mask = cosched.onnx_backend.prepare(model).run([x, ratio, np.array(False)])
    np.testing.assert_array_equal(y, x)
    assert mask.dtype == np.bool_ and mask.all()


def test_batch_norm_training_mode_is_refused() -> None:
    x = _rand(2, 3)
    stats = {n: np.ones(3, np.float32) for n in ("s", "b", "m", "v")}
    model = _model("BatchNormalization", {"x": x, **stats}, 15, training_mode=1)
    with pytest.raises(UnsupportedOpError, match=r"BatchNormalization.*training"):
        cosched.onnx_backend.prepare(model).run([x, *stats.values()])


def test_run_node_follows_the_given_opset() -> None:
    x = _rand(2, 3, 4)
    node = helper.make_node("Softmax", ["x"], ["y"], name="sm", axis=1)
    (legacy,) = cosched.onnx_backend.run_node(node, [x], opset_version=11)
    (modern,) = cosched.onnx_backend.run_node(node, [x], opset_version=13)
    np.testing.assert_allclose(legacy.reshape(2, 12).sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(modern.sum(axis=1), 1.0, rtol=1e-5)
    assert not np.allclose(legacy, modern)
