"""CUDA backend: one ``torch.cuda.Stream`` per plan stream, issued from one host thread.

One thread issues the plan's steps in their one-thread order
(:func:`cosched.codegen.steps.issue_steps`, interleaved across streams by predicted start),
in which every event is recorded before any wait on it: a CUDA wait on an event never
recorded is a no-op, so order matters. Plan streams fork from the caller's current stream
(where inputs were copied) and join back into it, also when a task fails.

Memory: a task that reads a tensor another task wrote calls ``record_stream`` for its own
stream on that tensor, at every such use. The caching allocator then keeps the memory from
being handed out again until that stream's work on it is done, whichever stream allocated
it and whichever stream frees it; this covers aliases too (a view or Identity output shares
storage allocated on its producer's stream).

With ``cuda_graph=True`` the first run warms up eagerly on a side stream (a few rounds, as
PyTorch asks before capture), then captures the whole multi-stream plan into one CUDA graph
(streams fork from and join into the capture stream through events) with static input
buffers; later runs copy inputs in and replay. Nothing is freed during capture: the graph's
private pool keeps every intermediate alive. A task that fails during capture still has
every stream joined before capture ends, so its own error is the one reported.

All CUDA calls go through :class:`TorchCuda`, the communication's too; tests of the issuing
logic replace it with a recording stand-in (``tests/runtime/test_cuda_issue.py``,
``tests/runtime/test_cuda_comm.py``).

A rank of a multi-device plan passes ``comm`` (:class:`cosched.runtime.comm.CudaComm`): its
issue sequence then also holds communication steps, each issued on the communication stream
at its place in the order every rank keeps; a producer's issue is followed by an event the
communication stream waits on, and a communication task's run makes its stream wait for the
communication's result. CUDA graphs are not used with communication.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol

import torch

from cosched.errors import ConfigError, DeviceError, RuntimeFailure
from cosched.runtime.chrome_trace import TaskTiming
from cosched.runtime.program import Backend, PlanProgram, TaskProgram

__all__ = ["CudaBackend", "IssueComm", "TorchCuda"]

#: Eager rounds on a side stream before capture (PyTorch's CUDA-graph notes ask for a few).
WARMUP_ROUNDS = 3


class TorchCuda:
    """Every CUDA call the backend makes: plan streams and events, forks and joins,
    timing events, ``record_stream`` and graph capture. Stream arguments are plan stream
    ids; ``main`` arguments are the streams that fork and join the plan's."""

    def __init__(self, device: torch.device, priorities: tuple[int, ...], num_events: int) -> None:
        if not torch.cuda.is_available():
            raise DeviceError("the plan targets CUDA, but torch sees no CUDA device here "
                              "(is this torch built with CUDA?); compile for --device cpu instead")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"plan targets {device}, but only {torch.cuda.device_count()} CUDA device(s) exist")
        self.device = device
        self.streams = [torch.cuda.Stream(device=device, priority=p) for p in priorities]
        self.events = [torch.cuda.Event() for _ in range(num_events)]

    @contextmanager
    def session(self) -> Iterator[None]:
        with torch.cuda.device(self.device), torch.inference_mode():
            yield

    def current(self) -> Any:
        return torch.cuda.current_stream(self.device)

    def side_stream(self) -> Any:
        side = torch.cuda.Stream(device=self.device)
        side.wait_stream(self.current())
        return side

    def use(self, main: Any) -> Any:
        return torch.cuda.stream(main)

    def fork(self, main: Any, timed: bool) -> Any:
        start = torch.cuda.Event(enable_timing=timed)
        start.record(main)
        for stream in self.streams:
            stream.wait_event(start)
        return start

    def join(self, main: Any) -> None:
        for stream in self.streams:
            done = torch.cuda.Event()
            done.record(stream)
            main.wait_event(done)

    def on(self, stream: int) -> Any:
        return torch.cuda.stream(self.streams[stream])

    def record(self, stream: int, event: int) -> None:
        self.events[event].record(self.streams[stream])

    def wait(self, stream: int, event: int) -> None:
        self.streams[stream].wait_event(self.events[event])

    def record_stream(self, tensor: torch.Tensor, stream: int) -> None:
        if tensor.is_cuda:
            tensor.record_stream(self.streams[stream])

    # -- a rank's communication stream (:class:`cosched.runtime.comm.CudaComm`): these take
    # torch streams (``streams[i]``, ``current()``, ``new_stream()``), not plan stream ids
    def new_stream(self) -> Any:
        return torch.cuda.Stream(device=self.device)

    def record_event(self, stream: Any) -> Any:
        """A new event, recorded now on ``stream``."""
        event = torch.cuda.Event()
        event.record(stream)
        return event

    def wait_event(self, stream: Any, event: Any) -> None:
        stream.wait_event(event)

    def wait_stream(self, stream: Any, other: Any) -> None:
        stream.wait_stream(other)

    def keep_for(self, tensor: torch.Tensor, stream: Any) -> None:
        """``record_stream``: ``tensor``'s memory is not reused before ``stream``'s work so far is done."""
        if tensor.is_cuda:
            tensor.record_stream(stream)

    def mark(self, stream: int) -> Any:
        event = torch.cuda.Event(enable_timing=True)
        event.record(self.streams[stream])
        return event

    def elapsed_us(self, a: Any, b: Any) -> float:
        return float(a.elapsed_time(b)) * 1e3

    def synchronize(self) -> None:
        torch.cuda.synchronize(self.device)

    def new_graph(self) -> Any:
        return torch.cuda.CUDAGraph()

    def capture(self, graph: Any, stream: Any) -> Any:
        return torch.cuda.graph(graph, stream=stream)


