"""Devices of a multi-device plan and their memory caps."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from cosched.costmodel.device import DeviceSpec
from cosched.costmodel.targets import resolve_targets
from cosched.errors import ConfigError
from cosched.sizes import format_bytes, parse_bytes

GPU = DeviceSpec(kind="cuda", name="V100-SXM2-16GB (spec)", fingerprint="spec-v100-16gb", cores=80,
                 memory_bytes=16 * 10**9, peak_flops=15.7e12, bandwidth=900e9, launch_overhead_s=5e-6)


@pytest.mark.parametrize(("text", "size"), [("2GB", 2 * 10**9), ("1.5GiB", 3 * 2**29), ("512 MiB", 512 * 2**20),
                                            ("4096", 4096), (4096, 4096), ("1e3kb", 10**6), ("3G", 3 * 2**30)])
def test_sizes(text: str | int, size: int) -> None:
    assert parse_bytes(text, "memory_cap") == size


@pytest.mark.parametrize("text", ["", "2 parsecs", "-1GB", "0", "GB", True, "nan"])
def test_bad_sizes_name_the_option(text: object) -> None:
    with pytest.raises(ConfigError, match="memory_cap"):
        parse_bytes(text, "memory_cap")  # type: ignore[arg-type]


def test_cpu_ranks_share_the_machine() -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two cores")
    a, b = resolve_targets(["cpu:0", "cpu:1"], memory_cap="1GB")
    assert (a.name, b.name) == ("cpu:0", "cpu:1") and (a.spec.index, b.spec.index) == (0, 1)
    assert a.spec.cores == b.spec.cores == len(os.sched_getaffinity(0)) // 2
    assert a.cap_bytes == b.cap_bytes == 10**9


def test_a_stored_spec_plans_for_gpus_this_machine_lacks(tmp_path: Path) -> None:
    GPU.save(tmp_path / "v100.json")
    targets = resolve_targets([f"cuda:{i}" for i in range(8)], {"cuda:7": "8GB"}, tmp_path / "v100.json")
    assert [t.spec.index for t in targets] == list(range(8))
    assert [t.cap_bytes for t in targets] == [16 * 10**9] * 7 + [8 * 10**9]
    assert {dataclasses.replace(t.spec, index=0) for t in targets} == {GPU}


@pytest.mark.parametrize(("devices", "cap", "match"), [
    ([], None, "at least one device"),
    (["cuda:0", "cuda:0"], None, "twice"),
    (["cpu:0", "cuda:0"], None, "mixes device kinds"),
    (["cuda:0", "cuda:1"], {"cuda:2": "1GB"}, r"cuda:2.*not among"),
    (["cuda:0", "cuda:1"], "32GB", "more than the device has"),
    (["tpu:0"], None, "not understood"),
    (["cuda:1", "cuda:01"], None, "one device twice"),
])
def test_bad_device_lists(tmp_path: Path, devices: list[str], cap: object, match: str) -> None:
    GPU.save(tmp_path / "v100.json")
    with pytest.raises(ConfigError, match=match):
        resolve_targets(devices, cap, tmp_path / "v100.json")  # type: ignore[arg-type]


def test_format_bytes() -> None:
    assert format_bytes(3 * 2**29) == "1.50 GiB" and format_bytes(10) == "10 B"


def test_cpu_ranks_are_numbered_from_zero_and_unknown_memory_needs_a_cap(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"numbered 0\.\.1"):
        resolve_targets(["cpu:0", "cpu:7"], "1GB")
    dataclasses.replace(GPU, memory_bytes=0).save(tmp_path / "unknown.json")
    with pytest.raises(ConfigError, match=r"memory of cuda:0 .* is unknown.*--memory-cap"):
        resolve_targets(["cuda:0", "cuda:1"], None, tmp_path / "unknown.json")
