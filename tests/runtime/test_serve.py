"""The server loop: every request answered by its own outputs, exactly once; backpressure,
close and failures leave no future pending; the SLO priority rule; stats."""

from __future__ import annotations

import json
import math
import threading
from concurrent.futures import Future, wait

import numpy as np
import pytest
from serve_fakes import FakeClock, FakePlanSet

from cosched.errors import ConfigError, InputError, QueueFull, RuntimeFailure, ServerClosed
from cosched.runtime import servestats
from cosched.runtime.serve import Server, choose_active

AB = ("a", "b")
ABC = ("a", "b", "c")


def _x(v: float) -> dict[str, np.ndarray]:
    return {"x": np.full((2, 3), v, dtype=np.float32)}


def _value(future: Future) -> float:  # type: ignore[type-arg]
    y = future.result(timeout=10)["y"]
    assert y.shape == (2, 3) and np.all(y == y.flat[0])
    return float(y.flat[0])


def test_each_request_gets_its_own_outputs() -> None:
    plans = FakePlanSet(ABC)
    with Server(plans) as server:
        futures = {(t, i): server.submit(t, _x(100 * k + i)) for i in range(5) for k, t in enumerate(ABC)}
        for (t, i), f in futures.items():
            assert _value(f) == 2 * (100 * ABC.index(t) + i)
    assert plans.closed == 1
    assert plans.runner_threads == {"cosched-serve"}  # runners are built on the dispatcher thread only
    assert all(len(s) <= 3 for s in plans.ran)
    st = server.stats()
    assert [(t.tenant, t.submitted, t.completed, t.pending) for t in st.tenants] == [(t, 5, 5, 0) for t in ABC]
    assert st.dispatches == len(plans.ran) == sum(st.per_set.values())


def test_each_tenant_is_served_oldest_first_one_request_per_dispatch() -> None:
    plans = FakePlanSet(AB)
    plans.gate.clear()
    server = Server(plans)
    server.submit("b", _x(0))
    plans.wait_started(1)
    for v in (1, 2, 3):
        server.submit("a", _x(v))
    server.submit("b", _x(4))
    plans.gate.set()
    server.close()
    assert plans.ran == [frozenset("b"), frozenset(AB), frozenset("a"), frozenset("a")]
    assert [v for t, v in plans.seen if t == "a"] == [1, 2, 3]