class IssueComm(Protocol):
    """What the CUDA backend asks of a rank's communication (see the module docstring)."""

    tasks: frozenset[int]
    """The communication tasks: their run waits for :meth:`consume` instead of kernels."""

    def begin(self, env: dict[str, torch.Tensor], api: Any, main: Any) -> None: ...

    def produced(self, task: int, stream: int) -> None: ...

    def issue(self, step: Any) -> None: ...

    def consume(self, task: int, stream: int, env: dict[str, torch.Tensor]) -> None: ...

    def end(self) -> None: ...


class CudaBackend(Backend):
    name = "cuda"

    def __init__(self, program: PlanProgram, tasks: Mapping[int, TaskProgram], device: torch.device,
                 *, input_names: tuple[str, ...], output_names: tuple[str, ...],
                 cuda_graph: bool = False, api: Any = None, comm: IssueComm | None = None) -> None:
        if comm is not None and cuda_graph:
            raise ConfigError("a rank of a multi-device plan runs eagerly: CUDA graphs cannot capture its "
                              "communication; run without cuda_graph")
        self.comm = comm
        self.program = program
        self.tasks = tasks
        self.device = device
        self.use_graph = cuda_graph
        self.api = api if api is not None else TorchCuda(device, program.priorities, program.num_events)
        self.input_names = input_names
        self.output_names = output_names
        self._graph: Any = None
        self._static_inputs: dict[str, torch.Tensor] = {}
        self._static_outputs: dict[str, torch.Tensor] = {}

    @property
    def streams(self) -> list[Any]:
        return self.api.streams

    def execute(self, env: dict[str, torch.Tensor], profile: bool = False) -> tuple[TaskTiming, ...]:
        if self.use_graph:
            if profile:
                raise ConfigError("profiling needs eager launches; run without cuda_graph to profile")
            self._replay(env)
            return ()
        with self.api.session():
            issuer = self._issue(env, self.api.current(), free=True, profile=profile)
            if not profile:
                return ()
            self.api.synchronize()
            index = self.device.index or 0
            return tuple(TaskTiming(t, s, index, self.api.elapsed_us(issuer.start, a),
                                    self.api.elapsed_us(issuer.start, b))
                         for t, s, a, b in issuer.marks)

    def _issue(self, env: dict[str, torch.Tensor], main: Any, *, free: bool, profile: bool) -> _Issuer:
        """Fork the plan streams from ``main``, issue every step, join them back (always)."""
        issuer = _Issuer(self, env, free=free, profile=profile)
        issuer.start = self.api.fork(main, profile)
        try:
            if self.comm is not None:
                self.comm.begin(env, self.api, main)
            self.program.issue(issuer)
        finally:
            if self.comm is not None:
                self.comm.end()
            self.api.join(main)
        return issuer

    def _replay(self, env: dict[str, torch.Tensor]) -> None:
        with self.api.session():
            if self._graph is None:
                self._capture(env)
            for name in self.input_names:
                self._static_inputs[name].copy_(env[name])
            self._graph.replay()
            for name in self.output_names:
                env[name] = self._static_outputs[name]

    def _capture(self, env: dict[str, torch.Tensor]) -> None:
        api = self.api
        self._static_inputs = {name: env[name].clone() for name in self.input_names}
        side = api.side_stream()
        with api.use(side):
            for _ in range(WARMUP_ROUNDS):
                self._issue(dict(env), side, free=True, profile=False)
        api.current().wait_stream(side)
        api.synchronize()
        captured = dict(env)
        captured.update(self._static_inputs)
        graph = api.new_graph()
        capture_stream = api.side_stream()
        failure: BaseException | None = None
        try:
            with api.capture(graph, capture_stream):
                try:
                    self._issue(captured, capture_stream, free=False, profile=False)
                except BaseException as exc:  # streams are joined; capture can end cleanly
                    failure = exc
                    raise
        except BaseException as exc:
            if failure is not None:  # the task's own error, not what ending the capture said
                raise RuntimeFailure(f"capturing the plan into a CUDA graph failed: {failure}") from failure
            raise RuntimeFailure(
                f"capturing the plan into a CUDA graph failed ({type(exc).__name__}: {exc}); "
                "run with cuda_graph=False"
            ) from exc
        api.current().wait_stream(capture_stream)
        self._static_outputs = {name: captured[name] for name in self.output_names}
        self._graph = graph

    def close(self) -> None:
        self._graph = None
        self._static_inputs.clear()
        self._static_outputs.clear()


