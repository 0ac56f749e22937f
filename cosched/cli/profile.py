"""``cosched profile``: measure a device, fit the cost model, report held-out accuracy.

Writes under ``-o DIR``: ``profiles.sqlite`` (appended to when it exists), ``model/`` (two
XGBoost JSON boosters and ``metadata.json``) and ``metrics.json`` (held-out accuracy split by
task signature, with the roofline and no-interference baselines; see
:mod:`cosched.costmodel.evaluate`).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path
from typing import Any

from cosched.cli.io import check_output_dir, writing
from cosched.cli.options import check_model_file
from cosched.errors import ConfigError, CoschedError, ProfileError

__all__ = ["register", "run_profile"]

log = logging.getLogger(__name__)

STORE_FILE = "profiles.sqlite"

EPILOG = """\
Several --batch sizes profile every model at each, in one store, within one shared budget:
the standalone model then sees each layer at more than one shape. On the full zoo, profiling
batch 2 into a batch-1 store took held-out co-run MAPE from 0.17 to 0.14 (BENCHMARKS.md).
Profiling into a DIR that already holds profiles.sqlite appends: signatures measured before
are not measured alone again, and the model is fitted on everything the store holds. With
--max-groups 0 and a store that covers the models, nothing is measured: the model is refitted
and re-evaluated on the store as it is (--seed picks another held-out split).

examples:
  cosched profile --device cpu --zoo tiny --budget-s 300 -o profiles/cpu
  cosched profile --device cpu --zoo full --budget-s 900 -o profiles/cpu-full
  cosched profile --device cpu --zoo full --batch 1 2 --budget-s 1800 -o profiles/cpu-full12
  cosched profile --device cpu --zoo full --max-groups 0 --seed 1 -o profiles/cpu-full
  cosched profile --device cuda:0 --models resnet50.onnx bert.onnx -o profiles/h100 --json"""

REPORTED = ("standalone_mape", "standalone_spearman", "corun_mape", "corun_spearman",
            "roofline_corun_mape", "no_interference_corun_mape", "corun_measured_standalone_mape",
            "slowdown_mape", "measured_slowdown_median")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "profile", help="profile tasks and co-run groups on a device and fit the cost model",
        description="Measure every distinct task alone and in co-run groups, fit the XGBoost "
                    "cost model and report its accuracy on held-out task signatures.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:<i> (default cpu)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--models", nargs="+", metavar="FILE.onnx", help="ONNX models to profile")
    source.add_argument("--zoo", choices=("tiny", "full"), help="profile every zoo model of this size")
    parser.add_argument("--batch", type=int, nargs="+", default=[1], metavar="N",
                        help="batch size, or several: the models are profiled at each (default 1)")
    parser.add_argument("--budget-s", type=float, default=300.0, metavar="N",
                        help="wall-time budget of the measurements in seconds (default 300)")
    parser.add_argument("--max-groups", type=int, default=None, metavar="N",
                        help="stop after N co-run groups (default: until the budget is spent)")
    parser.add_argument("--seed", type=int, default=0, help="seed of group choice and the split")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="folder to write")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    parser.set_defaults(func=_main)


def _check_args(args: argparse.Namespace) -> None:
    """Options and paths, before anything is measured."""
    if not args.budget_s > 0 or not math.isfinite(args.budget_s):
        raise ConfigError(f"--budget-s must be a finite number of seconds > 0, got {args.budget_s}")
    if min(args.batch) < 1:
        raise ConfigError(f"every --batch must be >= 1, got {args.batch}")
    if args.max_groups is not None and args.max_groups < 0:
        raise ConfigError(f"--max-groups must be >= 0, got {args.max_groups}")
    output = check_output_dir(args.output, "-o")
    if args.max_groups == 0 and not (output / STORE_FILE).is_file():
        raise ConfigError(
            f"--max-groups 0 measures no co-run group, and {output} holds no {STORE_FILE} to refit on; "
            "profile into it with --max-groups > 0 (or without --max-groups) first"
        )
    for model in args.models or []:
        check_model_file(model)


def _main(args: argparse.Namespace) -> int:
    _check_args(args)
    metrics = run_profile(
        device=args.device, models=args.models, zoo_size=args.zoo, batch=args.batch,
        budget_s=args.budget_s, max_groups=args.max_groups, seed=args.seed,
        output=Path(args.output), quiet=args.quiet,
    )
    if args.json:
        print(json.dumps(metrics, indent=2, sort_keys=True))
    else:
        for key in REPORTED:
            print(f"{key:32s} {metrics[key]:.4f}")
        print(f"{'samples':32s} {metrics['samples']}")
        print(f"wrote {args.output}/profiles.sqlite, {args.output}/model/, {args.output}/metrics.json")
    return 0


def run_profile(*, device: str, models: list[str] | None, zoo_size: str | None, batch: int | list[int],
                budget_s: float, max_groups: int | None, seed: int, output: Path,
                quiet: bool) -> dict[str, Any]:
    """Detect, load (at each batch size), profile, evaluate, fit and save; returns the
    metrics written."""
    from cosched.costmodel.device import DeviceSpec
    from cosched.costmodel.evaluate import evaluate
    from cosched.costmodel.profiler import ProfileConfig, Profiler
    from cosched.costmodel.store import ProfileStore
    from cosched.costmodel.xgb import XGBoostModel

    spec = DeviceSpec.detect(device)
    graphs = [g for b in ([batch] if isinstance(batch, int) else batch) for g in _load(models, zoo_size, b)]
    config = ProfileConfig(budget_s=budget_s, max_groups=max_groups, seed=seed, quiet=quiet)
    with writing("-o", output):
        output.mkdir(parents=True, exist_ok=True)
    with ProfileStore(output / STORE_FILE) as store:
        data = Profiler(spec, config).profile(graphs, store)
    if not data.groups:
        if len(data.standalone) < 2:
            raise ProfileError(
                f"the models hold {len(data.standalone)} distinct task signature(s); co-run groups need "
                "at least 2: profile more models, or larger ones"
            )
        if max_groups == 0:
            raise ProfileError(f"{output / STORE_FILE} holds no co-run group of device {spec.name} to refit "
                               "on, and --max-groups 0 measures none; profile with --max-groups > 0 first")
        raise ProfileError(f"no co-run group was measured in {budget_s} s; raise --budget-s")
    metrics = evaluate(data, seed=seed)
    model = XGBoostModel(spec).fit(data)
    model.metrics = {**model.metrics, "held_out": metrics}
    metrics = {**metrics, "device": spec.name, "fingerprint": spec.fingerprint,
               "standalone_signatures": len(data.standalone), "corun_groups": len(data.groups)}
    clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}
    with writing("-o", output):
        model.save(output / "model")
        (output / "metrics.json").write_text(json.dumps(clean, indent=2, sort_keys=True) + "\n")
    return metrics


def _load(models: list[str] | None, zoo_size: str | None, batch: int) -> list[Any]:
    """Fused and analysed graphs: one of all ``models``, or one per zoo model."""
    from cosched.ir import analyse, fuse, load_models

    if models:
        return [analyse(fuse(load_models([Path(m) for m in models], batch=batch)))]
    from cosched import zoo

    graphs = []
    for name in zoo.names():
        try:
            path = zoo.export(name, size=zoo_size or "tiny", batch=batch)
            graphs.append(analyse(fuse(load_models([path], batch=batch))))
        except CoschedError as exc:
            log.warning("zoo model %s (%s) left out of profiling: %s", name, zoo_size, exc)
    if not graphs:
        raise ProfileError(f"no zoo model of size {zoo_size!r} could be loaded; see the warnings above")
    return graphs
