from __future__ import annotations

import csv
import json

import pytest

from cosched.costmodel.store import CorunGroup, ProfileStore, StandaloneRecord
from cosched.errors import ProfileError


def _fill(store, device):
    store.add_standalone(device, [StandaloneRecord("s1", {"flops": 1.0}, 2.0, 0.1, 5, "a/l0"),
                                  StandaloneRecord("s2", {"flops": 3.0}, 4.0, 0.2, 7, "a/l1")])
    store.add_groups(device, [CorunGroup(("s1", "s2"), (2.5, 5.0), 5.5, (1, 1), "g1")])


def test_round_trip(tmp_path, device):
    with ProfileStore(tmp_path / "p.sqlite") as store:
        _fill(store, device)
    with ProfileStore(tmp_path / "p.sqlite") as store:
        assert store.fingerprints() == [device.fingerprint]
        data = store.load(device.fingerprint)
    assert data.device == device
    assert data.standalone["s1"] == StandaloneRecord("s1", {"flops": 1.0}, 2.0, 0.1, 5, "a/l0")
    assert data.groups == (CorunGroup(("s1", "s2"), (2.5, 5.0), 5.5, (1, 1), "g1"),)
    assert data.samples == 4


def test_appending_again_combines_by_median(tmp_path, device):
    with ProfileStore(tmp_path / "p.sqlite") as store:
        for ms in (1.0, 3.0, 2.0):
            store.add_standalone(device, [StandaloneRecord("s", {}, ms, 0.0, 5)])
        record = store.load(device.fingerprint).standalone["s"]
    assert (record.median_ms, record.repeats) == (2.0, 15)


def test_merge_is_idempotent(tmp_path, device, make_device):
    other_device = make_device(fingerprint="fedcba9876543210", name="other")
    with ProfileStore(tmp_path / "a.sqlite") as a, ProfileStore(tmp_path / "b.sqlite") as b:
        _fill(a, device)
        b.add_standalone(other_device, [StandaloneRecord("s9", {}, 9.0)])
        a.merge(tmp_path / "b.sqlite")
        a.merge(b)
        assert a.fingerprints() == sorted([device.fingerprint, other_device.fingerprint])
        assert list(a.load(other_device.fingerprint).standalone) == ["s9"]
        assert len(a.load(device.fingerprint).standalone) == 2


def test_export(tmp_path, device):
    with ProfileStore(tmp_path / "p.sqlite") as store:
        _fill(store, device)
        store.export_json(tmp_path / "p.json")
        store.export_csv(tmp_path / "csv")
    data = json.loads((tmp_path / "p.json").read_text())
    assert {r["signature"] for r in data["standalone"]} == {"s1", "s2"}
    assert len(data["corun"]) == 2
    rows = list(csv.DictReader((tmp_path / "csv" / "corun.csv").open()))
    assert [r["latency_ms"] for r in rows] == ["2.5", "5.0"]


def test_bad_file_names_it(tmp_path, device):
    path = tmp_path / "junk.sqlite"
    path.write_text("this is not a database" * 100)
    with pytest.raises(ProfileError, match=r"junk\.sqlite"):
        ProfileStore(path)
    with ProfileStore(tmp_path / "p.sqlite") as store, pytest.raises(ProfileError, match="no device"):
        store.load("nope")


def _comm(backend="gloo"):
    from cosched.costmodel.store import CommRecord

    return [CommRecord(backend, "all_reduce", 2, 64, 0.2, 0.01, 15),
            CommRecord(backend, "send_recv", 2, 64, 0.1, 0.02, 15)]


def test_comm_round_trip_and_median_of_repeats(tmp_path, device):
    from cosched.costmodel.store import CommRecord

    with ProfileStore(tmp_path / "p.sqlite") as store:
        store.add_comm(device, _comm())
        store.add_comm(device, [CommRecord("gloo", "all_reduce", 2, 64, ms, 0.0, 5) for ms in (0.4, 0.3)])
        store.add_comm(device, _comm("nccl")[:1])
    with ProfileStore(tmp_path / "p.sqlite") as store:
        assert store.comm_backends(device.fingerprint) == ["gloo", "nccl"]
        records = store.comm_records(device.fingerprint, "gloo")
        assert store.comm_records(device.fingerprint, "nccl") == _comm("nccl")[:1]
    assert records == [CommRecord("gloo", "all_reduce", 2, 64, 0.3, 0.0, 25), _comm()[1]]


def test_a_store_without_the_comm_table_opens_and_gains_it(tmp_path, device):
    import sqlite3

    with ProfileStore(tmp_path / "p.sqlite") as store:
        _fill(store, device)
    with sqlite3.connect(tmp_path / "p.sqlite") as db:  # a store written before the table existed
        db.execute("DROP TABLE comm")
    with ProfileStore(tmp_path / "p.sqlite") as store:
        assert len(store.load(device.fingerprint).standalone) == 2
        assert store.comm_records(device.fingerprint, "gloo") == []
        store.add_comm(device, _comm())
        assert len(store.comm_records(device.fingerprint, "gloo")) == 2


def test_merge_and_export_carry_comm_rows(tmp_path, device):
    with ProfileStore(tmp_path / "a.sqlite") as a, ProfileStore(tmp_path / "b.sqlite") as b:
        b.add_comm(device, _comm())
        a.merge(b)
        a.merge(b)
        assert a.comm_records(device.fingerprint, "gloo") == _comm()
        a.export_json(tmp_path / "a.json")
        a.export_csv(tmp_path / "csv")
    assert {r["kind"] for r in json.loads((tmp_path / "a.json").read_text())["comm"]} == {"all_reduce", "send_recv"}
    rows = list(csv.DictReader((tmp_path / "csv" / "comm.csv").open()))
    assert sorted(r["median_ms"] for r in rows) == ["0.1", "0.2"]
