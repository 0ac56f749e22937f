"""CPU backend: stream 0 on the calling thread, one persistent worker thread per other
stream, events as thread events.

Each stream's program (:mod:`cosched.runtime.program`) drives a machine whose events are
thread events. Each worker sets its own intra-op thread count and inference mode once
(both are per thread in torch), then waits for runs; the caller sets its count for the
length of each run and restores it after. A run clears every event, hands the shared
environment to the workers, runs stream 0 and waits for each worker to report.

Why the caller runs a stream: every thread that runs torch ops with more than one intra-op
thread owns an OpenMP team, idle or not. Once the process holds more OpenMP threads than
cores, libgomp stops spinning between parallel regions and puts team threads to sleep,
so every op pays a futex wake-up. With a stream on a worker thread beside the caller's own
team, a one-stream plan measured 1.55x slower than the same tasks on the caller, and the
caller's sequential work after it 1.6x slower while the worker sat idle (vision mix,
2 cores; `benchmarks/omp_teams.py`). With stream 0 on the caller and the cores shared out,
the process never holds more intra-op threads than cores. A failing task aborts the run:
the other workers stop at their next instruction, and waits poll the abort flag, so the
run ends with a :class:`RuntimeFailure` naming the task instead of hanging. A wait that
outlasts ``wait_timeout_s`` fails the same way, naming the event and its recording task.

A rank of a multi-device plan (:mod:`cosched.runtime.rank`) passes ``comm``: its
communication thread (:class:`cosched.runtime.comm.CpuComm`). A run then starts it, tells it
after each task that the task's outputs exist, runs each communication task as a wait for
its result, and waits for it at the end; its failure aborts the streams like a task's.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import torch

from cosched.errors import RuntimeFailure
from cosched.runtime.chrome_trace import TaskTiming
from cosched.runtime.program import Aborted, Backend, PlanProgram, TaskProgram

__all__ = ["CpuBackend", "StreamComm"]

POLL_S = 0.05


class StreamComm(Protocol):
    """What the CPU backend asks of a rank's communication (see the module docstring)."""

    tasks: frozenset[int]
    """The communication tasks: their run waits for :meth:`consume` instead of kernels."""

    def begin(self, env: dict[str, torch.Tensor], abort: threading.Event) -> None: ...

    def produced(self, task: int, env: dict[str, torch.Tensor]) -> None: ...

    def consume(self, task: int, env: dict[str, torch.Tensor]) -> None: ...

    def end(self) -> BaseException | None: ...


@dataclass
class _Run:
    env: dict[str, torch.Tensor]
    profile: bool
    t0: int