def test_concurrent_submitters_every_future_done_once_with_its_own_result() -> None:
    tenants = ("a", "b", "c", "d")
    plans = FakePlanSet(tenants)
    server = Server(plans, queue_size=1000)
    done_calls: dict[float, int] = {}
    lock = threading.Lock()
    results: dict[float, Future] = {}  # type: ignore[type-arg]

    def on_done(value: float) -> object:
        def callback(_: Future) -> None:  # type: ignore[type-arg]
            with lock:
                done_calls[value] = done_calls.get(value, 0) + 1
        return callback

    def submitter(k: int) -> None:
        for i in range(50):
            value = float(1000 * k + i)
            f = server.submit(tenants[k % 4], _x(value))
            f.add_done_callback(on_done(value))
            with lock:
                results[value] = f

    threads = [threading.Thread(target=submitter, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    server.close()
    assert len(results) == 400
    assert all(f.done() for f in results.values())
    assert {v: _value(f) for v, f in results.items()} == {v: 2 * v for v in results}
    assert done_calls == dict.fromkeys(results, 1)
    seen = sorted(v for _, v in plans.seen)
    assert seen == sorted(results)  # each request ran exactly once: none lost, none duplicated
    for tenant, v in plans.seen:
        assert tenants[int(v) // 1000 % 4] == tenant
    st = server.stats()
    assert sum(t.submitted for t in st.tenants) == sum(t.completed for t in st.tenants) == 400
    assert all(t.failed == t.rejected == t.cancelled == t.pending == 0 for t in st.tenants)
    assert st.dispatches == len(plans.ran) == sum(st.per_set.values())
    assert sum(len(s) for s in plans.ran) == 400


def test_full_queue_rejects_with_reason_and_counts_it() -> None:
    plans = FakePlanSet(AB)
    plans.gate.clear()
    server = Server(plans, queue_size=2)
    running = server.submit("a", _x(1))
    plans.wait_started(1)
    queued = [server.submit("a", _x(v)) for v in (2, 3)]
    other = server.submit("b", _x(9))  # each tenant has its own queue
    rejected = server.submit("a", _x(4))
    assert rejected.done()
    with pytest.raises(QueueFull, match=r"tenant 'a': queue full \(2 requests pending, queue_size=2\)"):
        rejected.result()
    plans.gate.set()
    server.close()
    assert [_value(f) for f in (running, *queued, other)] == [2, 4, 6, 18]
    a = server.stats().tenant("a")
    assert (a.submitted, a.completed, a.rejected, a.pending) == (4, 3, 1, 0)


def test_bad_requests_raise_at_once_and_are_not_counted() -> None:
    with Server(FakePlanSet(AB)) as server:
        with pytest.raises(ConfigError, match="unknown tenant 'z'"):
            server.submit("z", _x(1))
        with pytest.raises(InputError, match="tenant 'a'"):
            server.submit("a", {"w": np.zeros(1)})
        assert sum(t.submitted for t in server.stats().tenants) == 0
    with pytest.raises(ConfigError, match="queue_size"):
        Server(FakePlanSet(AB), queue_size=0)


def test_close_drains_by_default_then_refuses() -> None:
    plans = FakePlanSet(AB, sleep_s=0.002)
    server = Server(plans)
    futures = [server.submit(t, _x(i)) for i in range(10) for t in AB]
    server.close()
    assert all(f.done() for f in futures)
    assert [_value(f) for f in futures] == [2 * i for i in range(10) for _ in AB]
    with pytest.raises(ServerClosed, match="tenant 'a' submitted after close"):
        server.submit("a", _x(1))
    server.close()  # idempotent
    assert plans.closed == 1


def test_close_cancel_pending_fails_queued_with_the_reason_and_finishes_the_running() -> None:
    plans = FakePlanSet(AB)
    plans.gate.clear()
    server = Server(plans)
    running = server.submit("a", _x(1))
    plans.wait_started(1)
    queued = [server.submit(t, _x(2)) for t in AB]
    closer = threading.Thread(target=server.close, kwargs={"cancel_pending": True})
    closer.start()
    wait(queued, timeout=10)
    for f in queued:
        with pytest.raises(ServerClosed, match=r"cancelled by close\(\) before it ran"):
            f.result()
    assert not running.done()
    plans.gate.set()
    closer.join(10)
    assert not closer.is_alive()
    assert _value(running) == 2
    st = server.stats()
    assert [(t.completed, t.cancelled, t.pending) for t in st.tenants] == [(1, 1, 0), (0, 1, 0)]
    assert plans.ran == [frozenset("a")] and plans.closed == 1


def test_close_timeout_cancels_what_is_still_queued() -> None:
    plans = FakePlanSet(AB)
    plans.gate.clear()
    server = Server(plans)
    running = server.submit("a", _x(1))
    plans.wait_started(1)
    queued = server.submit("b", _x(2))
    closer = threading.Thread(target=server.close, kwargs={"timeout_s": 0.05})
    closer.start()
    with pytest.raises(ServerClosed, match=r"close\(\) timed out after 0\.05 s"):
        queued.result(timeout=10)
    plans.gate.set()
    closer.join(10)
    assert _value(running) == 2 and not closer.is_alive()


def test_caller_cancel_before_run_is_counted_and_not_run() -> None:
    plans = FakePlanSet(AB)
    plans.gate.clear()
    server = Server(plans)
    server.submit("a", _x(1))
    plans.wait_started(1)
    doomed = server.submit("b", _x(5))
    assert doomed.cancel()
    plans.gate.set()
    server.close()
    assert (5.0 not in [v for _, v in plans.seen]) and server.stats().tenant("b").cancelled == 1


def test_a_failing_run_fails_exactly_its_dispatch_and_serving_goes_on() -> None:
    plans = FakePlanSet(ABC, fail=lambda active, inputs: any(float(v["x"].flat[0]) < 0 for v in inputs.values()))
    plans.gate.clear()
    server = Server(plans)
    first = server.submit("c", _x(1))
    plans.wait_started(1)
    doomed = [server.submit("a", _x(-1)), server.submit("b", _x(3))]
    plans.gate.set()
    wait(doomed, timeout=10)
    for f in doomed:
        with pytest.raises(RuntimeFailure, match=r"active set a\+b failed: ValueError: injected failure") as info:
            f.result()
        assert isinstance(info.value.__cause__, ValueError)
    after = [server.submit(t, _x(7)) for t in ABC]
    server.close()
    assert _value(first) == 2 and [_value(f) for f in after] == [14] * 3
    st = server.stats()
    assert [(t.completed, t.failed) for t in st.tenants] == [(1, 1), (1, 1), (2, 0)]


# -- the priority rule, on numbers --------------------------------------------------------

def _est(table: dict[str, float]) -> object:
    return lambda s: table.get("+".join(sorted(s)))


def test_rule_shrinks_to_the_urgent_tenant_when_that_meets_its_deadline() -> None:
    est = _est({"a+b+c": 30, "a+b": 20, "a": 8})
    cands = [("c", math.inf), ("b", 50.0), ("a", 10.0)]
    assert choose_active(cands, 0.0, est) == {"a"}
    assert choose_active(cands, 0.0, _est({"a+b+c": 30, "a+b": 9, "a": 8})) == {"a", "b"}  # drops c only


def test_rule_keeps_everyone_when_shrinking_does_not_help_or_is_not_needed() -> None:
    cands = [("a", 10.0), ("b", 50.0), ("c", math.inf)]
    assert choose_active(cands, 0.0, _est({"a+b+c": 9})) == {"a", "b", "c"}          # meets it anyway
    assert choose_active(cands, 0.0, _est({"a+b+c": 30, "a+b": 20, "a": 12})) == {"a", "b", "c"}  # misses alone too
    assert choose_active(cands, 5.0, _est({"a+b+c": 30, "a": 8})) == {"a", "b", "c"}  # too late even alone
    assert choose_active([("a", math.inf), ("b", math.inf)], 0.0, _est({})) == {"a", "b"}  # no SLOs
    assert choose_active([("a", 1.0)], 0.0, _est({"a": 50})) == {"a"}


def test_rule_does_not_shrink_on_unknown_estimates() -> None:
    cands = [("a", 10.0), ("b", 50.0)]
    assert choose_active(cands, 0.0, _est({"a": 1})) == {"a", "b"}  # est(all) unknown
    assert choose_active(cands, 0.0, _est({"a+b": 30})) == {"a", "b"}  # est(a) unknown


def test_urgent_tenant_goes_alone_first_end_to_end() -> None:
    def serve_once(priorities: bool) -> list[frozenset[str]]:
        clock = FakeClock()  # frozen: deadlines and estimates decide, not this machine's speed
        plans = FakePlanSet(ABC, slo_ms={"a": 10, "b": 1000}, clock=clock,
                            predicted={frozenset(ABC): 50, frozenset("ab"): 40, frozenset("a"): 5})
        plans.gate.clear()
        server = Server(plans, priorities=priorities, clock=clock)
        futures = [server.submit("b", _x(0))]
        plans.wait_started(1)
        futures += [server.submit(t, _x(1)) for t in ("c", "b", "a")]
        plans.gate.set()
        server.close()
        assert [_value(f) for f in futures] == [0, 2, 2, 2]
        return plans.ran

    assert serve_once(True) == [frozenset("b"), frozenset("a"), frozenset("bc")]
    assert serve_once(False) == [frozenset("b"), frozenset("abc")]


def test_measured_run_times_replace_the_prediction() -> None:
    clock = FakeClock()
    plans = FakePlanSet(AB, slo_ms={"a": 10}, clock=clock, run_ms=lambda inputs: 2.0,
                        predicted={frozenset(AB): 50, frozenset("a"): 5})
    server = Server(plans, clock=clock)
    plans.gate.clear()
    server.submit("b", _x(0))
    plans.wait_started(1)
    late = [server.submit(t, _x(1)) for t in AB]
    clock.advance_ms(20)  # a's deadline has passed: going alone would not save it, so a+b runs
    plans.gate.set()
    wait(late, timeout=10)
    plans.gate.clear()
    server.submit("b", _x(0))
    plans.wait_started(3)
    on_time = [server.submit(t, _x(1)) for t in AB]  # a+b measured 2 ms, not the 50 predicted
    plans.gate.set()
    server.close()
    assert [_value(f) for f in late + on_time] == [2] * 4
    assert plans.ran == [frozenset("b"), frozenset(AB), frozenset("b"), frozenset(AB)]


# -- stats --------------------------------------------------------------------------------

def test_stats_percentiles_and_slo_attainment_on_known_latencies() -> None:
    clock = FakeClock()
    plans = FakePlanSet(AB, slo_ms={"a": 50}, clock=clock, run_ms=lambda inputs: float(inputs["a"]["x"].flat[0]),
                        composed={frozenset("a")})
    latencies = [float(v) for v in np.random.default_rng(0).permutation(np.arange(1, 101))]
    with Server(plans, clock=clock) as server:
        for ms in latencies:  # one at a time: the latency of each is its run time
            server.submit("a", _x(ms)).result(timeout=10)
    st = server.stats()
    a = st.tenant("a")
    want = np.percentile(latencies, [50, 95, 99])
    np.testing.assert_allclose([a.p50_ms, a.p95_ms, a.p99_ms], want, rtol=1e-6)
    np.testing.assert_allclose([a.mean_exec_ms, a.mean_queue_ms], [np.mean(latencies), 0.0], rtol=1e-6, atol=1e-6)
    assert a.slo_ms == 50 and a.slo_attainment == pytest.approx(0.5)  # 1..50 ms within 50 ms
    b = st.tenant("b")
    assert b.slo_ms is None and b.slo_attainment is None and b.p50_ms is None and b.submitted == 0
    assert st.per_set == {"a": 100} and st.composed == ("a",) and st.sources == {"a": "composed"}
    assert json.loads(json.dumps(st.as_dict())) == st.as_dict()
    table = st.format()
    assert table.splitlines()[0].split()[:3] == ["tenant", "submitted", "done"]
    assert "50.0%" in table and "a: 100 (composed)" in table
    with pytest.raises(ConfigError, match="no tenant 'z'"):
        st.tenant("z")


def test_slo_attainment_counts_failed_rejected_and_cancelled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(servestats, "MAX_SAMPLES", 3)
    plans = FakePlanSet(AB, slo_ms={"a": 1e9}, fail=lambda active, inputs: float(inputs["a"]["x"].flat[0]) < 0)
    plans.gate.clear()
    server = Server(plans, queue_size=1)
    ok = server.submit("a", _x(1))
    plans.wait_started(1)
    bad = server.submit("a", _x(-1))
    rejected = server.submit("a", _x(2))
    plans.gate.set()
    wait([ok, bad], timeout=10)
    plans.gate.clear()
    server.submit("a", _x(20))
    plans.wait_started(3)
    doomed = server.submit("a", _x(21))
    assert doomed.cancel()
    plans.gate.set()
    for v in range(4):
        server.submit("a", _x(v + 10)).result(timeout=10)
    server.close()
    a = server.stats().tenant("a")
    assert isinstance(rejected.exception(), QueueFull) and isinstance(bad.exception(), RuntimeFailure)
    assert (a.submitted, a.completed, a.failed, a.rejected, a.cancelled, a.pending) == (9, 6, 1, 1, 1, 0)
    assert a.slo_attainment == pytest.approx(6 / 9)
    assert len(server._counts["a"].latencies.values) == 3  # capped, a uniform sample of the 6


# -- a real plan ----------------------------------------------------------------------------

NAMES = ["resnet50", "mobilenet_v2"]


def _serve_real(device: str, threads: int, per_thread: int) -> None:
    """Serve the tiny pair from several threads, distinct inputs per request; each response
    equals its tenant run alone, op by op, on those inputs."""
    import cosched
    from cosched import zoo
    from cosched.ir.cut import tenant_graph
    from cosched.runtime import SequentialExecutor, random_inputs
    from cosched.runtime.plancache import PlanCache

    compiled = cosched.compile([zoo.export(n, size="tiny") for n in NAMES], names=NAMES, trials=5,
                               cost_model="roofline", device=device)
    alone = {t: tenant_graph(compiled.graph, [t]) for t in NAMES}
    requests = {(k, i): (NAMES[(k + i) % 2], random_inputs(alone[NAMES[(k + i) % 2]], seed=100 * k + i))
                for k in range(threads) for i in range(per_thread)}
    futures: dict[tuple[int, int], Future] = {}  # type: ignore[type-arg]
    with Server(PlanCache(compiled.plan, compiled.graph)) as server:
        def submitter(k: int) -> None:
            for i in range(per_thread):
                tenant, inputs = requests[k, i]
                futures[k, i] = server.submit(tenant, inputs[tenant])

        workers = [threading.Thread(target=submitter, args=(k,)) for k in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        wait(list(futures.values()), timeout=300)
    references = {t: SequentialExecutor(g) for t, g in alone.items()}
    for key, (tenant, inputs) in requests.items():
        got, want = futures[key].result(timeout=0), references[tenant].run(inputs)[tenant]
        assert set(got) == set(want)
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-5, err_msg=f"{key} {tenant} {name}")
    st = server.stats()
    assert sum(t.completed for t in st.tenants) == len(requests) == sum(t.submitted for t in st.tenants)
    assert set(st.per_set) <= {"mobilenet_v2", "resnet50", "mobilenet_v2+resnet50"}
    assert all(st.sources[s] == "composed" for s in st.per_set if "+" not in s)  # no set plans compiled


def test_real_plan_each_response_equals_its_tenant_run_alone() -> None:
    _serve_real("cpu", threads=4, per_thread=6)


@pytest.mark.gpu
def test_real_plan_on_cuda_each_response_equals_its_tenant_run_alone() -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # float32 tolerance
    try:
        _serve_real("cuda", threads=3, per_thread=4)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32


def test_lanes_start_an_idle_tenant_beside_a_running_dispatch() -> None:
    plans = FakePlanSet(AB)
    plans.hold = {"a"}
    plans.gate.clear()
    with Server(plans, lanes=2) as server:
        first_a = server.submit("a", _x(1))
        plans.wait_started(1)
        second_a = server.submit("a", _x(2))  # a is running: waits for it, in order
        b = server.submit("b", _x(3))
        assert _value(b) == 6  # ran beside the held dispatch of a
        assert not first_a.done() and not second_a.done()
        plans.gate.set()
        assert (_value(first_a), _value(second_a)) == (2, 4)
        stats = server.stats()
    assert plans.ran == [frozenset("a"), frozenset("b"), frozenset("a")]
    assert (frozenset("b"), 2) in plans.shares  # b took half of the device
    assert plans.shares[0] == (frozenset("a"), 1)
    assert stats.overlapped == 1 and "1 beside another" in stats.format()
    assert plans.runner_threads <= {"cosched-serve", "cosched-serve-1"} and plans.closed == 1


def test_lanes_leave_no_request_behind_under_concurrent_submitters() -> None:
    plans = FakePlanSet(ABC, sleep_s=0.001)
    futures: list[tuple[float, Future]] = []
    lock = threading.Lock()
    server = Server(plans, lanes=3, queue_size=240)

    def client(k: int) -> None:
        for i in range(40):
            value = 1000 * k + i
            f = server.submit(ABC[(k + i) % 3], _x(value))
            with lock:
                futures.append((value, f))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    server.close()
    assert all(f.done() for _, f in futures) and len(futures) == 240
    assert sorted(_value(f) for _, f in futures) == sorted(2 * v for v, _ in futures)
    assert sorted(v for _, v in plans.seen) == sorted(v for v, _ in futures)  # each input ran exactly once
    assert sum(t.completed for t in server.stats().tenants) == 240


def test_lanes_must_be_a_positive_integer() -> None:
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="lanes must be an integer >= 1"):
            Server(FakePlanSet(AB), lanes=bad)


def test_a_tenant_the_rule_left_waiting_does_not_run_beside_the_urgent_one() -> None:
    clock = FakeClock()
    plans = FakePlanSet(ABC, slo_ms={"a": 10}, clock=clock,
                        predicted={frozenset("ac"): 50, frozenset("a"): 5, frozenset("c"): 5})
    plans.hold = {"a"}
    plans.gate.clear()
    server = Server(plans, lanes=2, clock=clock)
    with server._cond:  # both queued before either lane looks (the condition's lock is reentrant)
        late, urgent = server.submit("c", _x(1)), server.submit("a", _x(2))
    plans.wait_started(1)
    assert plans.ran == [frozenset("a")]
    threading.Event().wait(0.2)  # the idle lane had every chance to take c
    assert plans.ran == [frozenset("a")] and not late.done()
    plans.gate.set()
    server.close()
    assert (_value(urgent), _value(late)) == (4, 2)
    assert plans.ran == [frozenset("a"), frozenset("c")] and server.stats().overlapped == 0
