"""torch.distributed calls for communication steps, against the in-process kernels.

Three gloo ranks (started by torchrun) each do every kind of step, with uneven parts and
peers listed out of rank order, and check their result against what the op of
``cosched.ops.implementations.comm`` computes from every rank's input in one process.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = r'''
import sys
import torch
import torch.distributed as dist
from cosched.runtime.comm import CommStep
from cosched.runtime.transport import TorchTransport

dist.init_process_group("gloo")
me, world = dist.get_rank(), dist.get_world_size()
transport = TorchTransport(torch.device("cpu"), timeout_s=30)


def shape(rank, axis):  # uneven along the axis: 3, 4, 5
    return (2, 3 + rank) if axis == 1 else (3 + rank, 2)


def value(rank, axis):
    return torch.arange(2 * (3 + rank), dtype=torch.float32).reshape(shape(rank, axis)) + 100 * rank


peers = (2, 0, 1)  # group rank -> device rank, not in rank order
index = peers.index(me)


class Plan:
    comms = ()


transport.create_groups(Plan())
failures = []
for kind, axis in (("all_gather", 1), ("all_gather", 0), ("all_to_all", 1), ("all_to_all", 0)):
    inputs = [value(peers[r], axis) for r in range(world)]
    shapes = tuple(shape(peers[r], axis) for r in range(world))
    step = CommStep(0, 1, kind, "t", "x", "y", peers, index, shapes, "float32", axis)
    got = transport.run(step, value(me, axis))
    if kind == "all_gather":
        want = torch.cat(inputs, dim=axis)
    else:
        want = torch.cat([torch.tensor_split(x, world, dim=axis)[index] for x in inputs], dim=axis)
    if got.shape != want.shape or not torch.equal(got, want):
        failures.append(f"{kind} axis {axis}: {got} != {want}")
same = CommStep(0, 2, "all_reduce", "t", "x", "y", peers, index, ((2, 3),) * world, "float32")
got = transport.run(same, torch.full((2, 3), float(me)))
if not torch.equal(got, torch.full((2, 3), float(sum(range(world))))):
    failures.append(f"all_reduce: {got}")
if me == 0:
    transport.run(CommStep(0, 7, "send", "t", "x", None, (2,), 0, ((2, 3),), "float32"), torch.ones(2, 3))
    transport.finish()
if me == 2:
    got = transport.run(CommStep(0, 7, "recv", "t", None, "y", (0,), 0, ((2, 3),), "float32"), None)
    if not torch.equal(got, torch.ones(2, 3)):
        failures.append(f"recv: {got}")
transport.barrier()
print("\n".join(failures) or "ok", flush=True)
sys.exit(1 if failures else 0)
'''


def test_every_kind_of_step_gives_what_the_kernels_give(tmp_path: Path) -> None:
    script = tmp_path / "ranks.py"
    script.write_text(SCRIPT)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "3", str(script)],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert done.stdout.count("ok") == 3  # one per rank (their lines may interleave)
