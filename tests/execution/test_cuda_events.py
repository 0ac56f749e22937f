"""The one CUDA-event timer (needs a GPU)."""

from __future__ import annotations

import pytest
import torch

from cosched.execution.cuda_events import EventSpan, cuda_seconds

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_a_larger_matmul_takes_longer_on_the_gpu() -> None:
    small, large = (torch.randn(n, n, device="cuda") for n in (256, 4096))
    small @ small, large @ large  # warm the kernels
    assert 0.0 < cuda_seconds(lambda: small @ small) < cuda_seconds(lambda: large @ large)


def test_spans_on_two_streams_read_after_one_synchronisation() -> None:
    x = torch.randn(2048, 2048, device="cuda")
    streams = [torch.cuda.Stream() for _ in range(2)]
    spans = []
    for stream in streams:
        with torch.cuda.stream(stream), EventSpan() as span:
            x @ x
        spans.append(span)
    torch.cuda.synchronize()
    assert all(span.ms() > 0.0 for span in spans)
