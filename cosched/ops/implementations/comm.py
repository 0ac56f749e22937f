"""Communication ops of split graphs (domain ``"cosched"``), as the sequential reference runs them.

A split (:mod:`cosched.ir.sharding`) inserts these between the shards of a tenant. Each
rank's op of a collective lists every rank's input, so in one process it computes its
output from all of them: a shard's split can be checked against the unsplit graph before
any process starts. A distributed runtime gives rank r only its own input and calls the
torch.distributed collective instead.

* ``Transfer(x) -> y``, attrs ``src``, ``dst``: y is x, moved from shard src to shard dst.
* ``AllReduce(x_0..x_{w-1}) -> y_r``: the sum of the inputs.
* ``AllGather(x_0..x_{w-1}) -> y_r``, attr ``axis``: the inputs concatenated on ``axis``.
* ``AllToAll(x_0..x_{w-1}) -> y_r``, attrs ``rank``, ``axis``: chunk ``rank`` of each input,
  split on ``axis`` into ``world`` chunks (as ``torch.tensor_split`` does), concatenated.
"""

from __future__ import annotations

import torch

from cosched.errors import ShapeError
from cosched.ops.implementations.common import norm_axis
from cosched.ops.registry import OpContext, register

DOMAIN = "cosched"

Tensor = torch.Tensor


def _world(ctx: OpContext, xs: tuple[Tensor, ...]) -> int:
    world = int(ctx.attr("world", len(xs)))
    if world != len(xs):
        raise ShapeError(f"op {ctx.op_type} ({ctx.name!r}): world is {world} but it has {len(xs)} inputs; "
                         "a collective lists one input per rank")
    return world


@register("Transfer", domain=DOMAIN)
def transfer(ctx: OpContext, x: Tensor) -> Tensor:
    """In one process a move is a copy: the receiver owns its own buffer."""
    return x.clone()


@register("AllReduce", domain=DOMAIN)
def all_reduce(ctx: OpContext, *xs: Tensor) -> Tensor:
    _world(ctx, xs)
    total = xs[0].clone()
    for x in xs[1:]:
        total = total + x
    return total


@register("AllGather", domain=DOMAIN)
def all_gather(ctx: OpContext, *xs: Tensor) -> Tensor:
    _world(ctx, xs)
    axis = norm_axis(ctx, int(ctx.attr("axis", 0)), xs[0].dim())
    return torch.cat(xs, dim=axis)


@register("AllToAll", domain=DOMAIN)
def all_to_all(ctx: OpContext, *xs: Tensor) -> Tensor:
    world = _world(ctx, xs)
    rank = int(ctx.attr("rank", 0))
    axis = norm_axis(ctx, int(ctx.attr("axis", 0)), xs[0].dim())
    return torch.cat([torch.tensor_split(x, world, dim=axis)[rank] for x in xs], dim=axis)
