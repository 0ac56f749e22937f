"""The profile store: measured latencies in one SQLite file, keyed by device and signature.

Tables (every row carries the device ``fingerprint``; rows are never updated or deleted):

- ``devices(fingerprint, spec)``: the :class:`DeviceSpec` JSON of every device measured;
- ``standalone(row_id, fingerprint, signature, features, median_ms, spread_ms, repeats,
  label, created)``: one measurement of one task signature alone; ``features`` is the JSON
  of its task features, ``median_ms`` its latency as :mod:`cosched.costmodel.runner`
  defines it (on CPU the mean execution latency, despite the column's name), ``spread_ms``
  the interquartile range of the executions;
- ``corun(group_id, member, fingerprint, signature, latency_ms, threads, makespan_ms,
  created)``: one row per member of a co-run group: its co-run latency (same definition)
  while the others ran, the threads it had (CPU), and the group's makespan (the largest
  member latency);
- ``comm(row_id, fingerprint, backend, kind, world, nbytes, median_ms, spread_ms, repeats,
  created)``: one measured communication operation (:mod:`cosched.costmodel.comm`): ``kind``
  (``send_recv``, ``all_reduce``, ``all_gather``, ``all_to_all``) over ``world`` ranks of
  ``backend`` (``gloo``, ``nccl``) with a result of ``nbytes`` bytes per rank; ``median_ms`` is
  the largest over ranks of each rank's median, ``spread_ms`` the largest interquartile range.

The ``comm`` table came after schema version 4 without changing what the other tables mean, so
it is created in stores of version 4 when they are opened (they simply hold no rows of it).

Profiling again appends; :meth:`ProfileStore.merge` copies another store's rows in (ids are
unique, so merging twice adds nothing); :meth:`export_json` and :meth:`export_csv` write
everything out.
"""

from __future__ import annotations

import csv
import json
import sqlite3
import statistics
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import cast

from cosched.costmodel.device import DeviceSpec
from cosched.errors import CoschedError, ProfileError

__all__ = ["CommRecord", "CorunGroup", "ProfileData", "ProfileStore", "StandaloneRecord"]

