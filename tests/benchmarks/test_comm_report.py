from __future__ import annotations

from benchmarks.comm_report import tables


def test_tables_show_each_world_with_its_held_out_sizes():
    metrics = {
        "backend": "gloo",
        "fits": [{"kind": "all_reduce", "world": 2, "alpha_us": 120.4, "bandwidth_gbps": 1.234, "mape": 0.1},
                 {"kind": "send_recv", "world": 2, "alpha_us": 80.0, "bandwidth_gbps": None, "mape": 0.2},
                 {"kind": "all_reduce", "world": 4, "alpha_us": 300.0, "bandwidth_gbps": 0.5, "mape": 0.3}],
        "held_out": [{"kind": "all_reduce", "world": 2, "nbytes": 1024, "ratio": 1.1},
                     {"kind": "send_recv", "world": 2, "nbytes": 3 << 20, "ratio": 0.7},
                     {"kind": "all_reduce", "world": 4, "nbytes": 64, "ratio": 2.0}],
    }
    text = tables(metrics)
    world2, world4 = text.split("World 4 (gloo):")
    assert "| all_reduce | 120 | 1.23 | 0.10 | 1.10 | - |" in world2
    assert "| send_recv | 80 | inf | 0.20 | - | 0.70 |" in world2
    assert "pred/meas 1 KiB | pred/meas 3 MiB |" in world2
    assert "| all_reduce | 300 | 0.50 | 0.30 | 2.00 |" in world4 and "send_recv" not in world4
    assert "2 sizes, predicted/measured median 0.90, mean |ratio - 1| 0.20, 1 of 2 within 0.8-1.25" in world2
