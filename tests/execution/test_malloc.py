"""Executors keep freed memory for reuse, so a run's tensors do not page-fault back in."""

from __future__ import annotations

import platform
import resource

import numpy as np
import pytest
import torch

from cosched.execution import malloc


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="tunes glibc's malloc")
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