class _Issuer:
    """The machine of one issue pass (see :class:`cosched.runtime.program.Machine`): each
    step becomes calls on the backend's :class:`TorchCuda`. ``free=False`` (capture) frees
    nothing and records no stream uses."""

    def __init__(self, backend: CudaBackend, env: dict[str, torch.Tensor], *, free: bool, profile: bool) -> None:
        self.api = backend.api
        self.tasks = backend.tasks
        self.comm = backend.comm
        self.env = env
        self.free_buffers = free
        self.profile = profile
        self.start: Any = None
        self.marks: list[tuple[int, int, Any, Any]] = []

    def run(self, stream: int, task: int) -> None:
        program = self.tasks[task]
        with self.api.on(stream):
            if self.free_buffers:
                for name in program.reads:
                    tensor = self.env.get(name)
                    if tensor is not None:
                        self.api.record_stream(tensor, stream)
            begin = self.api.mark(stream) if self.profile else None
            if self.comm is not None and task in self.comm.tasks:
                self.comm.consume(task, stream, self.env)
            else:
                program.run(self.env, stream)
            if self.comm is not None:
                self.comm.produced(task, stream)
            if self.profile:
                self.marks.append((task, stream, begin, self.api.mark(stream)))

    def record(self, stream: int, event: int) -> None:
        self.api.record(stream, event)

    def wait(self, stream: int, event: int) -> None:
        self.api.wait(stream, event)

    def free(self, stream: int, tensors: tuple[str, ...]) -> None:
        if self.free_buffers:
            for name in tensors:
                self.env.pop(name, None)

    def send(self, stream: int, task: int, peer: int) -> None:
        """Nothing here: the send is a communication step, issued at its own place
        (:meth:`communicate`) once its producer's event is recorded."""

    def communicate(self, step: Any) -> None:
        """A communication step of a rank's issue sequence, on the communication stream."""
        if self.comm is None:
            raise RuntimeFailure("a communication step in a plan run without communication")
        self.comm.issue(step)
