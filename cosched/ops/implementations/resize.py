"""Resize (opset 11 and later): nearest, linear and cubic, every coordinate transformation mode.

Resize is separable, so each resized axis is handled on its own: for every output position
the source coordinate is computed per ``coordinate_transformation_mode``, then a small
kernel of neighbour indices and weights (1-hot for nearest, 2 taps for linear, 4 for cubic,
wider when antialiasing a downsample). The taps are built in numpy from the axis lengths
alone (cheap: output length x taps) and applied to the tensor with one gather and a
weighted sum, following the ONNX reference implementation's per-axis formulation.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from cosched.errors import UnsupportedOpError
from cosched.ops.registry import MAX_OPSET, OpContext, register

__all__: list[str] = []

_MODES = ("nearest", "linear", "cubic")


def _coeffs(ctx: OpContext, ratios: np.ndarray, scale: float) -> np.ndarray:
    """Kernel weights, shape (len(ratios), taps), for fractional offsets ``ratios`` in (0, 1]."""
    mode = str(ctx.attr("mode", "nearest"))
    antialias = bool(ctx.attr("antialias", 0)) and scale < 1.0
    r = ratios[:, None]
    if mode == "nearest":
        nearest = str(ctx.attr("nearest_mode", "round_prefer_floor"))
        upper = {
            "round_prefer_floor": r > 0.5,
            "round_prefer_ceil": r >= 0.5,
            "floor": np.zeros_like(r, dtype=bool),
            "ceil": np.ones_like(r, dtype=bool),
        }.get(nearest)
        if upper is None:
            raise UnsupportedOpError(f"op {ctx.name!r} (Resize): unknown nearest_mode {nearest!r}")
        upper = upper | (r == 1.0)
        return np.concatenate([~upper, upper], axis=1).astype(np.float64)
    if mode == "linear":
        if not antialias:
            return np.concatenate([1 - r, r], axis=1)
        start = math.floor(-1 / scale) + 1
        args = (np.arange(start, 2 - start)[None, :] - r) * scale
        w = np.clip(1 - np.abs(args), 0, 1)
        return w / w.sum(axis=1, keepdims=True)
    a = float(ctx.attr("cubic_coeff_a", -0.75))
    if antialias:
        start = math.floor(-2 / scale) + 1
        x = np.abs(scale * (np.arange(start, 2 - start)[None, :] - r))
    else:
        x = np.abs(np.concatenate([r + 1, r, 1 - r, 2 - r], axis=1))
    w = np.where(
        x <= 1,
        (a + 2) * x**3 - (a + 3) * x**2 + 1,
        np.where(x < 2, a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a, 0.0),
    )
    return w / w.sum(axis=1, keepdims=True) if antialias else w


def _source_coords(
    ctx: OpContext, out_len: int, in_len: int, scale: float, roi: tuple[float, float] | None
) -> tuple[np.ndarray, np.ndarray | None]:
    # Coordinates are computed in float32, as onnxruntime does: with a float32 scale such as
    # 0.6, 3 / 0.6 is exactly 5 in float32 but 4.9999998 in float64, a different nearest pixel.
    # The "resized length" is scale * in_len (ONNX spec and reference; ONNX's node cases test
    # it). onnxruntime uses the integer output length instead, so the two differ for
    # align_corners / tf_crop_and_resize when scale * in_len is not an integer.
    mode = str(ctx.attr("coordinate_transformation_mode", "half_pixel"))
    y = np.arange(out_len, dtype=np.float32)
    scale = np.float32(scale)
    out_f = scale * np.float32(in_len)
    if mode == "align_corners":
        return (np.zeros(out_len) if out_f == 1 else y * (in_len - 1) / (out_f - 1)), None
    if mode == "asymmetric":
        return y / scale, None
    if mode == "pytorch_half_pixel":
        return (np.full(out_len, -0.5) if out_f == 1 else (y + 0.5) / scale - 0.5), None
    if mode == "half_pixel":
        return (y + 0.5) / scale - 0.5, None
    if mode == "tf_half_pixel_for_nn":
        return (y + 0.5) / scale, None
    if mode == "half_pixel_symmetric":
        offset = np.float32(in_len / 2) * (1 - np.float32(out_len) / out_f)
        return offset + (y + 0.5) / scale - 0.5, None
    if mode == "tf_crop_and_resize":
        lo, hi = roi if roi is not None else (0.0, 1.0)
        if out_f == 1:
            x = np.full(out_len, (hi - lo) * (in_len - 1) / 2)
        else:
            x = y * (hi - lo) * (in_len - 1) / (out_f - 1)
        x = x + lo * (in_len - 1)
        return x, (x < 0) | (x > in_len - 1)
    raise UnsupportedOpError(
        f"op {ctx.name!r} (Resize): unknown coordinate_transformation_mode {mode!r}"
    )


def _resize_axis(
    ctx: OpContext, x: torch.Tensor, axis: int, scale: float, out_len: int,
    roi: tuple[float, float] | None,
) -> torch.Tensor:
    in_len = x.shape[axis]
    coords, extrapolated = _source_coords(ctx, out_len, in_len, scale, roi)
    coords = coords.astype(np.float64)
    base = np.floor(coords)
    ratios = np.where(coords == base, 1.0, coords - base)
    w = _coeffs(ctx, ratios, scale)
    taps = w.shape[1]
    pad = math.ceil(taps / 2)
    padded = coords + pad
    p = np.floor(padded).astype(np.int64)
    frac = padded - p
    if taps % 2 == 0:
        offset = np.where(frac == 0, -(taps // 2), -(taps // 2) + 1)
    else:
        offset = np.where(frac <= 0.5, -((taps - 1) // 2), -((taps - 1) // 2) + 1)
    idx = (p + offset)[:, None] + np.arange(taps)[None, :] - pad
    if ctx.attr("exclude_outside", 0):
        w = np.where((idx < 0) | (idx >= in_len), 0.0, w)
        total = w.sum(axis=1, keepdims=True)
        w = w / np.where(total == 0, 1.0, total)
    idx = np.clip(idx, 0, in_len - 1)
    gathered = x.index_select(axis, torch.from_numpy(idx.reshape(-1)).to(x.device))
    gathered = gathered.reshape((*x.shape[:axis], out_len, taps, *x.shape[axis + 1:]))
    shape = (1,) * axis + (out_len, taps) + (1,) * (x.dim() - axis - 1)
    weights = torch.from_numpy(w.reshape(shape)).to(device=x.device, dtype=x.dtype)
    y = (gathered * weights).sum(dim=axis + 1)
    if extrapolated is not None and extrapolated.any():
        mask_shape = (1,) * axis + (out_len,) + (1,) * (x.dim() - axis - 1)
        mask = torch.from_numpy(extrapolated.reshape(mask_shape)).to(x.device)
        y = torch.where(mask, torch.tensor(float(ctx.attr("extrapolation_value", 0.0)), dtype=y.dtype, device=y.device), y)
    return y


def _targets(
    ctx: OpContext, x: torch.Tensor, scales: torch.Tensor | None, sizes: torch.Tensor | None
) -> tuple[list[int], list[float], list[int]]:
    """Resized axes, their scales and their output lengths."""
    rank = x.dim()
    axes = [int(a) % rank for a in ctx.attr("axes", None) or range(rank)]
    if sizes is not None and sizes.numel() > 0:
        lengths = [int(v) for v in sizes.tolist()]
        factors = [lengths[i] / x.shape[a] for i, a in enumerate(axes)]
        policy = str(ctx.attr("keep_aspect_ratio_policy", "stretch"))
        if policy != "stretch":
            pick = min if policy == "not_larger" else max
            s = pick(factors)
            factors = [s] * len(axes)
            lengths = [int(s * x.shape[a] + 0.5) for a in axes]
        return axes, factors, lengths
    if scales is None or scales.numel() == 0:
        raise UnsupportedOpError(
            f"op {ctx.name!r} (Resize): expected scales or sizes, but both are empty"
        )
    factors = [float(v) for v in scales.tolist()]
    return axes, factors, [int(f * x.shape[a]) for f, a in zip(factors, axes, strict=True)]


def _resize(
    ctx: OpContext, x: torch.Tensor, roi: torch.Tensor | None,
    scales: torch.Tensor | None, sizes: torch.Tensor | None,
) -> torch.Tensor:
    if str(ctx.attr("mode", "nearest")) not in _MODES:
        raise UnsupportedOpError(
            f"op {ctx.name!r} (Resize): mode must be one of {_MODES}, got {ctx.attr('mode')!r}"
        )
    axes, factors, lengths = _targets(ctx, x, scales, sizes)
    roi_list = roi.tolist() if roi is not None and roi.numel() else None
    work = x if x.is_floating_point() else x.to(torch.float64)
    for i, axis in enumerate(axes):
        axis_roi = None if roi_list is None else (roi_list[i], roi_list[i + len(axes)])
        identity = math.isclose(factors[i], 1.0) and lengths[i] == work.shape[axis]
        if identity and (axis_roi is None or axis_roi == (0.0, 1.0)):
            continue
        work = _resize_axis(ctx, work, axis, factors[i], lengths[i], axis_roi)
    if work.dtype == x.dtype:
        return work
    info = torch.iinfo(x.dtype)
    return work.clamp(info.min, info.max).to(x.dtype)


@register("Resize", 11, MAX_OPSET)
def resize(
    ctx: OpContext, x: torch.Tensor, roi: torch.Tensor | None = None,
    scales: torch.Tensor | None = None, sizes: torch.Tensor | None = None,
) -> torch.Tensor:
    return _resize(ctx, x, roi, scales, sizes)
