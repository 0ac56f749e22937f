"""Splitting a tenant over several devices: IR passes that insert communication ops.

A :class:`SplitSpec` says how one tenant is split over ``world`` shard slots; the search
maps slots to devices. :func:`apply_splits` applies specs to an imported, unfused graph and
returns a new verified graph in which every op of a split tenant has its
:attr:`~cosched.ir.graph.Op.shard` and data crosses shards only through communication ops
(domain ``"cosched"``: ``Transfer``, ``AllReduce``, ``AllGather``; see
:mod:`cosched.ops.implementations.comm`), so the sequential reference runs a split graph in
one process and its outputs can be compared with the unsplit graph's. The passes:

* :mod:`~cosched.ir.sharding.pipeline`: contiguous stages with Transfers between them;
* :mod:`~cosched.ir.sharding.tensor`: Megatron-style column/row splits of MatMul/Gemm (MLP
  and attention blocks, by whole heads) and output-channel splits of Conv;
* :mod:`~cosched.ir.sharding.embedding`: row-wise or table-wise sharding of embedding Gathers.

Weights of split ops are slices of their initializers (:attr:`WeightRef.slice`).
"""

from __future__ import annotations

from cosched.ir.sharding._apply import Split, apply_splits, shard_weights, split_options
from cosched.ir.sharding._rewrite import bounds
from cosched.ir.sharding._spec import SplitKind, SplitSpec

__all__ = ["Split", "SplitKind", "SplitSpec", "apply_splits", "bounds", "shard_weights", "split_options"]
