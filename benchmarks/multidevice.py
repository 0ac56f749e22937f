"""Planning ahead for hardware this machine lacks: zoo tenants on simulated GPUs.

    python -m benchmarks.multidevice --tenants 20 --devices 8 --memory-cap 16GiB

Exports the full-size zoo models (cycling through them, tenants ``<model>-<k>``), compiles
them for ``cuda:0 .. cuda:<n-1>`` described by a stored device spec (default: a V100-SXM2-16GB
from its published ceilings, ``benchmarks/devices/v100-sxm2-16gb.json``) with the roofline
cost model, so no GPU and no profiling is involved, and reports the compile time, each
device's memory against its cap, and the predicted makespan and pipelined throughput of the
plan against the baselines (one device when it fits, round-robin, largest-first).
Predicted figures are the simulator's, on the roofline model of a device nobody measured
here: they compare placements, they are not a measured speed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time
from collections.abc import Sequence
from pathlib import Path

from cosched import zoo
from cosched.sizes import format_bytes

SPEC = Path(__file__).resolve().parent / "devices" / "v100-sxm2-16gb.json"
#: NVLink 2.0 as V100-SXM2's datasheet gives it (300 GB/s over 6 links, both directions): one
#: link per ring hop, 25 GB/s each way, 10 us per message step; a derived model, not measured.
COMM = Path(__file__).resolve().parent / "devices" / "v100-nvlink-comm.json"


def run(tenants: int, devices: int, memory_cap: str, spec: Path, trials: int, batch: int,
        comm: Path = COMM) -> dict:  # type: ignore[type-arg]
    import cosched

    names = [f"{zoo.names()[i % len(zoo.names())]}-{i // len(zoo.names())}" for i in range(tenants)]
    paths = [zoo.export(n.rsplit("-", 1)[0], size="full") for n in names]
    started = time.perf_counter()
    plan = cosched.compile(paths, names=names, cost_model="roofline", trials=trials, batch=batch,
                           devices=[f"cuda:{i}" for i in range(devices)], memory_cap=memory_cap, device_spec=str(spec),
                           comm_model=str(comm))
    seconds = time.perf_counter() - started
    report = plan.report()
    return {"command": f"python -m benchmarks.multidevice --tenants {tenants} --devices {devices} --memory-cap "
                       f"{memory_cap} --trials {trials} --batch {batch}",
            "machine": platform.processor() or platform.machine(), "date": datetime.date.today().isoformat(),
            "spec": json.loads(spec.read_text())["name"], "compile_s": seconds, "tasks": report["tasks"],
            "trials_run": report.get("trials"),
            **report["multi_device"]}


def rows(result: dict) -> list[str]:  # type: ignore[type-arg]
    plan = result["plan"]
    splits = ", ".join(f"{s['tenant']} {s['kind']} x{s['world']}" for s in result["splits"]) or "none"
    lines = [f"Command: `{result['command']}`; compiled here in {result['compile_s']:.1f} s ({result['tasks']} tasks); "
             f"devices: {len(result['devices'])} x {result['spec']}, cap {format_bytes(result['caps_bytes'][0])} each; "
             f"date {result['date']}. Splits: {splits}. "
             "Predicted (roofline model, simulator), not measured.", "",
             "| placement | predicted makespan / plan's | pipelined throughput / plan's | fits | largest device memory |",
             "|---|---|---|---|---|"]
    for name, row in [("plan", plan), *result["baselines"].items()]:
        lines.append(f"| {name} | {row['makespan_ms'] / plan['makespan_ms']:.2f}x | "
                     f"{row['throughput_rps'] / plan['throughput_rps']:.2f}x | {'yes' if row['fits'] else 'no'} | "
                     f"{format_bytes(max(row['memory_bytes']))} |")
    lines += ["", "Memory per device (plan): " + ", ".join(
        f"{d} {format_bytes(m)}" for d, m in zip(result["devices"], plan["memory_bytes"], strict=True))]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.multidevice", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tenants", type=int, default=20)
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--memory-cap", default="16GiB")
    parser.add_argument("--spec", type=Path, default=SPEC, help="device spec JSON (default: %(default)s)")
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--comm-model", type=Path, default=COMM, help="comm.json (default: %(default)s)")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    result = run(args.tenants, args.devices, args.memory_cap, args.spec, args.trials, args.batch, args.comm_model)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print("\n".join(rows(result)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