SCHEMA_VERSION = 4
# 2: standalone and co-run latencies share one definition (cosched.costmodel.runner); stores
# of version 1 measured standalone with all cores on the calling thread and are not comparable.
# 3: CPU tasks are measured traced (cosched.execution.traced), as the executor now runs them;
# version 2 measured them op by op, paying Python dispatch and the GIL per op.
# 4: CPU tasks are measured on onnxruntime (cosched.execution.ort), the executor's default
# provider on CPU; version 3 measured cosched's torch kernels, 1.85-5.2x slower at one thread on the zoo (bert at parity).

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS devices (fingerprint TEXT PRIMARY KEY, spec TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS standalone (
    row_id TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, signature TEXT NOT NULL,
    features TEXT NOT NULL, median_ms REAL NOT NULL, spread_ms REAL NOT NULL,
    repeats INTEGER NOT NULL, label TEXT NOT NULL, created REAL NOT NULL);
CREATE INDEX IF NOT EXISTS standalone_key ON standalone (fingerprint, signature);
CREATE TABLE IF NOT EXISTS corun (
    group_id TEXT NOT NULL, member INTEGER NOT NULL, fingerprint TEXT NOT NULL,
    signature TEXT NOT NULL, latency_ms REAL NOT NULL, threads INTEGER NOT NULL,
    makespan_ms REAL NOT NULL, created REAL NOT NULL, PRIMARY KEY (group_id, member));
CREATE INDEX IF NOT EXISTS corun_key ON corun (fingerprint);
CREATE TABLE IF NOT EXISTS comm (
    row_id TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, backend TEXT NOT NULL, kind TEXT NOT NULL,
    world INTEGER NOT NULL, nbytes INTEGER NOT NULL, median_ms REAL NOT NULL,
    spread_ms REAL NOT NULL, repeats INTEGER NOT NULL, created REAL NOT NULL);
CREATE INDEX IF NOT EXISTS comm_key ON comm (fingerprint, backend);
"""

#: Every table of measurements, in the order they are exported.
TABLES = ("devices", "standalone", "corun", "comm")


@dataclass(frozen=True)
class StandaloneRecord:
    """A task signature measured alone: median and spread (IQR) of ``repeats`` runs, in ms."""

    signature: str
    features: Mapping[str, float]
    median_ms: float
    spread_ms: float = 0.0
    repeats: int = 1
    label: str = ""


@dataclass(frozen=True)
class CorunGroup:
    """k tasks measured running together: each member's latency and the group's makespan."""

    signatures: tuple[str, ...]
    latencies_ms: tuple[float, ...]
    makespan_ms: float
    threads: tuple[int, ...]
    group_id: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass(frozen=True)
class CommRecord:
    """One communication operation measured: ``kind`` over ``world`` ranks of ``backend``,
    ``nbytes`` the result's bytes on one rank; the slowest rank's median and IQR, in ms."""

    backend: str
    kind: str
    world: int
    nbytes: int
    median_ms: float
    spread_ms: float = 0.0
    repeats: int = 1


@dataclass(frozen=True)
class ProfileData:
    """Everything measured on one device: what a model is fitted on."""

    device: DeviceSpec
    standalone: Mapping[str, StandaloneRecord]
    groups: tuple[CorunGroup, ...] = ()

    @property
    def samples(self) -> int:
        return len(self.standalone) + sum(len(g.signatures) for g in self.groups)


class ProfileStore:
    """An open profile store; use as a context manager, or call :meth:`close`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path))
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                self._db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                self._db.commit()
            elif row[0] != str(SCHEMA_VERSION):
                raise ProfileError(
                    f"profile store {self.path} has schema_version {row[0]}, expected {SCHEMA_VERSION} "
                    "(its latencies were measured differently); profile into a new file"
                )
        except (sqlite3.Error, OSError) as exc:
            raise ProfileError(f"cannot open profile store {self.path}: {exc}") from exc

    def __enter__(self) -> ProfileStore:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def _write(self, sql: str, rows: Sequence[tuple[object, ...]]) -> None:
        try:
            with self._db:
                self._db.executemany(sql, rows)
        except sqlite3.Error as exc:
            raise ProfileError(f"cannot write to profile store {self.path}: {exc}") from exc

    # ------------------------------------------------------------- append
    def add_device(self, device: DeviceSpec) -> None:
        self._write("INSERT OR IGNORE INTO devices VALUES (?, ?)",
                    [(device.fingerprint, json.dumps(device.to_json(), sort_keys=True))])

    def add_standalone(self, device: DeviceSpec, records: Sequence[StandaloneRecord]) -> None:
        self.add_device(device)
        now = time.time()
        self._write("INSERT INTO standalone VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", [
            (uuid.uuid4().hex, device.fingerprint, r.signature, json.dumps(dict(r.features), sort_keys=True),
             r.median_ms, r.spread_ms, r.repeats, r.label, now) for r in records])

    def add_groups(self, device: DeviceSpec, groups: Sequence[CorunGroup]) -> None:
        self.add_device(device)
        now = time.time()
        rows = [(g.group_id, i, device.fingerprint, sig, lat, thr, g.makespan_ms, now)
                for g in groups
                for i, (sig, lat, thr) in enumerate(zip(g.signatures, g.latencies_ms, g.threads, strict=True))]
        self._write("INSERT INTO corun VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def add_comm(self, device: DeviceSpec, records: Sequence[CommRecord]) -> None:
        self.add_device(device)
        now = time.time()
        self._write("INSERT INTO comm VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [
            (uuid.uuid4().hex, device.fingerprint, r.backend, r.kind, r.world, r.nbytes, r.median_ms,
             r.spread_ms, r.repeats, now) for r in records])

    # --------------------------------------------------------------- read
    def _rows(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise ProfileError(f"cannot read profile store {self.path}: {exc}") from exc

    def fingerprints(self) -> list[str]:
        return [str(r[0]) for r in self._rows("SELECT fingerprint FROM devices ORDER BY fingerprint")]

    def device(self, fingerprint: str) -> DeviceSpec:
        rows = self._rows("SELECT spec FROM devices WHERE fingerprint = ?", (fingerprint,))
        if not rows:
            raise ProfileError(
                f"profile store {self.path} has no device {fingerprint!r} (it has: {self.fingerprints()})"
            )
        try:
            return DeviceSpec.from_json(json.loads(str(rows[0][0])), f"{self.path} device {fingerprint}")
        except CoschedError as exc:
            raise ProfileError(str(exc)) from exc

    def signatures(self, fingerprint: str) -> set[str]:
        rows = self._rows("SELECT DISTINCT signature FROM standalone WHERE fingerprint = ?", (fingerprint,))
        return {str(r[0]) for r in rows}

    def load(self, fingerprint: str) -> ProfileData:
        """Everything measured on one device; repeated measurements of a signature are
        combined by the median of their medians."""
        device = self.device(fingerprint)
        by_sig: dict[str, list[tuple[object, ...]]] = {}
        for row in self._rows("SELECT signature, features, median_ms, spread_ms, repeats, label "
                              "FROM standalone WHERE fingerprint = ? ORDER BY created, row_id", (fingerprint,)):
            by_sig.setdefault(str(row[0]), []).append(row)
        standalone = {
            sig: StandaloneRecord(
                sig, json.loads(str(rows[-1][1])), statistics.median(float(r[2]) for r in rows),  # type: ignore[arg-type]
                statistics.median(float(r[3]) for r in rows), sum(int(r[4]) for r in rows), str(rows[-1][5]))  # type: ignore[arg-type]
            for sig, rows in by_sig.items()
        }
        members: dict[str, list[tuple[object, ...]]] = {}
        for row in self._rows("SELECT group_id, signature, latency_ms, threads, makespan_ms FROM corun "
                              "WHERE fingerprint = ? ORDER BY created, group_id, member", (fingerprint,)):
            members.setdefault(str(row[0]), []).append(row)
        groups = tuple(
            CorunGroup(tuple(str(r[1]) for r in rows), tuple(float(r[2]) for r in rows),  # type: ignore[arg-type]
                       float(rows[0][4]), tuple(int(r[3]) for r in rows), gid)  # type: ignore[arg-type]
            for gid, rows in members.items()
        )
        return ProfileData(device, standalone, groups)

    def comm_backends(self, fingerprint: str) -> list[str]:
        rows = self._rows("SELECT DISTINCT backend FROM comm WHERE fingerprint = ? ORDER BY backend",
                          (fingerprint,))
        return [str(r[0]) for r in rows]

    def comm_records(self, fingerprint: str, backend: str) -> list[CommRecord]:
        """Communication measured on one device and backend, ordered by (kind, world, nbytes);
        repeated measurements of one (kind, world, nbytes) are combined by the median of their
        medians (and of their spreads), their repeats summed."""
        grouped: dict[tuple[str, int, int], list[tuple[float, float, int]]] = {}
        for row in self._rows("SELECT kind, world, nbytes, median_ms, spread_ms, repeats FROM comm "
                              "WHERE fingerprint = ? AND backend = ? ORDER BY created, row_id",
                              (fingerprint, backend)):
            kind, world, nbytes, ms, spread, repeats = cast(tuple[str, int, int, float, float, int], row)
            grouped.setdefault((kind, world, nbytes), []).append((ms, spread, repeats))
        return [
            CommRecord(backend, kind, world, nbytes, statistics.median(r[0] for r in rows),
                       statistics.median(r[1] for r in rows), sum(r[2] for r in rows))
            for (kind, world, nbytes), rows in sorted(grouped.items())
        ]

    # ------------------------------------------------------- merge/export
    def merge(self, other: str | Path | ProfileStore) -> None:
        """Copy every row of ``other`` into this store (rows already here are skipped)."""
        source = other if isinstance(other, ProfileStore) else ProfileStore(other)
        try:
            for table, width in (("devices", 2), ("standalone", 9), ("corun", 8), ("comm", 10)):
                rows = source._rows(f"SELECT * FROM {table}")
                marks = ", ".join("?" * width)
                self._write(f"INSERT OR IGNORE INTO {table} VALUES ({marks})", rows)
        finally:
            if source is not other:
                source.close()

    def _table(self, table: str) -> tuple[list[str], list[tuple[object, ...]]]:
        try:
            cursor = self._db.execute(f"SELECT * FROM {table}")
        except sqlite3.Error as exc:
            raise ProfileError(f"cannot read profile store {self.path}: {exc}") from exc
        return [d[0] for d in cursor.description], cursor.fetchall()

    def export_json(self, path: str | Path) -> None:
        out: dict[str, list[dict[str, object]]] = {}
        for table in TABLES:
            columns, rows = self._table(table)
            out[table] = [dict(zip(columns, r, strict=True)) for r in rows]
        Path(path).write_text(json.dumps({"schema_version": SCHEMA_VERSION, **out}, indent=1) + "\n")

    def export_csv(self, directory: str | Path) -> None:
        """Write ``standalone.csv``, ``corun.csv``, ``comm.csv`` and ``devices.csv`` under ``directory``."""
        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        for table in TABLES:
            columns, rows = self._table(table)
            with (root / f"{table}.csv").open("w", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(columns)
                writer.writerows(rows)
