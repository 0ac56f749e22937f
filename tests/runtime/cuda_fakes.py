"""A recording stand-in for :class:`cosched.runtime.cuda.TorchCuda`, and the tensors,
streams and graphs it hands out: the CUDA backend's and a rank's communication's issuing
logic run on it without a GPU (``test_cuda_issue.py``, ``test_cuda_comm.py``)."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

from cosched.execution.traced import TracedTask
from cosched.ir.graph import Graph
from cosched.runtime.program import TaskProgram, build_programs


class FakeTensor:
    def __init__(self, name: str) -> None:
        self.name = name

    def clone(self) -> FakeTensor:
        return FakeTensor(self.name)

    def copy_(self, other: FakeTensor) -> None:
        pass


class FakeStream:
    def __init__(self, name: str, log: list[tuple[Any, ...]]) -> None:
        self.name, self.log = name, log

    def wait_stream(self, other: FakeStream) -> None:
        self.log.append(("wait_stream", self.name, other.name))


class FakeGraph:
    def __init__(self, log: list[tuple[Any, ...]]) -> None:
        self.log = log

    def replay(self) -> None:
        self.log.append(("replay",))


class Recorder:
    """Stand-in for TorchCuda: logs each call. Plan stream ``i`` is ``streams[i]``, named
    ``s<i>``; ``current()`` is the stream of the innermost ``on``/``use`` (else ``main``), as
    ``torch.cuda.stream`` makes it. Events of the communication's calls are named ``ev<n>``.
    ``capture`` fails to end, as CUDA does, when a stream forked during capture was not
    joined back."""

    def __init__(self, streams: int) -> None:
        self.log: list[tuple[Any, ...]] = []
        self.streams = [FakeStream(f"s{i}", self.log) for i in range(streams)]
        self.main = FakeStream("main", self.log)
        self._sides = 0
        self._events = 0
        self._current: list[FakeStream] = []
        self.capturing = False
        self._open = 0

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        yield

    def current(self) -> FakeStream:
        return self._current[-1] if self._current else self.main

    def side_stream(self) -> FakeStream:
        self._sides += 1
        side = FakeStream(f"side{self._sides}", self.log)
        self.log.append(("side_stream", side.name))
        return side

    @contextlib.contextmanager
    def _made_current(self, stream: FakeStream) -> Iterator[None]:
        self._current.append(stream)
        try:
            yield
        finally:
            self._current.pop()

    def use(self, main: FakeStream) -> contextlib.AbstractContextManager[None]:
        return self._made_current(main)

    def fork(self, main: FakeStream, timed: bool) -> str:
        self.log.append(("fork", main.name))
        self._open += 1
        return f"start@{main.name}"

    def join(self, main: FakeStream) -> None:
        self.log.append(("join", main.name))
        self._open -= 1

    def on(self, stream: int) -> contextlib.AbstractContextManager[None]:
        return self._made_current(self.streams[stream])

    def record(self, stream: int, event: int) -> None:
        self.log.append(("record", stream, event))

    def wait(self, stream: int, event: int) -> None:
        self.log.append(("wait", stream, event))

    def record_stream(self, tensor: FakeTensor, stream: int) -> None:
        self.log.append(("record_stream", tensor.name, stream))

    # -- the communication stream's calls (torch streams, not plan stream ids)
    def new_stream(self) -> FakeStream:
        self._sides += 1
        stream = FakeStream(f"comm{self._sides}", self.log)
        self.log.append(("new_stream", stream.name))
        return stream

    def record_event(self, stream: FakeStream) -> str:
        self._events += 1
        event = f"ev{self._events}"
        self.log.append(("record_event", stream.name, event))
        return event

    def wait_event(self, stream: FakeStream, event: str) -> None:
        self.log.append(("wait_event", stream.name, event))

    def wait_stream(self, stream: FakeStream, other: FakeStream) -> None:
        self.log.append(("wait_stream", stream.name, other.name))

    def keep_for(self, tensor: FakeTensor, stream: FakeStream) -> None:
        self.log.append(("keep_for", tensor.name, stream.name))

    def mark(self, stream: int) -> str:
        return "mark"

    def elapsed_us(self, a: Any, b: Any) -> float:
        return 0.0

    def synchronize(self) -> None:
        self.log.append(("synchronize",))

    def new_graph(self) -> FakeGraph:
        return FakeGraph(self.log)

    @contextlib.contextmanager
    def capture(self, graph: FakeGraph, stream: FakeStream) -> Iterator[None]:
        self.log.append(("capture_begin", stream.name))
        self.capturing = True
        try:
            yield
        finally:
            self.capturing = False
            self.log.append(("capture_end", stream.name))
            if self._open:
                raise RuntimeError("operation not permitted: capture ended with unjoined streams")


def fake_tasks(graph: Graph, log: list[tuple[Any, ...]], fail: int | None = None,
               recorder: Recorder | None = None) -> dict[int, TaskProgram]:
    """The graph's task programs (their real ``reads``), running stand-ins that log the run
    and write placeholder outputs; task ``fail`` raises while ``recorder`` is capturing."""
    programs = build_programs(graph)

    def stand_in(task: int, outputs: tuple[str, ...]) -> Any:
        def run() -> tuple[FakeTensor, ...]:
            if task == fail and recorder is not None and recorder.capturing:
                raise ValueError(f"kernel of task {task} broke")
            log.append(("run", task))
            return tuple(FakeTensor(n) for n in outputs)
        return run

    fakes = {}
    for t in graph.tasks:
        outputs = tuple(n for op in t.ops for n in graph.op(op).outputs)
        fakes[t.id] = dataclasses.replace(programs[t.id], kernels=(),
                                          traced=TracedTask((), outputs, stand_in(t.id, outputs)))
    return fakes


def fake_env(graph: Graph) -> dict[str, Any]:
    names = [n for t in graph.tenants for _, n in t.inputs] + list(graph.constants)
    return {n: FakeTensor(n) for n in names}