class CpuBackend(Backend):
    name = "cpu"

    def __init__(
        self,
        program: PlanProgram,
        tasks: Mapping[int, TaskProgram],
        *,
        threads_per_stream: int = 1,
        wait_timeout_s: float = 300.0,
        delay: Callable[[int], float] | None = None,
        comm: StreamComm | None = None,
        on_task: Callable[[int, int], None] | None = None,
    ) -> None:
        self.program = program
        self.comm = comm
        self.on_task = on_task
        self.tasks = tasks
        self.threads_per_stream = threads_per_stream
        self.wait_timeout_s = wait_timeout_s
        self.delay = delay
        self._events = [threading.Event() for _ in range(program.num_events)]
        self._abort = threading.Event()
        self._lock = threading.Lock()
        self._inboxes: list[queue.Queue[_Run | None]] = []
        self._outbox: queue.Queue[tuple[int, BaseException | None, list[TaskTiming]]] = queue.Queue()
        self._threads = []
        for stream in range(1, len(program.streams)):
            inbox: queue.Queue[_Run | None] = queue.Queue()
            thread = threading.Thread(target=self._worker, args=(stream, inbox),
                                      name=f"cosched-stream-{stream}", daemon=True)
            thread.start()
            self._inboxes.append(inbox)
            self._threads.append(thread)
        self._closed = False

    def execute(self, env: dict[str, torch.Tensor], profile: bool = False) -> tuple[TaskTiming, ...]:
        if self._closed:
            raise RuntimeFailure("the CPU backend is closed; create a new Executor")
        with self._lock:
            for event in self._events:
                event.clear()
            self._abort.clear()
            run = _Run(env, profile, time.perf_counter_ns())
            if self.comm is not None:
                self.comm.begin(env, self._abort)
            for inbox in self._inboxes:
                inbox.put(run)
            return self._collect(self._run_here(run))

    def _run_here(self, run: _Run) -> tuple[int, BaseException | None, list[TaskTiming]]:
        """Stream 0 on the calling thread, with the plan's intra-op thread count meanwhile."""
        if not self.program.streams:  # a rank of a multi-device plan may run nothing
            return 0, None, []
        before = torch.get_num_threads()
        torch.set_num_threads(self.threads_per_stream)
        machine = _Worker(self, run)
        try:
            with torch.inference_mode():
                self.program.streams[0](machine)
        except BaseException as exc:  # reported with the workers' results, never swallowed
            self._abort.set()
            return 0, exc, machine.done
        finally:
            torch.set_num_threads(before)
        return 0, None, machine.done

    def _collect(self, here: tuple[int, BaseException | None, list[TaskTiming]]) -> tuple[TaskTiming, ...]:
        stream, error, timings = here
        errors: list[tuple[int, BaseException]] = [(stream, error)] if error is not None else []
        # Every worker answers once per run: its waits time out and poll the abort flag, so
        # only a kernel that never returns could keep it (no timeout can interrupt a kernel).
        for _ in self._inboxes:
            stream, error, done = self._outbox.get()
            timings += done
            if error is not None:
                errors.append((stream, error))
        if self.comm is not None:  # after the streams: nothing reads its results any more
            error = self.comm.end()
            if error is not None:
                errors.append((-1, error))
        real = [(s, e) for s, e in errors if not isinstance(e, Aborted)]
        if real:
            stream, error = min(real, key=lambda se: (se[0] < 0, se[0]))  # a task's own error first
            if isinstance(error, RuntimeFailure):
                raise RuntimeFailure(str(error)) from error
            raise RuntimeFailure(f"stream {stream} failed: {type(error).__name__}: {error}") from error
        return tuple(sorted(timings, key=lambda t: (t.start_us, t.stream)))

    def _worker(self, stream: int, inbox: queue.Queue[_Run | None]) -> None:
        torch.set_num_threads(self.threads_per_stream)
        with torch.inference_mode():
            while True:
                run = inbox.get()
                if run is None:
                    return
                machine = _Worker(self, run)
                try:
                    self.program.streams[stream](machine)
                except BaseException as exc:  # reported to the caller, never swallowed
                    self._abort.set()
                    self._outbox.put((stream, exc, machine.done))
                else:
                    self._outbox.put((stream, None, machine.done))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for inbox in self._inboxes:
            inbox.put(None)
        for thread in self._threads:
            thread.join(timeout=5.0)


class _Worker:
    """The machine of one stream's worker thread for one run (see
    :class:`cosched.runtime.program.Machine`): events are thread events, and every step
    first checks whether another worker failed."""

    def __init__(self, backend: CpuBackend, run: _Run) -> None:
        self.backend = backend
        self.run_state = run
        self.done: list[TaskTiming] = []

    def run(self, stream: int, task: int) -> None:
        backend, run = self.backend, self.run_state
        if backend._abort.is_set():
            raise Aborted
        if backend.delay is not None:
            time.sleep(backend.delay(task))
        if backend.on_task is not None:
            backend.on_task(stream, task)
        start = time.perf_counter_ns()
        comm = backend.comm
        if comm is None:
            backend.tasks[task].run(run.env, stream)
        else:
            if task in comm.tasks:
                comm.consume(task, run.env)
            else:
                backend.tasks[task].run(run.env, stream)
            comm.produced(task, run.env)
        if run.profile:
            end = time.perf_counter_ns()
            self.done.append(TaskTiming(task, stream, 0, (start - run.t0) / 1e3, (end - run.t0) / 1e3))

    def record(self, stream: int, event: int) -> None:
        if self.backend._abort.is_set():
            raise Aborted
        self.backend._events[event].set()

    def wait(self, stream: int, event: int) -> None:
        backend = self.backend
        deadline = time.monotonic() + backend.wait_timeout_s
        flag = backend._events[event]
        while not flag.wait(POLL_S):
            if backend._abort.is_set():
                raise Aborted
            if time.monotonic() > deadline:
                recorder = backend.program.recorders.get(event)
                after = f" (recorded after task {recorder})" if recorder is not None else ""
                raise RuntimeFailure(
                    f"stream {stream} waited {backend.wait_timeout_s:g} s for event {event}{after} and gave up"
                )

    def free(self, stream: int, tensors: tuple[str, ...]) -> None:
        env = self.run_state.env
        for name in tensors:
            env.pop(name, None)

    def send(self, stream: int, task: int, peer: int) -> None:
        """Nothing to do here: the communication thread sends the tensor once its producer
        has run (:meth:`StreamComm.produced`), in the one order every rank keeps."""
