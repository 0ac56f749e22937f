"""CPU backend: one persistent worker thread per plan stream, events as thread events.

Each worker sets its own intra-op thread count and inference mode once (both are per
thread in torch), then waits for runs. A run clears every event, hands the shared
environment to all workers and waits for each to report. A failing task aborts the run:
the other workers stop at their next instruction, and waits poll the abort flag, so the
run ends with a :class:`RuntimeFailure` naming the task instead of hanging. A wait that
outlasts ``wait_timeout_s`` fails the same way, naming the event and its recording task.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from cosched.codegen.plan import Plan, StreamPlan
from cosched.errors import RuntimeFailure
from cosched.runtime.executor import Backend, TaskProgram
from cosched.runtime.trace import TaskTiming

__all__ = ["CpuBackend"]

POLL_S = 0.05


class _Aborted(Exception):
    """Another worker failed; this one stops."""


@dataclass
class _Run:
    env: dict[str, torch.Tensor]
    profile: bool
    t0: int


class CpuBackend(Backend):
    name = "cpu"

    def __init__(
        self,
        plan: Plan,
        programs: Mapping[int, TaskProgram],
        *,
        threads_per_stream: int = 1,
        wait_timeout_s: float = 300.0,
        delay: Callable[[int], float] | None = None,
    ) -> None:
        self.plan = plan
        self.programs = programs
        self.threads_per_stream = threads_per_stream
        self.wait_timeout_s = wait_timeout_s
        self.delay = delay
        self._events = [threading.Event() for _ in plan.events]
        self._recorder = {e.id: e.after_task for e in plan.events}
        self._abort = threading.Event()
        self._lock = threading.Lock()
        self._inboxes: list[queue.Queue[_Run | None]] = []
        self._outbox: queue.Queue[tuple[int, BaseException | None, list[TaskTiming]]] = queue.Queue()
        self._threads = []
        for stream in plan.streams:
            inbox: queue.Queue[_Run | None] = queue.Queue()
            thread = threading.Thread(target=self._worker, args=(stream, inbox),
                                      name=f"cosched-stream-{stream.id}", daemon=True)
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
            for inbox in self._inboxes:
                inbox.put(run)
            return self._collect()

    def _collect(self) -> tuple[TaskTiming, ...]:
        errors: list[tuple[int, BaseException]] = []
        timings: list[TaskTiming] = []
        # Every worker answers once per run: its waits time out and poll the abort flag, so
        # only a kernel that never returns could keep it (no timeout can interrupt a kernel).
        for _ in self._inboxes:
            stream, error, done = self._outbox.get()
            timings += done
            if error is not None:
                errors.append((stream, error))
        real = [(s, e) for s, e in errors if not isinstance(e, _Aborted)]
        if real:
            stream, error = min(real, key=lambda se: se[0])
            if isinstance(error, RuntimeFailure):
                raise RuntimeFailure(str(error)) from error
            raise RuntimeFailure(f"stream {stream} failed: {type(error).__name__}: {error}") from error
        return tuple(sorted(timings, key=lambda t: (t.start_us, t.stream)))

    def _worker(self, stream: StreamPlan, inbox: queue.Queue[_Run | None]) -> None:
        torch.set_num_threads(self.threads_per_stream)
        with torch.inference_mode():
            while True:
                run = inbox.get()
                if run is None:
                    return
                done: list[TaskTiming] = []
                try:
                    self._run_stream(stream, run, done)
                except BaseException as exc:  # reported to the caller, never swallowed
                    self._abort.set()
                    self._outbox.put((stream.id, exc, done))
                else:
                    self._outbox.put((stream.id, None, done))

    def _run_stream(self, stream: StreamPlan, run: _Run, done: list[TaskTiming]) -> None:
        env = run.env
        for ins in stream.instructions:
            if self._abort.is_set():
                raise _Aborted
            if ins.op == "wait":
                self._wait(stream.id, ins.event)  # type: ignore[arg-type]
            elif ins.op == "record":
                self._events[ins.event].set()  # type: ignore[index]
            else:
                program = self.programs[ins.task]  # type: ignore[index]
                if self.delay is not None:
                    time.sleep(self.delay(program.id))
                start = time.perf_counter_ns()
                program(env)
                if run.profile:
                    end = time.perf_counter_ns()
                    done.append(TaskTiming(program.id, stream.id, 0, (start - run.t0) / 1e3, (end - run.t0) / 1e3))
                for name in program.frees:
                    env.pop(name, None)

    def _wait(self, stream: int, event: int) -> None:
        deadline = time.monotonic() + self.wait_timeout_s
        flag = self._events[event]
        while not flag.wait(POLL_S):
            if self._abort.is_set():
                raise _Aborted
            if time.monotonic() > deadline:
                raise RuntimeFailure(
                    f"stream {stream} waited {self.wait_timeout_s:g} s for event {event} "
                    f"(recorded after task {self._recorder[event]}) and gave up"
                )

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for inbox in self._inboxes:
            inbox.put(None)
        for thread in self._threads:
            thread.join(timeout=5.0)

