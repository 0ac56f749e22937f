"""The parts of the plan format that schema version 2 adds for multi-device plans.

Per device (rank) a :class:`DeviceEntry` with its memory cap, the bytes the plan needs there
and the weights it holds (:class:`WeightSpec`, written to a safetensors shard of its own), and
per communication task a :class:`CommTask` with its peers. :mod:`cosched.codegen.planformat`
puts them in the :class:`~cosched.codegen.planformat.Plan` and derives their JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field

from cosched.codegen.planfields import CLOSED, Id, Sha

__all__ = ["COMM_OPS", "SHARD_FILE", "CommOp", "CommTask", "DeviceEntry", "WeightSpec"]

CommOp = Literal["transfer", "all_reduce", "all_gather", "all_to_all"]
COMM_OPS: dict[str, CommOp] = {
    "Transfer": "transfer", "AllReduce": "all_reduce", "AllGather": "all_gather", "AllToAll": "all_to_all",
}
"""The IR's communication op types (domain ``"cosched"``) and their names in a plan."""
SHARD_FILE = "weights/device{rank}.safetensors"
"""Where a saved plan keeps the weights of the device of rank ``rank`` (plan directory relative)."""


@dataclass(frozen=True)
class WeightSpec:
    """A weight one device holds: the graph-wide tensor (a slice of an initializer when its
    tenant is split), as stored in the device's shard file."""

    __pydantic_config__ = CLOSED

    tensor: str
    shape: tuple[Id, ...]
    dtype: str
    nbytes: Id


@dataclass(frozen=True)
class DeviceEntry:
    """One rank of a multi-device plan: device ``kind:index`` (``name`` from its spec).

    ``memory_bytes`` is the device's capacity (measured, or None or 0 when unknown) and
    ``cap_bytes`` the most the plan may use there (a user's cap, or None: the capacity).
    ``weight_bytes`` (the ``weights`` it holds) plus ``peak_activation_bytes`` (the most
    activation bytes alive at once, walking its tasks in issue order with the buffers'
    lifetimes) is what the plan needs there, never above the cap. ``weights_file`` (relative
    to the plan directory) and ``weights_sha256`` name the safetensors shard holding exactly
    ``weights``; they are set when the plan is saved (:func:`cosched.codegen.plan.save_plan`).
    """

    __pydantic_config__ = CLOSED

    rank: Id
    kind: Literal["cpu", "cuda"]
    index: Id
    name: str = ""
    memory_bytes: Id | None = None
    cap_bytes: Id | None = None
    weight_bytes: Id = 0
    peak_activation_bytes: Id = 0
    weights: tuple[WeightSpec, ...] = ()
    weights_file: Annotated[str, Field(min_length=1)] | None = None
    weights_sha256: Sha | None = None

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.index}"

    @property
    def needed_bytes(self) -> int:
        return self.weight_bytes + self.peak_activation_bytes

    @property
    def limit_bytes(self) -> int | None:
        """The most the plan may use on the device: its cap, else its capacity when known
        (a capacity of 0 means unknown, as a DeviceSpec that could not read it says)."""
        return self.cap_bytes if self.cap_bytes is not None else (self.memory_bytes or None)

    @property
    def shard_file(self) -> str | None:
        """The weight shard's path in the plan directory: ``weights_file`` once saved, else
        where saving writes it; None for a device without weights."""
        if self.weights_file is not None or not self.weights:
            return self.weights_file
        return SHARD_FILE.format(rank=self.rank)


@dataclass(frozen=True)
class CommTask:
    """A communication task (an op of domain ``"cosched"``) and its peers, by rank.

    ``transfer``: ``peers`` is ``(source rank, destination rank)``; the task runs on the
    destination, and the source posts a ``send`` instruction right after the producer of the
    tensor (none when both are one device; a graph input, weight or constant has no producer
    and is bound where it is read, so its transfer's source is its destination). Collectives (``all_reduce``, ``all_gather``,
    ``all_to_all``): the task is rank ``rank`` of collective ``group``; ``peers[r]`` is the
    device rank running rank ``r`` of the group (distinct devices). ``nbytes`` is the bytes
    the task moves (its input for a transfer, its output for a collective).
    """

    __pydantic_config__ = CLOSED

    task: Id
    op: CommOp
    peers: Annotated[tuple[Id, ...], Field(min_length=2)]
    nbytes: Id
    group: str = ""
    rank: Id | None = None
