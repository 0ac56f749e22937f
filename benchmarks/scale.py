"""One-device compile time of a 50-tenant mix, from import to written plan (issue 15, section 6).

    PYTHONPATH=. .venv/bin/python benchmarks/scale.py --out /tmp/scale [--tenants 50] [--trials 100]

Writes the mix once into ``OUT/models``: five zoo architectures at a "scale" size of about
150 ONNX ops each (the tiny configurations made deeper, keeping their small widths and
inputs: ResNet-50's 3-4-6-3 bottlenecks, BERT with 5 layers, Inception-v3's full block
counts, GoogLeNet's nine modules, MobileNetV2's seventeen inverted residuals), each exported
once with the dynamo exporter, weights drawn from seed 0; tenant ``i`` is a copy of
architecture ``i % 5`` named ``<arch>_<i>`` (the compile's cost does not depend on weight
values): 50 tenants, 7,420 ops, 3,750 tasks after fusion. Then runs ``cosched compile`` on all of them as a user would: the CLI, in a fresh
process, with default options except ``--cost-model roofline``, so no profiling is
involved and the time does not depend on a profile cache (``--no-in-situ`` is passed on
with ``--no-in-situ``; by default the tasks are timed in situ, as a user's CPU compile
does). Prints the op and task counts, the compile's stage times (``report.json``'s
``stages_s``), the process wall time and the rest (interpreter start, CLI, saving the plan
directory), and the sha256 of ``plan.json`` and ``plan_module.py`` so optimisations can be
checked to leave the plan byte-identical.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import onnx

STAGES = ("import", "analysis", "cost_model", "calibration", "search", "lowering")
ARCHITECTURES = ("resnet50", "bert", "inception_v3", "googlenet", "mobilenet_v2")


def _scale_config(name: str, tiny: object) -> object:
    """``tiny``, deeper: about 150 ops once exported."""
    deeper = {
        "resnet50": {"layers": (3, 4, 6, 3)},
        "bert": {"layers": 5},
        "inception_v3": {"a_pool_features": (32, 64, 64), "c_channels": (128, 160, 160, 192), "e_blocks": 2},
        "googlenet": {"stages": (("3a", "3b"), ("4a", "4b", "4c", "4d", "4e"), ("5a", "5b"))},
        "mobilenet_v2": {"repeats": (1, 2, 3, 4, 3, 3, 1)},
    }[name]
    return dataclasses.replace(tiny, **deeper)  # type: ignore[type-var]


def _export(name: str, target: Path) -> None:
    import numpy as np
    import torch

    from cosched.zoo import spec

    base = spec(name)
    model = dataclasses.replace(base, configs=(("scale", _scale_config(name, base.config("tiny"))),))
    rng = np.random.default_rng(0)
    args = []
    for s in model.input_specs("scale"):
        shape = s.batched(1)
        if s.kind == "dense":
            args.append(torch.from_numpy(rng.standard_normal(shape).astype(s.dtype)))
        else:
            args.append(torch.from_numpy(rng.integers(0, min(s.high), size=shape).astype(s.dtype)))
    module = model.build("scale", seed=0)
    torch.onnx.export(module, tuple(args), str(target), dynamo=True, external_data=False, verbose=False,
                      input_names=list(model.input_names("scale")), output_names=list(model.output_names))
    onnx.checker.check_model(str(target))


def write_mix(out: Path, tenants: int) -> list[Path]:
    """The mix's ONNX files (written once, then reused)."""
    models = out / "models"
    models.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(tenants):
        name = ARCHITECTURES[i % len(ARCHITECTURES)]
        source = models / "arch" / f"{name}.onnx"
        if not source.exists():
            source.parent.mkdir(exist_ok=True)
            _export(name, source)
        path = models / f"{name}_{i}.onnx"
        if not path.exists():
            shutil.copyfile(source, path)
        paths.append(path)
    return paths


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tenants", type=int, default=50)
    parser.add_argument("--trials", type=int, default=None, help="--trials of the compile (default: its default)")
    parser.add_argument("--no-in-situ", action="store_true", help="pass --no-in-situ to the compile")
    parser.add_argument("--profile", type=Path, default=None, help="run the compile under cProfile, stats here")
    args = parser.parse_args()
    paths = write_mix(args.out, args.tenants)
    ops = sum(len(onnx.load(p, load_external_data=False).graph.node) for p in paths)
    plan_dir = args.out / "plan"
    command = [sys.executable, "-m", "cosched.cli", "compile", *map(str, paths), "-o", str(plan_dir),
               "--cost-model", "roofline", "--json"]
    command += ["--trials", str(args.trials)] if args.trials is not None else []
    command += ["--no-in-situ"] if args.no_in_situ else []
    if args.profile is not None:
        command[1:3] = ["-m", "cProfile", "-o", str(args.profile), "-m", "cosched.cli"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ)
    wall = time.perf_counter() - started
    (args.out / "compile.log").write_text(done.stderr)
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    report = json.loads(done.stdout)
    stages = report.get("stages_s", {})
    print(f"{args.tenants} tenants, {ops} ONNX ops, {report['tasks']} tasks, {report['streams']} streams, "
          f"{report['events']} events; trials {report.get('trials')}")
    for stage in STAGES:  # report.json sorts its keys; print them in pipeline order
        print(f"  {stage:12s} {stages.get(stage, float('nan')):7.1f} s")
    print(f"  {'compile()':12s} {report['compile_s']:7.1f} s")
    print(f"  {'rest':12s} {wall - report['compile_s']:7.1f} s  (interpreter, CLI, saving the plan)")
    print(f"  {'wall':12s} {wall:7.1f} s")
    print(f"plan.json {_sha(plan_dir / 'plan.json')}  plan_module.py {_sha(plan_dir / 'plan_module.py')}")


if __name__ == "__main__":
    main()
