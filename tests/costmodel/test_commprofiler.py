"""Profiling communication on real process groups: gloo over loopback here, NCCL on GPUs.

The rank bodies below are module functions so that spawned ranks can import them.
"""

from __future__ import annotations

import importlib.machinery
import socket
import sys
import time
from pathlib import Path

import pytest
import torch

from cosched.costmodel.comm import KINDS, CommModel
from cosched.costmodel.commprofiler import (
    CommProfileConfig,
    message_sizes,
    profile_comm,
    repeats_for,
    run_ranks,
)
from cosched.costmodel.store import ProfileStore
from cosched.errors import ConfigError, ProfileError


def _fail_on_rank_1(rank: int, world: int, port: int) -> None:
    import datetime

    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=600))
    if rank == 1:
        raise ValueError("rank 1 was told to fail")
    dist.barrier()  # rank 0 waits for a peer that is gone


def _exit_on_rank_1(rank: int, world: int, port: int) -> None:
    import os

    if rank == 1:
        os._exit(3)  # dies without an exception, as a rank killed by the OS would
    time.sleep(3600)


def _hang_on_rank_1(rank: int, world: int, port: int) -> None:
    if rank == 1:
        time.sleep(3600)


def test_gloo_profile_of_two_ranks_stores_positive_rows(tmp_path, device):
    config = CommProfileConfig(world_sizes=(2,), min_bytes=8, max_bytes=4096, sizes=3, warmup=1,
                               repeats=3, timeout_s=120, quiet=True)
    with ProfileStore(tmp_path / "p.sqlite") as store:
        records = profile_comm(device, config, store)
        stored = store.comm_records(device.fingerprint, "gloo")
    measured = {r.kind for r in records}
    assert measured <= set(KINDS) and {"send_recv", "all_reduce", "all_gather"} <= measured
    assert len(records) == 3 * len(measured) and sorted(stored, key=repr) == sorted(records, key=repr)
    assert all(r.median_ms > 0 and r.world == 2 and r.repeats == 3 for r in records)
    assert sorted({r.nbytes for r in records}) == message_sizes(config, 2) == [8, 184, 4096]
    model = CommModel.fit("gloo", device.fingerprint, stored)
    assert model.predict_ms("all_reduce", 1024, 2) > 0


def test_a_failing_rank_is_a_clear_error_in_bounded_time():
    start = time.monotonic()
    with pytest.raises(ProfileError, match="rank 1: ValueError: rank 1 was told to fail"):
        run_ranks(_fail_on_rank_1, 2, (), timeout_s=60, what="test run")
    assert time.monotonic() - start < 300  # rank 0's barrier timeout (600 s) is not waited out


def test_a_rank_that_dies_is_a_clear_error():
    with pytest.raises(ProfileError, match=r"test run on 127\.0\.0\.1:[0-9]+ failed: rank 1: exited with code 3$"):
        run_ranks(_exit_on_rank_1, 2, (), timeout_s=120, what="test run")


def test_a_hanging_rank_is_ended_at_the_timeout():
    with pytest.raises(ProfileError, match="did not finish within 8 s"):
        run_ranks(_hang_on_rank_1, 2, (), timeout_s=8, what="test run")


def test_a_busy_port_is_a_clear_error():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ProfileError, match=f"port {port} on 127.0.0.1 is in use"):
            run_ranks(_hang_on_rank_1, 2, (), timeout_s=5, port=port, what="test run")


def test_sizes_fit_every_rank_share_and_repeats_shrink_with_size():
    config = CommProfileConfig(world_sizes=(4,), min_bytes=4, max_bytes=1 << 20, sizes=6)
    sizes = message_sizes(config, 4)
    assert sizes[0] == 16 and sizes[-1] == 1 << 20 and all(n % 16 == 0 for n in sizes)
    assert repeats_for(config, 64) == config.repeats
    assert repeats_for(config, 8 << 20) == config.repeat_bytes // (8 << 20) == 8
    assert repeats_for(config, 1 << 30) == config.min_repeats


