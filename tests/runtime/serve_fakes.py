"""A fake :class:`cosched.runtime.serve.PlanSet` for the server's tests: each tenant's output
``y`` is twice its input ``x``, so a response shows which request it answers. Runs can be held
(``gate``), made to fail, and advance a fake clock, and every run is recorded."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from cosched.errors import ConfigError, InputError


class FakeClock:
    """Seconds that pass only when a test (or a fake run) says so."""

    def __init__(self) -> None:
        self.now = 100.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance_ms(self, ms: float) -> None:
        with self._lock:
            self.now += ms / 1000


class FakeRunner:
    def __init__(self, owner: FakePlanSet, tenants: frozenset[str], source: str) -> None:
        self.owner, self.tenants, self.source = owner, tenants, source

    def run(self, inputs: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, np.ndarray]]:
        return self.owner.run(self.tenants, inputs)


class FakePlanSet:
    """``run_ms(inputs)``: fake-clock milliseconds a run takes; ``fail(active, inputs)``: True
    makes that run raise; ``predicted``: set -> predicted ms; ``composed``: sets whose runner
    says it was composed. ``gate`` (set by default) holds every run while cleared."""

    def __init__(self, tenants: tuple[str, ...], *, slo_ms: Mapping[str, float] | None = None,
                 predicted: Mapping[frozenset[str], float] | None = None,
                 composed: set[frozenset[str]] | None = None, clock: FakeClock | None = None,
                 run_ms: Callable[[Mapping[str, Mapping[str, Any]]], float] | None = None,
                 fail: Callable[[frozenset[str], Mapping[str, Mapping[str, Any]]], bool] | None = None,
                 sleep_s: float = 0.0) -> None:
        self.tenants = tenants
        self.slo_ms = dict(slo_ms or {})
        self.predicted = dict(predicted or {})
        self.composed = composed or set()
        self.clock, self.run_ms, self.fail, self.sleep_s = clock, run_ms, fail, sleep_s
        self.gate = threading.Event()
        self.gate.set()
        self.hold: set[str] | None = None  # when set, the gate holds only runs of these tenants
        self.ran: list[frozenset[str]] = []          # the active set of every run, in order
        self.seen: list[tuple[str, float]] = []      # (tenant, x[0]) of every input a run received
        self.runner_threads: set[str] = set()
        self.shares: list[tuple[frozenset[str], int]] = []  # (active set, share) of every runner asked for
        self.closed = 0
        self._runners: dict[frozenset[str], FakeRunner] = {}
        self._started = threading.Condition()

    def check_request(self, tenant: str, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        if tenant not in self.tenants:
            raise ConfigError(f"unknown tenant {tenant!r}: the plan has {list(self.tenants)}")
        if set(inputs) != {"x"}:
            raise InputError(f"tenant {tenant!r}: expected inputs ['x'], got {sorted(inputs)}")
        return {"x": np.asarray(inputs["x"], dtype=np.float32)}

    def predicted_ms(self, active: frozenset[str]) -> float | None:
        return self.predicted.get(active)

    def runner(self, active: frozenset[str], share: int = 1) -> FakeRunner:
        self.runner_threads.add(threading.current_thread().name)
        self.shares.append((active, share))
        if active not in self._runners:
            self._runners[active] = FakeRunner(self, active, "composed" if active in self.composed else "compiled")
        return self._runners[active]

    def sources(self) -> dict[frozenset[str], str]:
        return {s: r.source for s, r in self._runners.items()}

    def close(self) -> None:
        self.closed += 1

    def run(self, active: frozenset[str], inputs: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, np.ndarray]]:
        assert set(inputs) == set(active), (sorted(inputs), sorted(active))
        with self._started:
            self.ran.append(active)
            self.seen.extend((t, float(np.asarray(inputs[t]["x"]).flat[0])) for t in sorted(active))
            self._started.notify_all()
        if self.hold is None or active & self.hold:
            self.gate.wait()
        if self.sleep_s:
            threading.Event().wait(self.sleep_s)
        if self.clock is not None and self.run_ms is not None:
            self.clock.advance_ms(self.run_ms(inputs))
        if self.fail is not None and self.fail(active, inputs):
            raise ValueError(f"injected failure in {sorted(active)}")
        return {t: {"y": np.asarray(inputs[t]["x"]) * 2} for t in active}

    def wait_started(self, runs: int, timeout_s: float = 10.0) -> None:
        """Block until ``runs`` runs have begun (e.g. one is being held at the gate)."""
        with self._started:
            assert self._started.wait_for(lambda: len(self.ran) >= runs, timeout_s), (len(self.ran), runs)
