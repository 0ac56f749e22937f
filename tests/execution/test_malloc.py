"""Executors keep freed memory for reuse, so a run's tensors do not page-fault back in, but
hand back what building them freed (weights read, traced tasks' example runs)."""

from __future__ import annotations

import platform
import resource
from pathlib import Path

import numpy as np
import pytest
import torch

import cosched.ir
from cosched import zoo
from cosched.codegen import lower
from cosched.execution import malloc
from cosched.runtime.executor import Executor

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="tunes glibc's malloc")


def _anon_mib() -> float:
    """Resident anonymous memory of this process (``RssAnon``): the heap, not mapped files."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    pytest.skip("no RssAnon in /proc/self/status")


@glibc
def test_a_freed_large_tensor_is_reused_without_page_faults() -> None:
    assert malloc.keep_freed_memory() is True
    assert malloc.keep_freed_memory() is True  # once per process, then remembered

    def faults_of_one_alloc() -> int:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t = torch.empty(4 << 20, dtype=torch.float32)  # 16 MiB: above glibc's default mmap threshold
        t.fill_(1.0)
        del t
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    faults_of_one_alloc()
    assert np.median([faults_of_one_alloc() for _ in range(5)]) < 100  # 16 MiB fresh would be ~4,096


@glibc
def test_freed_blocks_held_between_live_ones_are_released() -> None:
    """Blocks freed between live ones cannot be trimmed off the heap's top: kept resident
    until released, as building an executor leaves them (each traced task's example runs,
    then the trace's small long-lived objects after them)."""
    assert malloc.keep_freed_memory() is True
    held, scratch = [], []
    for _ in range(64):
        scratch.append(torch.ones(1 << 18))  # 1 MiB, touched; on the heap below 32 MiB
        held.append(torch.ones(64))
    del scratch
    before = _anon_mib()
    assert malloc.release_freed_memory() is True
    assert before - _anon_mib() > 48  # of the 64 MiB freed
    assert all(bool(t.eq(1).all()) for t in held)  # live blocks untouched


@glibc
@pytest.mark.slow
def test_a_built_traced_executor_holds_its_weights_and_little_else() -> None:
    """Tracing mobilenet_v2's tasks runs them on example inputs. Kept, that left 82 MiB
    resident over its 13 MiB of weights; handed back, 37 MiB (the rest is live: the traces
    themselves, the kernels' libraries on first use)."""
    path = zoo.export("mobilenet_v2", size="full")
    graph = cosched.ir.analyse(cosched.ir.fuse(cosched.ir.load_models([path], names=["mobilenet_v2"])))
    plan = lower(graph, [[t.id for t in graph.tasks]], device={"kind": "cpu", "name": "test-cpu"})
    malloc.release_freed_memory()  # what earlier tests freed would otherwise serve the tracing
    before = _anon_mib()
    with Executor(plan, graph, trace_tasks=True) as executor:
        grown = _anon_mib() - before
        assert executor.tracer is not None and executor.tracer.traced > 0
        weights = sum(t.numel() * t.element_size() for t in executor.constants.values()) / 2**20
    assert grown < weights + 40, f"{grown:.0f} MiB resident over {weights:.0f} MiB of weights"
