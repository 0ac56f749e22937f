"""Serving: requests that arrive on their own, run by the plan of the tenants that have work.

A plan runs one round in which every tenant has one query. Real traffic is not like that:
each tenant's requests arrive on their own schedule and some tenants are idle. :class:`Server`
queues each request under its tenant and one dispatcher thread repeatedly takes the requests
waiting at that moment, at most one per tenant (the oldest of each), and runs the plan of
exactly that *active set* (:meth:`PlanSet.runner`), so idle tenants cost nothing.

With ``lanes`` > 1, up to that many dispatches run at once, each on tenants the others are
not running (a tenant's requests still run one at a time, in order). A request that arrives
while a long dispatch runs then starts at once instead of waiting for it; a dispatch that
starts beside others runs its plan on its share of the cores (``share``, :meth:`PlanSet.runner`):
one that started alone keeps the threads it started with, so while both run the device may
be oversubscribed by up to one dispatch's threads.

Requests of one tenant are never batched together: a plan is compiled for one batch shape
and a request already carries a whole batch of that shape.

When tenants have latency objectives (``slo_ms``), :func:`choose_active` may leave some
waiting tenants for the next dispatch so that the most urgent one meets its deadline (the
rule is in its docstring). Every submitted request ends in exactly one of: completed, failed
(its dispatch raised), rejected (its queue was full) or cancelled (by ``close()`` or by the
caller's ``Future.cancel()`` before it ran); :meth:`Server.stats` counts each, with latency
percentiles and SLO attainment per tenant, as the serving literature reports them.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from cosched.errors import ConfigError, QueueFull, RuntimeFailure, ServerClosed
from cosched.runtime.servestats import Samples, ServerStats, TenantStats

__all__ = ["PlanSet", "Runner", "Server", "ServerStats", "TenantStats", "choose_active", "set_name"]

log = logging.getLogger(__name__)

Outputs = dict[str, np.ndarray]

#: weight of the newest measured run time in a set's moving average: follows drift, damps noise
EWMA_WEIGHT = 0.25


class Runner(Protocol):
    """The plan of one active set, ready to run (an executor inside)."""

    tenants: frozenset[str]
    source: str  # "compiled" (found by the search) or "composed" (made by the runtime from the full plan)

    def run(self, inputs: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, np.ndarray]]: ...


class PlanSet(Protocol):
    """Plans for every set of active tenants (:class:`cosched.runtime.plancache.PlanCache`)."""

    tenants: tuple[str, ...]
    slo_ms: Mapping[str, float]

    def check_request(self, tenant: str, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]: ...

    def predicted_ms(self, active: frozenset[str]) -> float | None: ...

    def runner(self, active: frozenset[str], share: int = 1) -> Runner: ...
    """``share``: how many dispatches run at once, this one included; the runner's plan
    takes that share of the device (its threads)."""

    def sources(self) -> dict[frozenset[str], str]: ...

    def close(self) -> None: ...


def set_name(tenants: frozenset[str] | Sequence[str]) -> str:
    """How stats and logs name an active set: its sorted tenant names joined by ``+``."""
    return "+".join(sorted(tenants))


def choose_active(candidates: Sequence[tuple[str, float]], now_ms: float,
                  estimate_ms: Callable[[frozenset[str]], float | None]) -> frozenset[str]:
    """The tenants to dispatch now, from ``candidates``: (tenant, deadline in ms) of each
    waiting tenant's oldest request, in the order they were submitted (``math.inf``: no SLO).

    The rule: let U be the most urgent candidate (earliest deadline; ties by submit order).
    If U would miss its deadline running with every candidate (``now + est(all) > deadline``)
    but would meet it in a smaller set, drop the least urgent candidates (latest deadline
    first) until U meets it; the dropped wait for the next dispatch. Otherwise every
    candidate goes: when the estimate of all is unknown, when U meets its deadline anyway,
    and when no smaller set with a known estimate would meet it (shrinking would then cost
    throughput and save no deadline). Tenants without an SLO are dropped first, so under a
    sustained overload of urgent work they wait: that is what priorities mean.
    """
    order = sorted(range(len(candidates)), key=lambda i: candidates[i][1])  # stable: ties by submit order
    ranked = [candidates[i] for i in order]
    everyone = frozenset(t for t, _ in ranked)
    deadline = ranked[0][1] if ranked else math.inf
    if len(ranked) < 2 or math.isinf(deadline):
        return everyone
    est_all = estimate_ms(everyone)
    if est_all is None or now_ms + est_all <= deadline:
        return everyone
    for keep in range(len(ranked) - 1, 0, -1):
        subset = frozenset(t for t, _ in ranked[:keep])
        est = estimate_ms(subset)
        if est is not None and now_ms + est <= deadline:
            return subset
    return everyone


@dataclass
class _Counts:
    submitted: int = 0
    completed: int = 0
    failed: int = 0
    rejected: int = 0
    cancelled: int = 0
    met_slo: int = 0
    queue_ms: float = 0.0
    exec_ms: float = 0.0
    latencies: Samples = field(default_factory=Samples)


@dataclass(eq=False)
class _Request:
    tenant: str
    inputs: dict[str, np.ndarray]
    future: Future[Outputs]
    submitted: float  # clock seconds


class Server:
    """Serves requests on the plans of ``plans`` (see the module docstring).

    ``submit`` is thread-safe and never blocks on execution. A request whose tenant already
    has ``queue_size`` requests queued is rejected: its future is returned already failed
    with :class:`~cosched.errors.QueueFull` (counted as rejected), so that a load generator
    handles refusal and failure the same way, through the future. Bad requests (unknown
    tenant, wrong inputs) raise at once and are not counted; so does ``submit`` after
    ``close()`` (:class:`~cosched.errors.ServerClosed`). The arrays of a request are read
    when it runs: do not modify them after submitting.

    ``priorities``: order dispatches by the SLOs (:func:`choose_active`); without, every
    waiting tenant goes in each dispatch. ``lanes``: how many dispatches may run at once
    (see the module docstring). ``clock`` (seconds) is injectable for tests.
    """

    def __init__(self, plans: PlanSet, *, queue_size: int = 64, priorities: bool = True, lanes: int = 1,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        if not isinstance(queue_size, int) or queue_size < 1:
            raise ConfigError(f"queue_size must be an integer >= 1, got {queue_size!r}")
        if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes < 1:
            raise ConfigError(f"lanes must be an integer >= 1, got {lanes!r}")
        self._plans = plans
        self._tenants = tuple(plans.tenants)
        self._slo = {t: float(plans.slo_ms[t]) for t in self._tenants if t in plans.slo_ms}
        self.queue_size = queue_size
        self.priorities = priorities
        self._clock = clock
        self._cond = threading.Condition()
        self._queues: dict[str, deque[_Request]] = {t: deque() for t in self._tenants}
        self._counts = {t: _Counts() for t in self._tenants}
        self._per_set: dict[str, int] = {}
        self._sources: dict[str, str] = {}
        self._dispatches = 0
        self._measured_ms: dict[frozenset[str], float] = {}  # EWMA of run times per set
        self._predicted: dict[frozenset[str], float | None] = {}
        self._closing = False
        self._close_error: BaseException | None = None
        self.lanes = lanes
        self._running: set[str] = set()  # tenants of the dispatches running now
        self._held: set[str] = set()     # tenants the SLO rule keeps waiting until a dispatch ends
        self._busy = 0                    # dispatches running now
        self._overlapped = 0
        self._alive = lanes               # lane threads not yet stopped; the last one closes the plans
        self._threads = [threading.Thread(target=self._serve, name="cosched-serve" + (f"-{i}" if i else ""),
                                          daemon=True) for i in range(lanes)]
        for thread in self._threads:
            thread.start()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the caller's side ---------------------------------------------------------------

    def submit(self, tenant: str, inputs: Mapping[str, Any]) -> Future[Outputs]:
        """Queue one request; its future gives that tenant's outputs (name -> array)."""
        checked = self._plans.check_request(tenant, inputs)
        if tenant not in self._queues:
            raise ConfigError(f"unknown tenant {tenant!r}: the plan serves {list(self._tenants)}")
        future: Future[Outputs] = Future()
        with self._cond:
            if self._closing:
                raise ServerClosed(f"request for tenant {tenant!r} submitted after close(); the server is closed")
            queue, counts = self._queues[tenant], self._counts[tenant]
            counts.submitted += 1
            if len(queue) >= self.queue_size:  # requests the caller cancelled free their places first
                kept = [r for r in queue if not r.future.cancelled()]
                counts.cancelled += len(queue) - len(kept)
                queue.clear()
                queue.extend(kept)
            if len(queue) >= self.queue_size:
                counts.rejected += 1
                future.set_exception(QueueFull(
                    f"tenant {tenant!r}: queue full ({len(queue)} requests pending, queue_size={self.queue_size}); "
                    "request rejected: submit more slowly or raise queue_size"))
                return future
            queue.append(_Request(tenant, checked, future, self._clock()))
            self._cond.notify()
        return future

    def close(self, cancel_pending: bool = False, timeout_s: float | None = None) -> None:
        """Stop accepting requests, then stop the dispatcher and close the plans.

        By default every queued request runs first. With ``cancel_pending``, queued requests
        are failed with :class:`~cosched.errors.ServerClosed` instead; the dispatch already
        running always completes (a run cannot be interrupted). ``timeout_s`` bounds the wait
        for the queue to drain: requests still queued then are failed the same way. Every
        future is done when this returns (unless called from a future's callback, which runs
        on the dispatcher thread: it then returns at once). Idempotent.
        """
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if cancel_pending:
            self._cancel_queued("cancelled by close() before it ran")
        if threading.current_thread() in self._threads:
            return
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if any(t.is_alive() for t in self._threads):
            self._cancel_queued(f"cancelled: close() timed out after {timeout_s} s before it ran")
            for thread in self._threads:
                thread.join()
        if self._close_error is not None:
            error, self._close_error = self._close_error, None
            raise error

    def stats(self) -> ServerStats:
        """Counters, latency percentiles and SLO attainment so far (a consistent snapshot)."""
        with self._cond:  # copied under the lock, percentiles outside it
            snap = [(t, replace(c, latencies=Samples()), list(c.latencies.values)) for t, c in self._counts.items()]
            per_set, sources, dispatches = dict(self._per_set), dict(self._sources), self._dispatches
            overlapped = self._overlapped
        return ServerStats(tuple(self._tenant_stats(t, c, lat) for t, c, lat in snap), dispatches, per_set, sources,
                           overlapped)

    def _tenant_stats(self, tenant: str, c: _Counts, latencies: list[float]) -> TenantStats:
        finished = c.completed + c.failed + c.rejected + c.cancelled
        slo = self._slo.get(tenant)
        p50, p95, p99 = (float(v) for v in np.percentile(latencies, [50, 95, 99])) if latencies else (None,) * 3
        return TenantStats(
            tenant, c.submitted, c.completed, c.failed, c.rejected, c.cancelled, c.submitted - finished, slo,
            None if slo is None or finished == 0 else c.met_slo / finished, p50, p95, p99,
            c.queue_ms / c.completed if c.completed else None, c.exec_ms / c.completed if c.completed else None)

    def _cancel_queued(self, reason: str) -> None:
        with self._cond:
            queued = [r for q in self._queues.values() for r in q]
            for q in self._queues.values():
                q.clear()
            for r in queued:
                self._counts[r.tenant].cancelled += 1
        for r in queued:  # outside the lock: callbacks run here and may call submit
            if r.future.set_running_or_notify_cancel():  # False: the caller cancelled it already
                r.future.set_exception(ServerClosed(f"request for tenant {r.tenant!r} {reason}"))

    # -- the dispatcher thread -------------------------------------------------------------

    def _serve(self) -> None:
        try:
            while (batch := self._next_dispatch()) is not None:
                requests, share, held = batch
                try:
                    self._dispatch(requests, share)
                finally:
                    with self._cond:
                        self._running.difference_update(r.tenant for r in requests)
                        self._held.difference_update(held)
                        self._busy -= 1
                        self._cond.notify_all()
        except BaseException:  # a bug of the server's own: refuse new work, leave no future pending
            log.exception("serve: the dispatcher thread failed")
            with self._cond:
                self._closing = True
                self._cond.notify_all()
            self._cancel_queued("not run: the server's dispatcher thread failed (see the log)")
            raise
        finally:
            with self._cond:
                self._alive -= 1
                last = self._alive == 0
            if last:
                try:
                    self._plans.close()
                except Exception as e:  # reported by close(), the caller's thread
                    self._close_error = e

    def _next_dispatch(self) -> tuple[list[_Request], int, frozenset[str]] | None:
        """The requests of the next dispatch, popped from their queues; how many dispatches
        run with it (itself included); and the tenants the SLO rule left waiting for it, held
        until it ends (so that no other lane runs them beside it, against the rule's
        estimate). None when closing and nothing is queued. Only tenants that no lane is
        running or holding are candidates."""
        with self._cond:
            while True:
                while not (ready := [t for t, q in self._queues.items()
                                     if q and t not in self._running and t not in self._held]):
                    if self._closing and not any(self._queues.values()):
                        return None
                    self._cond.wait()
                heads = sorted((self._queues[t][0] for t in ready), key=lambda r: r.submitted)
                active = self._choose(heads) if self.priorities else frozenset(r.tenant for r in heads)
                batch = []
                for r in heads:
                    if r.tenant not in active:
                        continue
                    self._queues[r.tenant].popleft()
                    if r.future.set_running_or_notify_cancel():
                        batch.append(r)
                    else:  # the caller cancelled it while it was queued
                        self._counts[r.tenant].cancelled += 1
                if batch:
                    break
            held = frozenset(r.tenant for r in heads) - active
            if held:
                log.debug("serve: %s goes, of %s waiting, to meet an SLO", set_name(active),
                          set_name([r.tenant for r in heads]))
            self._running.update(r.tenant for r in batch)
            self._held.update(held)
            self._busy += 1
            if self._busy > 1:
                self._overlapped += 1
            return batch, self._busy, held

    def _choose(self, heads: list[_Request]) -> frozenset[str]:
        candidates = [(r.tenant, 1000 * r.submitted + self._slo.get(r.tenant, math.inf)) for r in heads]
        return choose_active(candidates, 1000 * self._clock(), self._estimate_ms)

    def _estimate_ms(self, active: frozenset[str]) -> float | None:
        if active in self._measured_ms:
            return self._measured_ms[active]
        if active not in self._predicted:
            self._predicted[active] = self._plans.predicted_ms(active)
        return self._predicted[active]

    def _dispatch(self, batch: list[_Request], share: int = 1) -> None:
        active = frozenset(r.tenant for r in batch)
        name = set_name(active)
        start = ran = self._clock()
        source: str | None = None
        try:
            runner = self._plans.runner(active, share) if share > 1 else self._plans.runner(active)
            source = runner.source
            ran = self._clock()
            outputs: dict[str, dict[str, np.ndarray]] | None = runner.run({r.tenant: r.inputs for r in batch})
            end = self._clock()
            error: BaseException | None = None
        except BaseException as e:  # the batch's futures complete below whatever it was
            outputs, end, error = None, self._clock(), e
        results: list[tuple[_Request, Outputs | Exception]] = []
        for r in batch:
            if error is not None:
                results.append((r, _failure(f"the dispatch of active set {name} failed", error)))
            elif outputs is None or r.tenant not in outputs:
                results.append((r, RuntimeFailure(f"the plan of active set {name} returned no outputs for tenant "
                                                  f"{r.tenant!r}")))
            else:
                results.append((r, outputs[r.tenant]))
        with self._cond:  # counted before the futures complete, so done futures imply consistent stats
            self._dispatches += 1
            self._per_set[name] = self._per_set.get(name, 0) + 1
            if source is not None:
                self._sources[name] = source
            if error is None and share == 1:  # the rule estimates runs on the whole device
                run_ms = 1000 * (end - ran)
                old = self._measured_ms.get(active)
                self._measured_ms[active] = run_ms if old is None else old + EWMA_WEIGHT * (run_ms - old)
            for r, result in results:
                self._count(r, result, start, end)
        log.debug("serve: dispatch %d ran %s (%s) in %.2f ms%s", self._dispatches, name, source,
                  1000 * (end - start), f", failed: {error}" if error else "")
        for r, result in results:
            if isinstance(result, Exception):
                r.future.set_exception(result)
            else:
                r.future.set_result(result)
        if error is not None and not isinstance(error, Exception):  # KeyboardInterrupt, SystemExit: after
            raise error                                               # every future of the batch is done

    def _count(self, r: _Request, result: Outputs | Exception, start: float, end: float) -> None:
        counts = self._counts[r.tenant]
        if isinstance(result, Exception):
            counts.failed += 1
            return
        latency = 1000 * (end - r.submitted)
        counts.completed += 1
        counts.latencies.add(latency)
        counts.queue_ms += 1000 * (start - r.submitted)
        counts.exec_ms += 1000 * (end - start)
        slo = self._slo.get(r.tenant)
        if slo is not None and latency <= slo:
            counts.met_slo += 1


def _failure(message: str, error: BaseException) -> RuntimeFailure:
    failure = RuntimeFailure(f"{message}: {type(error).__name__}: {error}")
    failure.__cause__ = error
    return failure
