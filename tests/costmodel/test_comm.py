"""The alpha-beta communication model: fit, prediction, extrapolation and its JSON file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cosched.costmodel.comm import (
    CommModel,
    fit_alpha_beta,
    held_out_split,
    latency_steps,
    volume_factor,
)
from cosched.costmodel.store import CommRecord
from cosched.errors import CostModelError

SIZES = [int(n) for n in np.geomspace(4, 16 << 20, 14)]


def synthetic(kind: str, world: int, alpha_ms: float, beta: float, noise: float, seed: int = 0
              ) -> list[CommRecord]:
    rng = np.random.default_rng(seed)
    return [CommRecord("gloo", kind, world, n, (alpha_ms + n * beta) * (1 + noise * rng.standard_normal()))
            for n in SIZES]


@pytest.mark.parametrize(("alpha_ms", "beta"), [(0.05, 1e-6), (0.2, 2.5e-7), (0.01, 4e-6)])
def test_fit_recovers_known_alpha_and_beta_from_noisy_timings(alpha_ms, beta):
    records = synthetic("all_reduce", 2, alpha_ms, beta, noise=0.03, seed=int(alpha_ms * 100))
    alpha_fit, beta_fit = fit_alpha_beta([r.nbytes for r in records], [r.median_ms for r in records])
    assert alpha_fit == pytest.approx(alpha_ms, rel=0.05)
    assert beta_fit == pytest.approx(beta, rel=0.05)


def test_fit_without_noise_is_exact_and_reports_its_error():
    model = CommModel.fit("gloo", "f" * 16, synthetic("all_gather", 4, 0.1, 1e-6, noise=0.0))
    (fit,) = model.fits
    assert (fit.alpha_us, fit.bandwidth_gbps) == (pytest.approx(100.0), pytest.approx(1.0))
    assert fit.mape < 1e-9 and fit.points == len(SIZES)
    assert (fit.min_bytes, fit.max_bytes) == (SIZES[0], SIZES[-1])


def test_fit_is_nonnegative_where_least_squares_would_go_negative():
    sizes = [1000, 2000, 4000, 8000]
    times = [0.9, 2.0, 4.1, 8.3]  # a line through these crosses zero at a positive size
    assert np.polyfit(sizes, times, 1)[1] < 0
    alpha, beta = fit_alpha_beta(sizes, times)
    assert alpha == 0.0 and beta > 0


def test_fit_reports_its_error_on_noisy_data():
    model = CommModel.fit("gloo", "f" * 16, synthetic("all_reduce", 2, 0.05, 1e-6, noise=0.1, seed=3))
    assert 0.02 < model.fits[0].mape < 0.2
    assert model.fits[0].max_rel_error >= model.fits[0].mape


def test_fit_needs_two_sizes_and_positive_times():
    with pytest.raises(CostModelError, match="two or more distinct sizes"):
        fit_alpha_beta([64, 64], [1.0, 1.1])
    with pytest.raises(CostModelError, match="positive finite times"):
        fit_alpha_beta([64, 128], [1.0, 0.0])


def test_predict_at_a_profiled_world():
    model = CommModel.fit("gloo", "f" * 16, synthetic("all_reduce", 2, 0.05, 1e-6, 0.0))
    assert model.predict_ms("all_reduce", 1 << 20, 2) == pytest.approx(0.05 + (1 << 20) * 1e-6)


def test_other_worlds_follow_the_ring_rule_from_the_nearest_profiled_world():
    records = synthetic("all_reduce", 2, 0.05, 1e-6, 0.0) + synthetic("all_reduce", 8, 0.4, 3e-6, 0.0)
    model = CommModel.fit("gloo", "f" * 16, records)
    n = 1 << 20
    # 3 is nearest 2: latency steps 2*(3-1) / 2*(2-1), volume (2*2/3) / (2*1/2)
    assert model.predict_ms("all_reduce", n, 3) == pytest.approx(0.05 * 2 + n * 1e-6 * (4 / 3))
    # 6 is nearest 8: steps 10/14, volume (10/6) / (14/8)
    assert model.predict_ms("all_reduce", n, 6) == pytest.approx(0.4 * 10 / 14 + n * 3e-6 * (10 / 6) / (14 / 8))
    # 5 is as near 2 as 8: the larger world is taken
    assert model.predict_ms("all_reduce", n, 5) == pytest.approx(0.4 * 8 / 14 + n * 3e-6 * (8 / 5) / (14 / 8))
    with pytest.raises(CostModelError, match=r"worlds \[2, 8\], not 4"):
        model.predict_ms("all_reduce", n, 4, extrapolate=False)


def test_ring_rule_counts():
    assert [latency_steps(k, 4) for k in ("send_recv", "all_reduce", "all_gather", "all_to_all")] == [1, 6, 3, 3]
    assert [volume_factor(k, 4) for k in ("send_recv", "all_reduce", "all_gather", "all_to_all")] == [
        1, 1.5, 0.75, 0.75]


def test_send_recv_is_priced_alike_in_any_world():
    model = CommModel.fit("gloo", "f" * 16, synthetic("send_recv", 2, 0.03, 5e-7, 0.0))
    assert model.predict_ms("send_recv", 4096, 8) == model.predict_ms("send_recv", 4096, 2)


def test_a_kind_never_profiled_is_a_clear_error():
    model = CommModel.fit("gloo", "f" * 16, synthetic("all_reduce", 2, 0.05, 1e-6, 0.0))
    with pytest.raises(CostModelError, match=r"never measured all_to_all \(it holds \[\('all_reduce', 2\)\]\)"):
        model.predict_ms("all_to_all", 64, 2)
    with pytest.raises(CostModelError, match="not known"):
        model.predict_ms("broadcast", 64, 2)
    with pytest.raises(CostModelError, match="world of 2 or more"):
        model.predict_ms("all_reduce", 64, 1)


def test_fit_refuses_mixed_backends_and_no_records():
    with pytest.raises(CostModelError, match="cosched profile --comm"):
        CommModel.fit("gloo", "f" * 16, [])
    records = [CommRecord("nccl", "all_reduce", 2, 64, 1.0), CommRecord("nccl", "all_reduce", 2, 128, 2.0)]
    with pytest.raises(CostModelError, match=r"\['nccl'\]"):
        CommModel.fit("gloo", "f" * 16, records)


def test_save_load_round_trip(tmp_path):
    records = synthetic("all_reduce", 2, 0.05, 1e-6, 0.02) + synthetic("send_recv", 2, 0.02, 4e-7, 0.02)
    model = CommModel.fit("gloo", "f" * 16, records)
    model.save(tmp_path)
    assert CommModel.load(tmp_path) == model
    assert CommModel.load(tmp_path / "comm.json").predict_ms("all_reduce", 100, 4) == model.predict_ms(
        "all_reduce", 100, 4)


def test_load_refuses_another_schema_version(tmp_path):
    path = tmp_path / "comm.json"
    data = CommModel.fit("gloo", "f" * 16, synthetic("all_reduce", 2, 0.05, 1e-6, 0.0)).to_json()
    path.write_text(json.dumps({**data, "schema_version": 99}))
    with pytest.raises(CostModelError, match="schema_version 99"):
        CommModel.load(path)
    path.write_text("{not json")
    with pytest.raises(CostModelError, match="cannot read communication model"):
        CommModel.load(path)


def test_held_out_sizes_are_interpolated():
    records = synthetic("all_reduce", 2, 0.05, 1e-6, 0.0)[:7] + synthetic("send_recv", 2, 0.05, 1e-6, 0.0)[:3]
    fit, held = held_out_split(records)
    held_ar = sorted(r.nbytes for r in held if r.kind == "all_reduce")
    assert held_ar == [SIZES[1], SIZES[3], SIZES[5]]
    assert SIZES[0] in {r.nbytes for r in fit} and SIZES[6] in {r.nbytes for r in fit}
    assert not [r for r in held if r.kind == "send_recv"]  # 3 sizes: all are fitted
    model = CommModel.fit("gloo", "f" * 16, fit)
    assert all(row["ratio"] == pytest.approx(1.0) for row in model.evaluate(held))


def _comm_graph(op_type: str, attrs: dict, domain: str = "cosched"):
    from cosched.ir.graph import Graph, Op, TensorInfo, frozen_mapping

    tensors = {n: TensorInfo(n, (2, 8), "float32", "a") for n in ("a/x0", "a/x1", "a/y")}
    op = Op("a/comm", op_type, "a", ("a/x0", "a/x1"), ("a/y",), frozen_mapping(attrs), domain=domain)
    return Graph((), (op,), frozen_mapping(tensors)), op


def test_ir_communication_ops_are_priced_by_their_output_bytes_and_world():
    from cosched.costmodel.comm import op_comm

    records = synthetic("all_reduce", 2, 0.05, 1e-6, 0.0) + synthetic("send_recv", 2, 0.02, 4e-7, 0.0)
    model = CommModel.fit("gloo", "f" * 16, records)
    graph, op = _comm_graph("AllReduce", {"group": "g", "rank": 0, "world": 2})
    assert op_comm(graph, op) == ("all_reduce", 64, 2)
    assert model.predict_op_ms(graph, op) == pytest.approx(0.05 + 64e-6)
    graph, op = _comm_graph("Transfer", {"src": 0, "dst": 1})
    assert op_comm(graph, op) == ("send_recv", 64, 2)
    graph, op = _comm_graph("Add", {}, domain="")
    with pytest.raises(CostModelError, match=r"op 'a/comm' \(ai.onnx::Add\) of tenant 'a' is not a communication op"):
        model.predict_op_ms(graph, op)
    graph, op = _comm_graph("AllGather", {"group": "g", "rank": 0, "axis": 0})
    with pytest.raises(CostModelError, match="has world None"):
        op_comm(graph, op)


def test_a_link_model_prices_each_kind_by_its_ring_algorithm():
    model = CommModel.from_link("nccl", "f" * 16, latency_s=5e-6, bandwidth=100e9)
    n = 64 << 20
    assert model.predict_ms("send_recv", n, 8) == pytest.approx(5e-3 + n / 100e9 * 1e3)
    assert model.predict_ms("all_reduce", n, 8) == pytest.approx(5e-3 * 14 + 2 * 7 / 8 * n / 100e9 * 1e3)
    assert model.predict_ms("all_gather", n, 4) == pytest.approx(5e-3 * 3 + 3 / 4 * n / 100e9 * 1e3)
    assert all(f.points == 0 for f in model.fits)
    with pytest.raises(CostModelError, match="bandwidth > 0"):
        CommModel.from_link("nccl", "f" * 16, latency_s=5e-6, bandwidth=0)


def test_from_store_fits_what_the_store_holds(tmp_path, device):
    from cosched.costmodel.store import ProfileStore

    with ProfileStore(tmp_path / "p.sqlite") as store:
        with pytest.raises(CostModelError, match=r"holds no gloo communication .*it holds: none"):
            CommModel.from_store(store, device.fingerprint, "gloo")
        store.add_comm(device, synthetic("all_reduce", 2, 0.05, 1e-6, 0.0))
        model = CommModel.from_store(store, device.fingerprint, "gloo")
    assert model.fingerprint == device.fingerprint
    assert model.predict_ms("all_reduce", 1000, 2) == pytest.approx(0.05 + 1000e-6)


def test_a_kind_measured_at_one_size_cannot_be_fitted_and_says_which():
    records = [CommRecord("gloo", "all_gather", 4, 64, 0.3), CommRecord("gloo", "all_gather", 4, 64, 0.4)]
    with pytest.raises(CostModelError, match=r"all_gather over 4 ranks: .*two or more distinct sizes.*--max-bytes"):
        CommModel.fit("gloo", "f" * 16, records)
