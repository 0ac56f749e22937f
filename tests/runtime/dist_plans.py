"""Multi-device plans for the distributed runtime's tests, saved with their weight shards.

``split_plan`` lowers the zoo with chosen splits (a bert split tensor-parallel, a dlrm with
row-sharded embedding tables, a resnet50 cut into pipeline stages) onto two CPU ranks, with
whole tenants placed on either; ``loopback`` runs every rank of a saved plan in this process,
one thread each, over an in-memory stand-in for torch.distributed.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cosched import zoo
from cosched.codegen import emit_python, lower, save_plan
from cosched.codegen.plan import Plan, load_plan
from cosched.costmodel import DeviceSpec, RooflineModel
from cosched.ir import analyse, fuse, load_models
from cosched.ir.sharding import SplitSpec, apply_splits
from cosched.runtime.comm import CommStep
from cosched.search import CostTable
from cosched.search.decoder import DecoderKnobs, decode

V100 = Path(__file__).resolve().parents[2] / "benchmarks" / "devices" / "v100-sxm2-16gb.json"
"""A stored GPU spec: CUDA plans are lowered for it on machines without a GPU."""
TWO_CPUS = [{"kind": "cpu", "index": 0}, {"kind": "cpu", "index": 1}]

SPLITS = {
    "bert": SplitSpec("tensor", "bert", 2),
    "dlrm": SplitSpec("embedding", "dlrm", 2, {"mode": "row"}),
    "resnet50": SplitSpec("pipeline", "resnet50", 2),
}


def split_plan(out: Path, names: Sequence[str], split: Sequence[str], *, size: str = "tiny", streams: int = 2,
               devices: Sequence[Mapping[str, Any]] = TWO_CPUS, seed: int = 0) -> Path:
    """Tenants ``names`` of the zoo, those in ``split`` split as :data:`SPLITS` says and the
    others placed whole (alternately on rank 1 and rank 0), lowered onto ``devices`` and saved
    to ``out`` with each rank's weight shard."""
    models = [zoo.export(n, size=size) for n in names]
    specs = [SPLITS[n] for n in split]
    graph = analyse(fuse(apply_splits(load_models(models, names=list(names)), specs)))
    kinds = {d["kind"] for d in devices}
    spec = DeviceSpec.detect("cpu") if kinds == {"cpu"} else DeviceSpec.load(V100)
    table = CostTable(graph, RooflineModel(spec))
    comm = {t.id: 0.01 for t in graph.tasks if graph.op(t.ops[0]).is_comm}
    whole = [n for n in names if n not in split]
    device_of = [t.shard if t.shard is not None else (whole.index(t.tenant) + 1) % 2 for t in graph.tasks]
    schedule, _ = decode(table, DecoderKnobs(streams=streams, noise=0.0, noise_seed=seed), device_of=device_of,
                         devices=2, comm_ms=comm)
    plan = lower(graph, schedule, device=spec, devices=[dict(d) for d in devices], splits=specs)
    save_plan(plan, out, graph=graph, module_source=emit_python(plan))
    return out


class Loopback:
    """torch.distributed's calls for :class:`CommStep` s between threads of one process:
    a send leaves a copy for its receiver; a collective's parts meet (by their key) and each
    takes what the in-process kernels of ``cosched.ops.implementations.comm`` compute."""

    def __init__(self) -> None:
        self.cv = threading.Condition()
        self.mail: dict[int, torch.Tensor] = {}
        self.meetings: dict[tuple[int, tuple[int, ...]], dict[int, torch.Tensor]] = {}
        self.left: dict[tuple[int, tuple[int, ...]], int] = {}
        self.calls: list[tuple[int, int, str]] = []

    def endpoint(self, rank: int) -> Any:
        def run_step(step: CommStep, value: torch.Tensor | None) -> torch.Tensor | None:
            with self.cv:
                self.calls.append((rank, step.task, step.kind))
            if step.kind == "send":
                with self.cv:
                    self.mail[step.task] = value.clone()  # type: ignore[union-attr]
                    self.cv.notify_all()
                return None
            if step.kind == "recv":
                with self.cv:
                    if not self.cv.wait_for(lambda: step.task in self.mail, timeout=30):
                        raise TimeoutError(f"rank {rank}: nothing sent for task {step.task}")
                    return self.mail.pop(step.task)
            return self._meet(rank, step, value)  # type: ignore[arg-type]
        return run_step

    def _meet(self, rank: int, step: CommStep, value: torch.Tensor) -> torch.Tensor:
        key = (step.key, step.peers)
        world = len(step.peers)
        with self.cv:
            self.meetings.setdefault(key, {})[step.index] = value
            self.left.setdefault(key, world)
            self.cv.notify_all()
            if not self.cv.wait_for(lambda: len(self.meetings[key]) == world, timeout=30):
                raise TimeoutError(f"rank {rank}: group of task {step.task} never met")
            parts = [self.meetings[key][r] for r in range(world)]
            self.left[key] -= 1
            if not self.left[key]:
                del self.meetings[key], self.left[key]
        if step.kind == "all_reduce":
            return torch.stack(parts).sum(0)
        if step.kind == "all_gather":
            return torch.cat(parts, dim=step.axis)
        return torch.cat([torch.tensor_split(p, world, dim=step.axis)[step.index] for p in parts], dim=step.axis)


def loopback(plan: Path | Plan, inputs: Mapping[str, Mapping[str, np.ndarray]], rounds: int = 1, *,
             graph: Any = None) -> tuple[dict[str, dict[str, np.ndarray]], Loopback]:
    """Every rank of a plan (saved in a directory, or a value with its ``graph``), each on a
    thread of this process, run ``rounds`` times over a :class:`Loopback`; the tenant outputs
    of the last round."""
    from cosched.codegen.rebuild import graph_for_plan
    from cosched.runtime.rank import RankExecutor

    if not isinstance(plan, Plan):
        plan = load_plan(plan)
    graph = graph if graph is not None else graph_for_plan(plan)
    wire = Loopback()
    ranks = [RankExecutor(plan, r, wire.endpoint(r), graph=graph, timeout_s=30) for r in range(len(plan.devices))]
    results: dict[int, Any] = {}

    def go(r: int) -> None:
        try:
            for _ in range(rounds):
                results[r] = ranks[r].run(inputs)
        except BaseException as exc:
            results[r] = exc

    threads = [threading.Thread(target=go, args=(r,)) for r in range(len(ranks))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for executor in ranks:
        executor.close()
    outputs: dict[str, dict[str, np.ndarray]] = {}
    for r in range(len(ranks)):
        if isinstance(results.get(r), BaseException):
            raise results[r]
        for tenant, values in results[r].items():
            outputs.setdefault(tenant, {}).update(values)
    return outputs, wire
