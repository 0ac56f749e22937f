"""benchmarks.serve: arrival schedules, the summary maths on known records, the baseline systems'
queues, and the CLI end to end on the tiny mix (results and files, never timings)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks import serve, serve_report
from benchmarks.serve import Burst, max_sustained, schedule, summarise_run, tenant_rates
from benchmarks.serve_systems import QueueWorkers, available, response_error, serving_available
from cosched.errors import ConfigError, RuntimeFailure


# ------------------------------------------------------------------------------ arrivals
def test_a_schedule_is_seeded_sorted_and_numbers_each_tenants_requests() -> None:
    rates = {"a": 5.0, "b": 2.0}
    first = schedule(rates, 20.0, seed=3)
    assert first == schedule(rates, 20.0, seed=3)
    assert first != schedule(rates, 20.0, seed=4) and first != schedule(rates, 20.0, seed=3, repeat=1)
    times = [a.time_s for a in first]
    assert times == sorted(times) and times[0] >= 0 and times[-1] < 20.0
    for tenant in rates:
        assert [a.index for a in first if a.tenant == tenant] == list(range(sum(a.tenant == tenant for a in first)))


def test_a_tenants_arrivals_do_not_depend_on_the_other_tenants_rates() -> None:
    alone = [a for a in schedule({"a": 5.0, "b": 1.0}, 10.0, seed=1) if a.tenant == "a"]
    assert alone == [a for a in schedule({"a": 5.0, "b": 9.0}, 10.0, seed=1) if a.tenant == "a"]


@pytest.mark.parametrize("kind", ["poisson", "bursty"])
def test_rates_match_on_a_long_schedule(kind: str) -> None:
    rates, duration = {"a": 20.0, "b": 5.0}, 20000.0
    arrivals = schedule(rates, duration, kind, seed=0, burst=Burst(4.0, 0.5))
    for tenant, rate in rates.items():
        count = sum(a.tenant == tenant for a in arrivals)
        # the sd of a count over T is sqrt(T * rate) for Poisson, sqrt(T * (rate + 2.25 rate^2))
        # for these bursts (rate 20: 1.1 % of the mean): 5 % is more than 4 sd either way
        assert abs(count / duration - rate) < 0.05 * rate, (kind, tenant, count / duration)


def _window_counts(kind: str, rate: float, duration: float, seed: int) -> np.ndarray:
    times = np.array([a.time_s for a in schedule({"a": rate}, duration, kind, seed=seed, burst=Burst(4.0, 0.5))])
    return np.histogram(times, bins=int(duration), range=(0, duration))[0]


def test_bursty_keeps_the_mean_rate_and_counts_vary_more_than_poisson() -> None:
    poisson, bursty = _window_counts("poisson", 10.0, 20000.0, 5), _window_counts("bursty", 10.0, 20000.0, 5)
    assert abs(poisson.mean() - 10.0) < 0.2 and abs(bursty.mean() - 10.0) < 0.5  # > 4 sd of each mean
    assert 0.8 < poisson.var() / poisson.mean() < 1.2  # Poisson: variance = mean
    assert bursty.var() > 3 * poisson.var()  # ON at 4x the rate a quarter of the time: far burstier


def test_rates_split_by_weights_and_bad_weights_are_refused() -> None:
    assert tenant_rates(12.0, ["a", "b", "c"], {}) == {"a": 4.0, "b": 4.0, "c": 4.0}
    assert tenant_rates(12.0, ["a", "b"], {"a": 3}) == {"a": 9.0, "b": 3.0}
    with pytest.raises(ConfigError, match=r"unknown tenant.*'z'"):
        tenant_rates(1.0, ["a"], {"z": 1.0})
    with pytest.raises(ConfigError, match="--weights"):
        tenant_rates(1.0, ["a", "b"], {"a": 0.0, "b": 0.0})
    with pytest.raises(ConfigError, match="factor > 1"):
        Burst(1.0, 0.5)
    with pytest.raises(ConfigError, match="unknown arrivals"):
        schedule({"a": 1.0}, 1.0, "uniform")


# ------------------------------------------------------------------------------ summary
def _record(tenant: str, arrival: float, latency_ms: float | None, ok: bool = True) -> dict[str, Any]:
    done = None if latency_ms is None else arrival + latency_ms / 1e3
    return {"tenant": tenant, "arrival": arrival, "submit": arrival + 0.001, "done": done, "ok": ok}


def test_summary_percentiles_attainment_and_throughput_on_known_records() -> None:
    a_ms = [float(v) for v in range(1, 101)]  # 1 .. 100 ms
    records = [_record("a", i * 0.1, ms) for i, ms in enumerate(a_ms)]
    records += [_record("b", 0.0, 5.0), _record("b", 1.0, 50.0), _record("b", 2.0, None, ok=False),
                _record("b", 3.0, 1.0, ok=False)]  # failed, and a wrong response (done, but not ok)
    got = summarise_run(records, ["a", "b"], {"a": 90.0, "b": 10.0}, duration_s=10.0)
    a, b, both = got["a"], got["b"], got["all"]
    assert a["requests"] == 100 and a["completed"] == 100 and a["failed"] == 0
    assert a["p50_ms"] == pytest.approx(np.percentile(a_ms, 50)) and a["p99_ms"] == pytest.approx(99.01)
    assert a["attainment"] == pytest.approx(0.90) and a["throughput_rps"] == pytest.approx(10.0)
    assert b["requests"] == 4 and b["completed"] == 2 and b["failed"] == 2
    assert b["attainment"] == pytest.approx(0.25)  # 5 ms in; 50 ms late; two misses however fast
    assert b["p50_ms"] == pytest.approx(27.5) and b["throughput_rps"] == pytest.approx(0.2)
    assert both["requests"] == 104 and both["attainment"] == pytest.approx(91 / 104)
    assert both["submit_lag_p99_ms"] == pytest.approx(1.0)


def test_a_tenant_with_nothing_completed_has_no_percentiles() -> None:
    got = summarise_run([_record("a", 0.0, None, ok=False)], ["a"], {"a": 1.0}, 1.0)
    assert got["a"]["p50_ms"] is None and got["a"]["p99_ms"] is None and got["a"]["attainment"] == 0.0


def test_max_sustained_load_is_the_highest_rate_meeting_99_percent() -> None:
    assert max_sustained({1.0: 1.0, 2.0: 0.995, 4.0: 0.98}) == 2.0
    assert max_sustained({1.0: 0.99, 2.0: 0.5, 4.0: 0.999}) == 1.0  # a pass above a failing rate is luck
    assert max_sustained({1.0: 0.9, 2.0: 0.5}) is None


def test_the_report_says_when_no_rate_was_sustained() -> None:
    stats = summarise_run([_record("a", 0.0, 3.0)], ["a"], {"a": 1.0}, 1.0)
    result = {"meta": {"mix": "m", "device": "cpu", "tenants": ["a"], "solo_ms": {"a": 0.2}, "slo_ms": {"a": 1.0}},
              "arrivals": "poisson", "command": "c", "machine": "x", "date": "d", "repeats": 1, "duration_s": 1.0,
              "results": {"fcfs": {"1": stats}}, "max_sustained_rps": {"fcfs": None}, "burst": None,
              "notes": ["n1"]}
    text = "\n".join(serve_report.report_lines(result))
    assert "| fcfs | < lowest rate |" in text and "| a | 0.20 | 1.00 |" in text and "Note: n1" in text
    assert "| fcfs | 1 | a | 1 | 3.00 | 3.00 | 0.0% | 1.00 | 1.00 |" in text
    assert "| fcfs | 0.0% / 3.00 | - |" in text  # attainment / the worst tenant's p99 over its SLO


def test_the_worst_tenant_sets_the_tail_over_slo() -> None:
    stats = summarise_run([_record("a", 0.0, 3.0), _record("b", 0.0, 1.0)], ["a", "b"], {"a": 6.0, "b": 0.5}, 1.0)
    assert serve_report.worst_p99_over_slo(stats, {"a": 6.0, "b": 0.5}) == pytest.approx(2.0)
    failed = summarise_run([_record("a", 0.0, None, ok=False)], ["a"], {"a": 1.0}, 1.0)
    assert serve_report.worst_p99_over_slo(failed, {"a": 1.0}) == float("inf")


# ------------------------------------------------------------------------------ systems
def test_fcfs_runs_one_request_at_a_time_in_arrival_order() -> None:
    order: list[tuple[str, int]] = []
    busy = threading.Semaphore(1)

    def run(tenant: str) -> Any:
        def go(inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
            assert busy.acquire(blocking=False), "two requests ran at once"
            order.append((tenant, int(inputs["x"])))
            time.sleep(0.001)
            busy.release()
            return {"y": np.asarray(inputs["x"]) * 2}
        return go
    system = QueueWorkers({"a": run("a"), "b": run("b")}, shared=True, name="fcfs")
    submitted = [("a" if i % 3 else "b", i) for i in range(30)]
    futures = [system.submit(t, {"x": i}) for t, i in submitted]
    system.close()
    assert order == submitted
    assert [int(f.result()["y"]) for f in futures] == [2 * i for _, i in submitted]


def test_per_tenant_workers_run_tenants_concurrently_and_a_failure_fails_only_its_request() -> None:
    started = threading.Barrier(2, timeout=10)

    def run(inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        if inputs["x"] < 0:
            raise ValueError("negative input")
        if inputs["x"] == 0:
            started.wait()  # both tenants' first requests must be running at once to pass
        return {"y": np.asarray(inputs["x"])}
    system = QueueWorkers({"a": run, "b": run}, shared=False, name="per-tenant")
    futures: list[Future[dict[str, np.ndarray]]] = [system.submit("a", {"x": 0}), system.submit("b", {"x": 0}),
                                                    system.submit("a", {"x": -1}), system.submit("a", {"x": 7})]
    system.close()
    assert [int(f.result()["y"]) for f in (futures[0], futures[1], futures[3])] == [0, 0, 7]
    with pytest.raises(ValueError, match="negative"):
        futures[2].result()
    with pytest.raises(RuntimeFailure, match="after close"):
        system.submit("a", {"x": 1})
    with pytest.raises(ConfigError, match="unknown tenant 'c'"):
        QueueWorkers({"a": run}, shared=False, name="x").submit("c", {})


def test_ort_is_skipped_on_cuda_with_a_reason() -> None:
    assert available("ort", "cpu") is None and available("fcfs", "cuda") is None
    assert "skipped on cuda" in (available("ort", "cuda") or "")
    with pytest.raises(ConfigError, match="unknown system"):
        available("triton", "cpu")


def test_a_response_is_checked_against_its_own_inputs_reference() -> None:
    want = {"y": np.array([1.0, 2.0, 3.0], np.float32)}
    assert response_error("a", {"y": want["y"] + 1e-6}, want) is None
    assert "max relative error" in (response_error("a", {"y": want["y"][::-1]}, want) or "")  # another request's
    assert "output 'y'" in (response_error("a", {"z": want["y"]}, want) or "")


def test_the_wait_for_responses_is_bounded_and_counts_what_never_finished() -> None:
    from benchmarks.serve_systems import _Tracker

    tracker = _Tracker(3)
    tracker.start()
    done: Future[int] = Future()
    done.add_done_callback(tracker.on_done(0))
    done.set_result(1)
    tracker.finish(2)
    assert tracker.wait(time.perf_counter() + 0.05) == 1  # request 1 stalled: counted, not waited for forever
    assert tracker.done[0] >= 0 and tracker.done[2] >= 0 and np.isnan(tracker.done[1])


# ------------------------------------------------------------------------------ end to end
def test_the_cli_serves_the_tiny_mix_with_every_request_answered(tmp_path: Path) -> None:
    systems = ["fcfs", "per-tenant", "ort"] + (["cosched", "cosched-1-lane"] if serving_available() else [])
    out, png = tmp_path / "out", tmp_path / "curve.png"
    code = serve.main(["--mix", "tiny", "--rate", "8", "--duration", "2", "--systems", *systems, "--trials", "2",
                       "--cost-model", "roofline", "--solo-iters", "3", "--warmup", "1", "--pool", "3",
                       "--keep-records", "--out", str(out), "--plot", str(png), "--quiet"])
    assert code == 0
    result = json.loads((out / "result.json").read_text())
    tenants = ["resnet50", "bert", "mobilenet_v2", "dlrm"]
    assert result["meta"]["tenants"] == tenants and result["systems"] == systems
    for tenant in tenants:
        assert result["meta"]["slo_ms"][tenant] == pytest.approx(5 * result["meta"]["solo_ms"][tenant])
    expected = schedule(tenant_rates(8.0, tenants, {}), 2.0, seed=0)
    for system in systems:
        records = result["records"][system]["8"][0]
        assert [(r["tenant"], r["index"]) for r in records] == [(a.tenant, a.index) for a in expected], system
        failed = [r["error"] for r in records if not r["ok"]]
        assert not failed, (system, failed[:3])  # every response is its own input's output
        summary = result["results"][system]["8"]["all"]
        assert summary["requests"] == summary["completed"] == len(expected)
        assert 0.0 <= summary["attainment"] <= 1.0 and summary["p99_ms"] >= summary["p50_ms"] > 0
        assert set(result["max_sustained_rps"]) == set(systems)
    report = (out / "report.md").read_text()
    assert "Serving the tiny mix" in report and "| fcfs | 8 | all |" in report and "max sustained load" in report
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_arguments_are_refused_before_any_work() -> None:
    for argv in (["--rate", "0"], ["--burst-factor", "1"], ["--repeats", "0"], ["--weights", "a"],
                 ["--rate", "1.0000001", "1.0000002"]):
        with pytest.raises(SystemExit):
            serve.main(["--mix", "tiny", *argv])
    with pytest.raises(ConfigError, match="unknown mix"):
        serve.main(["--mix", "nonsense"])