@pytest.mark.parametrize(("changes", "message"), [
    ({"backend": "mpi"}, "backend 'mpi'"),
    ({"world_sizes": (1, 2)}, "must each be >= 2"),
    ({"kinds": ("broadcast",)}, "non-empty subset"),
    ({"min_bytes": 64, "max_bytes": 8}, "min_bytes <= max_bytes"),
    ({"port": 70000}, "not a TCP port"),
])
def test_bad_settings_are_config_errors(changes, message):
    with pytest.raises(ConfigError, match=message):
        CommProfileConfig(**changes)


@pytest.mark.gpu
def test_nccl_profile_of_two_gpus(tmp_path, device):
    if torch.cuda.device_count() < 2:
        pytest.skip("NCCL over 2 ranks needs 2 CUDA devices")
    config = CommProfileConfig(backend="nccl", world_sizes=(2,), min_bytes=1024, max_bytes=1 << 20,
                               sizes=3, timeout_s=180, quiet=True)
    with ProfileStore(tmp_path / "p.sqlite") as store:
        records = profile_comm(device, config, store)
    assert {r.kind for r in records} == set(KINDS)
    assert all(r.median_ms > 0 for r in records)


def test_a_kind_the_backend_lacks_is_detected_and_skipped_in_the_rank(tmp_path, monkeypatch):
    """One rank in this process (world 1): all_to_all made to fail as in gloo builds without it."""
    import json
    from dataclasses import asdict

    from cosched.costmodel import commprofiler

    real = commprofiler._operation

    def operation(kind, nbytes, rank, world, device):
        if kind == "all_to_all":
            raise RuntimeError("ProcessGroupGloo does not support alltoall_base\n(details)")
        return real(kind, nbytes, rank, world, device)

    monkeypatch.setattr(commprofiler, "_operation", operation)
    threads = torch.get_num_threads()
    config = CommProfileConfig(kinds=("all_reduce", "all_to_all"), warmup=0, repeats=2, min_repeats=1, quiet=True)
    result = tmp_path / "result.json"
    try:
        commprofiler._measure_rank(0, 1, commprofiler._free_port(), "gloo",
                                   [("all_to_all", 64, 2), ("all_reduce", 64, 2)], asdict(config), str(result))
    finally:
        torch.set_num_threads(threads)
    found = json.loads(result.read_text())
    assert found["skipped"] == {"all_to_all": "RuntimeError: ProcessGroupGloo does not support alltoall_base"}
    assert [(r["kind"], r["nbytes"], r["repeats"]) for r in found["records"]] == [("all_reduce", 64, 2)]
    assert found["records"][0]["median_ms"] > 0


def test_skipped_kinds_are_logged_and_nothing_is_stored_for_them(tmp_path, monkeypatch, caplog, device):
    import json
    import logging

    from cosched.costmodel import commprofiler

    def run_ranks(fn, world, args, **kwargs):
        Path(args[-1]).write_text(json.dumps({
            "records": [{"kind": "all_reduce", "nbytes": 8, "median_ms": 0.5, "spread_ms": 0.1, "repeats": 3}],
            "skipped": {"all_to_all": "RuntimeError: no alltoall here"}}))

    monkeypatch.setattr(commprofiler, "run_ranks", run_ranks)
    config = CommProfileConfig(world_sizes=(2,), kinds=("all_reduce", "all_to_all"), max_bytes=8, sizes=1)
    with caplog.at_level(logging.WARNING, logger="cosched.costmodel.commprofiler"), \
            ProfileStore(tmp_path / "p.sqlite") as store:
        records = profile_comm(device, config, store)
        assert store.comm_records(device.fingerprint, "gloo") == records
    assert [(r.kind, r.world) for r in records] == [("all_reduce", 2)]
    assert "gloo does not support all_to_all over 2 ranks, so it was not profiled: RuntimeError: no alltoall here" \
        in caplog.text


def test_a_rank_that_dies_before_it_starts_points_at_an_unguarded_script(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    from cosched.costmodel import commprofiler

    script = types.ModuleType("__main__")
    script.__file__, script.__spec__ = "/home/me/run.py", None
    monkeypatch.setitem(sys.modules, "__main__", script)
    assert "/home/me/run.py" in commprofiler._script_hint() and "__main__" in commprofiler._script_hint()
    script.__spec__ = importlib.machinery.ModuleSpec("mypackage.cli", None)  # python -m: no re-run
    assert commprofiler._script_hint() == ""
