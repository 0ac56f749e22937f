"""GPU time of work issued on a CUDA stream, measured with a pair of CUDA events: the one
timer of the profiler and the device probe.

``with EventSpan() as span: run()`` records one event on the current stream before ``run``
and one after; ``span.ms()`` waits for the second and returns the GPU time between them.
Spans recorded on several streams can be read after one synchronisation (co-run profiling).
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType

import torch

__all__ = ["EventSpan", "cuda_seconds"]


class EventSpan:
    """Two timing events around the work issued inside ``with`` on the current stream."""

    __slots__ = ("end", "start")

    def __init__(self) -> None:
        self.start = torch.cuda.Event(enable_timing=True)
        self.end = torch.cuda.Event(enable_timing=True)

    def __enter__(self) -> EventSpan:
        self.start.record()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.end.record()

    def ms(self) -> float:
        """Milliseconds of GPU time between the two events (waits for the second)."""
        self.end.synchronize()
        return float(self.start.elapsed_time(self.end))


def cuda_seconds(run: Callable[[], object]) -> float:
    """Seconds of GPU time that ``run`` issues on the current stream."""
    with EventSpan() as span:
        run()
    return span.ms() * 1e-3
