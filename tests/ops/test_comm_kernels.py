"""The communication kernels (domain "cosched") as the sequential reference runs them."""

from __future__ import annotations

import pytest
import torch

from cosched.errors import ShapeError
from cosched.ops.registry import run_op


def _run(op_type: str, *xs: torch.Tensor, **attrs: object) -> torch.Tensor:
    (out,) = run_op(op_type, 1, list(xs), attrs, domain="cosched")
    assert out is not None
    return out


def test_transfer_is_a_copy() -> None:
    x = torch.arange(4.0)
    y = _run("Transfer", x, src=0, dst=1)
    assert torch.equal(y, x) and y.data_ptr() != x.data_ptr()


def test_all_reduce_sums_every_rank_input() -> None:
    xs = [torch.full((2, 3), float(r + 1)) for r in range(3)]
    assert torch.equal(_run("AllReduce", *xs, group="g", rank=1, world=3), torch.full((2, 3), 6.0))


def test_all_gather_concatenates_uneven_parts_on_the_axis() -> None:
    xs = [torch.zeros(2, 3), torch.ones(2, 2)]
    y = _run("AllGather", *xs, group="g", rank=0, world=2, axis=-1)
    assert y.shape == (2, 5) and y[:, 3:].eq(1).all() and y[:, :3].eq(0).all()


def test_all_to_all_takes_each_inputs_chunk_of_the_rank() -> None:
    xs = [torch.arange(6.0) + 10 * r for r in range(3)]
    y = _run("AllToAll", *xs, group="g", rank=2, world=3, axis=0)
    assert y.tolist() == [4.0, 5.0, 14.0, 15.0, 24.0, 25.0]


def test_a_collective_needs_one_input_per_rank() -> None:
    with pytest.raises(ShapeError, match="world is 3 but it has 2 inputs"):
        _run("AllReduce", torch.zeros(1), torch.zeros(1), group="g", rank=0, world=3)
