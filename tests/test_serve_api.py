"""CompiledPlan.serve(): a compiled-to-serve plan, saved and loaded, answers requests from
several threads, each with its own outputs, on the plan of the tenants that had work."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest

import cosched
from cosched import zoo
from cosched.errors import ConfigError, ServerClosed
from cosched.execution.compare import compare_outputs
from cosched.ir.cut import tenant_graph
from cosched.runtime import SequentialExecutor

NAMES = ["mobilenet_v2", "dlrm", "bert"]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> cosched.CompiledPlan:
    compiled = cosched.compile([zoo.export(n, size="tiny") for n in NAMES], names=NAMES, cost_model="roofline",
                               trials=3, max_streams=2, in_situ=False, serve=True, slo_ms={"dlrm": 500.0})
    directory = tmp_path_factory.mktemp("serve") / "plan"
    compiled.save(directory)
    return cosched.load(directory)


@pytest.mark.parametrize("lanes", [1, 2])
def test_requests_from_threads_each_get_their_own_outputs(loaded: cosched.CompiledPlan, lanes: int) -> None:
    alone = {t: SequentialExecutor(tenant_graph(loaded.graph, [t])) for t in NAMES}
    sent: list[tuple[str, dict, Future]] = []
    lock = threading.Lock()
    with loaded.serve(lanes=lanes) as server:
        def client(seed: int) -> None:
            for i in range(6):
                tenant = NAMES[(seed + i) % len(NAMES)]
                inputs = loaded.inputs(seed=100 * seed + i)[tenant]  # distinct per request
                future = server.submit(tenant, inputs)
                with lock:
                    sent.append((tenant, inputs, future))

        threads = [threading.Thread(target=client, args=(s,)) for s in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        results = [(tenant, inputs, f.result(timeout=120)) for tenant, inputs, f in sent]
        stats = server.stats()
    for tenant, inputs, got in results:
        want = alone[tenant].run({tenant: inputs})
        assert compare_outputs({tenant: got}, want).agrees(1e-4)
    assert sum(t.completed for t in stats.tenants) == len(sent) == 24
    assert stats.tenant("dlrm").slo_ms == 500.0  # the SLOs the plan was compiled with
    assert not stats.composed and stats.dispatches <= 24


def test_a_set_without_a_plan_is_composed_and_reported(loaded: cosched.CompiledPlan) -> None:
    loaded.subsets.pop(frozenset({"mobilenet_v2"}))
    try:
        with loaded.serve(warm=False) as server:
            got = server.submit("mobilenet_v2", loaded.inputs(5)["mobilenet_v2"]).result(timeout=120)
            stats = server.stats()
    finally:
        loaded.subsets.clear()
        loaded.subsets.update(cosched.load(loaded.directory).subsets)
    want = SequentialExecutor(tenant_graph(loaded.graph, ["mobilenet_v2"])).run({"mobilenet_v2": loaded.inputs(5)[
        "mobilenet_v2"]})
    assert compare_outputs({"mobilenet_v2": got}, want).agrees(1e-4)
    assert stats.composed == ("mobilenet_v2",) and "(composed)" in stats.format()


def test_close_cancels_what_has_not_run_with_a_reason(loaded: cosched.CompiledPlan) -> None:
    server = loaded.serve(warm=False)
    futures = [server.submit("bert", loaded.inputs(i)["bert"]) for i in range(30)]
    server.close(cancel_pending=True)
    assert all(f.done() for f in futures)
    errors = [f.exception() for f in futures if f.exception() is not None]
    assert all(isinstance(e, ServerClosed) and "cancelled by close() before it ran" in str(e) for e in errors)
    done = [f for f in futures if f.exception() is None]
    assert all(isinstance(v, np.ndarray) for f in done for v in f.result().values())
    counts = server.stats().tenant("bert")
    assert counts.completed + counts.cancelled == 30 == len(done) + len(errors)
    with pytest.raises(ServerClosed, match="after close"):
        server.submit("bert", loaded.inputs(0)["bert"])


def test_serve_refuses_a_multi_device_plan(loaded: cosched.CompiledPlan, tmp_path: Path) -> None:
    two = cosched.CompiledPlan(loaded.plan.replace(devices=(object(),)), loaded.graph)
    with pytest.raises(ConfigError, match="one-device plans"):
        two.serve()
