from __future__ import annotations

import json

import pytest

from cosched.costmodel.device import SCHEMA_VERSION, DeviceSpec, parse_device
from cosched.errors import DeviceError


def test_json_round_trip(make_device, tmp_path):
    spec = make_device()
    assert DeviceSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec
    spec.save(tmp_path / "d.json")
    assert DeviceSpec.load(tmp_path / "d.json") == spec


def test_bad_json_names_the_file(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('{"schema_version": 1, "kind": "cpu"}')
    with pytest.raises(DeviceError, match=r"d\.json"):
        DeviceSpec.load(path)


def test_parse_device():
    assert parse_device("cpu") == ("cpu", 0)
    assert parse_device("cuda:2") == ("cuda", 2)
    with pytest.raises(DeviceError, match="'tpu'"):
        parse_device("tpu")


def test_threads_per_member(make_device):
    assert make_device(cores=8).threads_per_member(3) == 2
    assert make_device(cores=2).threads_per_member(4) == 1
    assert make_device(kind="cuda").threads_per_member(2) == 0


def test_detect_cpu_measures_once_and_caches(tmp_path):
    spec = DeviceSpec.detect("cpu", cache_dir=tmp_path)
    assert spec.kind == "cpu" and spec.peak_flops > 0 and spec.bandwidth > 0 and spec.launch_overhead_s > 0
    assert (tmp_path / "devices" / f"{spec.fingerprint}-v{SCHEMA_VERSION}.json").exists()
    assert DeviceSpec.detect("cpu", cache_dir=tmp_path) == spec


@pytest.mark.gpu
def test_detect_cuda(tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    spec = DeviceSpec.detect("cuda:0", cache_dir=tmp_path)
    assert spec.kind == "cuda" and spec.cores == torch.cuda.get_device_properties(0).multi_processor_count
    assert spec.peak_flops > 1e12
