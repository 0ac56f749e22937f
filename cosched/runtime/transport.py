"""torch.distributed calls for a rank's communication steps: the one place that calls it.

:class:`TorchTransport` does each :class:`~cosched.runtime.comm.CommStep` with gloo (CPU) or
NCCL (CUDA): sends (posted on CPU, :meth:`TorchTransport.finish` waits for them at the end of
a round), receives, all-reduce, all-gather (uneven parts padded, as both backends need equal
sizes) and all-to-all, giving each device's op what the in-process kernels of
:mod:`cosched.ops.implementations.comm` compute from every rank's input.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import torch

from cosched.codegen.plan import Plan
from cosched.errors import RuntimeFailure
from cosched.runtime.comm import CommStep, peer_error

__all__ = ["TorchTransport"]


class TorchTransport:
    """torch.distributed calls for :class:`CommStep` s, in process groups whose calls give up
    after ``timeout_s`` (the default group keeps the longer start-up timeout it was made with).

    Every rank must create the same groups in the same order (torch.distributed asks it): the
    constructor makes the group of every rank, :meth:`create_groups` one per other set of
    collective peers of the plan.
    """

    def __init__(self, device: torch.device, timeout_s: float = 60.0) -> None:
        import torch.distributed as dist

        self.dist = dist
        self.device = device
        self.world = dist.get_world_size()
        self.timeout = timedelta(seconds=timeout_s)
        # every call of a run goes through groups with the run's timeout (start-up may take longer)
        self.backend = "nccl" if device.type == "cuda" else "gloo"
        self.everyone = dist.new_group(list(range(self.world)), timeout=self.timeout, backend=self.backend)
        self._groups: dict[tuple[int, ...], Any] = {}
        self._posted: list[tuple[CommStep, Any]] = []

    def create_groups(self, plan: Plan) -> None:
        sets = sorted({tuple(sorted(int(p) for p in c.peers)) for c in plan.comms if c.op != "transfer"})
        for ranks in sets:
            if len(ranks) == self.world:
                self._groups[ranks] = self.everyone
            else:
                self._groups[ranks] = self.dist.new_group(list(ranks), timeout=self.timeout, backend=self.backend)

    def run(self, step: CommStep, value: torch.Tensor | None) -> torch.Tensor | None:
        """Do ``step`` with ``value`` (its source tensor, None for a receive); its result."""
        dist, kind = self.dist, step.kind
        dtype = torch.empty((), dtype=_torch_dtype(step.dtype)).dtype
        if kind == "send":
            assert value is not None
            if self.device.type == "cpu":  # posted: the thread goes on; finish() waits for it
                self._posted.append((step, dist.isend(value.contiguous(), step.peers[0], group=self.everyone,
                                                              tag=step.task)))
            else:  # NCCL: enqueued on the communication stream, the host never waits
                dist.send(value.contiguous(), step.peers[0], group=self.everyone, tag=step.task)
            return None
        if kind == "recv":
            out = torch.empty(step.shapes[0], dtype=dtype, device=self.device)
            dist.recv(out, step.peers[0], group=self.everyone, tag=step.task)
            return out
        assert value is not None
        ordered = tuple(sorted(step.peers))
        group = self._groups.get(ordered)
        slot = [ordered.index(p) for p in step.peers]  # group rank -> torch's rank in the group
        if kind == "all_reduce":
            out = value.clone(memory_format=torch.contiguous_format)
            dist.all_reduce(out, group=group)
            return out
        axis = step.axis % max(1, len(step.shapes[0]))
        if kind == "all_gather":
            widest = max(s[axis] for s in step.shapes)
            padded = _pad(value.contiguous(), axis, widest)
            parts = [torch.empty_like(padded) for _ in step.peers]
            dist.all_gather(parts, padded, group=group)
            pieces = [parts[slot[r]].narrow(axis, 0, step.shapes[r][axis]) for r in range(len(step.peers))]
            return torch.cat(pieces, dim=axis)
        if kind == "all_to_all":  # chunks padded to the widest: gloo needs one size for all
            world = len(step.peers)
            widest = max(max(_split_sizes(s[axis], world)) for s in step.shapes)
            mine = torch.tensor_split(value, world, dim=axis)
            ins: list[torch.Tensor] = [torch.empty(0)] * world
            outs: list[torch.Tensor] = [torch.empty(0)] * world
            for r in range(world):
                ins[slot[r]] = _pad(mine[r].contiguous(), axis, widest)
                outs[slot[r]] = torch.empty_like(ins[slot[r]])
            dist.all_to_all(outs, ins, group=group)
            return torch.cat([outs[slot[r]].narrow(axis, 0, _split_sizes(step.shapes[r][axis], world)[step.index])
                              for r in range(world)], dim=axis)
        raise RuntimeFailure(f"{step.label}: unknown communication {kind!r}")


    def barrier(self) -> None:
        """Every rank here (with the run's timeout); a rank that is gone or late is named so."""
        try:
            self.dist.barrier(group=self.everyone)
        except Exception as exc:
            raise RuntimeFailure(f"waiting for every rank between rounds failed: {peer_error(exc)}") from exc

    def finish(self) -> None:
        """Wait for every send posted in this round (the receivers have them)."""
        posted, self._posted = self._posted, []
        for step, work in posted:
            try:
                work.wait()
            except Exception as exc:
                raise RuntimeFailure(f"{step.describe()} failed: {peer_error(exc)}") from exc


def _split_sizes(n: int, world: int) -> list[int]:
    """The sizes ``torch.tensor_split`` cuts ``n`` into: the first ``n % world`` one longer."""
    return [n // world + (1 if r < n % world else 0) for r in range(world)]


def _pad(x: torch.Tensor, axis: int, size: int) -> torch.Tensor:
    if x.shape[axis] == size:
        return x
    shape = list(x.shape)
    shape[axis] = size - x.shape[axis]
    return torch.cat([x, x.new_zeros(shape)], dim=axis)


def _torch_dtype(name: str) -> torch.dtype:
    from cosched.execution.bindings import torch_dtype

    return torch_dtype(name)
