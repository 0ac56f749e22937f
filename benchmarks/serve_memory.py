"""What a server's plan cache holds: resident memory of ``serve()`` on a saved plan.

``python -m benchmarks.serve_memory PLAN_DIR [--lanes N] [--no-sharing] [--full-only]``

Loads the plan (``cosched.load``) and either runs the full plan once (``--full-only``: its
executor alone) or starts ``serve(lanes=N)``, which builds and runs once every cached set's
plan at each share of the device. Prints VmRSS after loading and after building, the
onnxruntime sessions kept and the build time. ``--no-sharing`` registers no cut graph with
its root (:mod:`cosched.execution.sharing`), so every set's executor loads its own weights,
traces and sessions: what sharing saves. One configuration per process, so the figures do
not mix; compile the plan with ``cosched compile ... --serve -o PLAN_DIR``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serve_memory", description=__doc__.splitlines()[0])
    parser.add_argument("plan_dir", type=Path)
    parser.add_argument("--lanes", type=int, default=None, help="serve()'s lanes (default: its default)")
    parser.add_argument("--no-sharing", action="store_true", help="every set's executor loads its own")
    parser.add_argument("--full-only", action="store_true", help="the full plan's executor alone, no server")
    args = parser.parse_args(argv)

    import cosched
    import cosched.execution.ort as ort
    import cosched.runtime.plancache as plancache

    if args.no_sharing:
        plancache.sharing.share = lambda graph, parent: graph  # type: ignore[assignment]
    plan = cosched.load(args.plan_dir)
    loaded = _rss_mib()
    start = time.perf_counter()
    if args.full_only:
        plan.run(plan.inputs(0))
    else:
        server = plan.serve(lanes=args.lanes)
    built = time.perf_counter() - start
    result = {"plan_dir": str(args.plan_dir), "sets": len(plan.subsets) + 1, "full_only": args.full_only,
              "lanes": args.lanes, "sharing": not args.no_sharing, "rss_loaded_mib": round(loaded),
              "rss_built_mib": round(_rss_mib()), "sessions": sum(len(v) for v in ort._SEGMENTS.values()),
              "build_s": round(built, 2)}
    print(json.dumps(result))
    if not args.full_only:
        server.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
