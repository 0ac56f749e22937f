"""``cosched profile``: measure a device, fit the cost model, report held-out accuracy.

Writes under ``-o DIR``: ``profiles.sqlite`` (appended to when it exists), ``model/`` (two
XGBoost JSON boosters and ``metadata.json``) and ``metrics.json`` (held-out accuracy split by
task signature, with the roofline and no-interference baselines; see
:mod:`cosched.costmodel.evaluate`).

With ``--evaluate-on STORE.sqlite`` it measures and fits nothing: the model already in
``-o DIR`` is evaluated on every record of the other store (profiles of other models), and
the metrics go to ``DIR/transfer-STORE.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cosched.cli.io import check_output_dir, writing
from cosched.cli.options import check_model_file
from cosched.errors import ConfigError, CoschedError, ProfileError

if TYPE_CHECKING:
    from cosched.costmodel.store import ProfileStore

__all__ = ["register", "run_evaluate", "run_profile", "transfer_path"]

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
  cosched profile --device cuda:0 --models resnet50.onnx bert.onnx -o profiles/h100 --json

--evaluate-on STORE.sqlite measures and fits nothing: it loads the model of -o DIR (as an
earlier `cosched profile -o DIR` wrote it) and reports the same metrics on every record of
the other store, e.g. a model trained on the tiny zoo judged on profiles of the full zoo.
It uses the store's records of the model's device (or of the store's only device, with a
warning), prints the metrics and writes DIR/transfer-STORE.json; only -o and --json apply.
  cosched profile --evaluate-on profiles/cpu-full/profiles.sqlite -o profiles/cpu"""

#: Options of profiling that --evaluate-on does not take, with their defaults.
PROFILING_DEFAULTS: dict[str, Any] = {"device": "cpu", "batch": [1], "budget_s": 300.0,
                                      "max_groups": None, "seed": 0}

REPORTED = ("standalone_mape", "standalone_spearman", "corun_mape", "corun_spearman",
            "roofline_corun_mape", "no_interference_corun_mape", "corun_measured_standalone_mape",
            "slowdown_mape", "measured_slowdown_median")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "profile", help="profile tasks and co-run groups on a device and fit the cost model",
        description="Measure every distinct task alone and in co-run groups, fit the XGBoost "
                    "cost model and report its accuracy on held-out task signatures; or, with "
                    "--evaluate-on, report a trained model's accuracy on another store.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--device", default=PROFILING_DEFAULTS["device"],
                        help="cpu, cuda or cuda:<i> (default cpu)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--models", nargs="+", metavar="FILE.onnx", help="ONNX models to profile")
    source.add_argument("--zoo", choices=("tiny", "full"), help="profile every zoo model of this size")
    source.add_argument("--evaluate-on", metavar="STORE.sqlite",
                        help="measure and fit nothing: evaluate the model of -o DIR on every "
                             "record of this other store (see below)")
    parser.add_argument("--batch", type=int, nargs="+", default=PROFILING_DEFAULTS["batch"], metavar="N",
                        help="batch size, or several: the models are profiled at each (default 1)")
    parser.add_argument("--budget-s", type=float, default=PROFILING_DEFAULTS["budget_s"], metavar="N",
                        help="wall-time budget of the measurements in seconds (default 300)")
    parser.add_argument("--max-groups", type=int, default=PROFILING_DEFAULTS["max_groups"], metavar="N",
                        help="stop after N co-run groups (default: until the budget is spent)")
    parser.add_argument("--seed", type=int, default=PROFILING_DEFAULTS["seed"],
                        help="seed of group choice and the split")
    parser.add_argument("-o", "--output", required=True, metavar="DIR",
                        help="folder to write (with --evaluate-on: the folder whose model/ is evaluated)")
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
    if args.evaluate_on:
        return _main_evaluate(args)
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


def _main_evaluate(args: argparse.Namespace) -> int:
    given = [f"--{k.replace('_', '-')}" for k, v in PROFILING_DEFAULTS.items() if getattr(args, k) != v]
    if given:
        raise ConfigError(f"--evaluate-on measures nothing, so {', '.join(given)} "
                          f"{'does' if len(given) == 1 else 'do'} not apply; expected only -o DIR "
                          "and --json with it")
    output, store = Path(args.output), Path(args.evaluate_on)
    metrics = run_evaluate(output=output, store=store)
    if args.json:
        print(json.dumps(metrics, indent=2, sort_keys=True))
    else:
        for key in REPORTED:
            print(f"{key:32s} {metrics[key]:.4f}")
        for key in ("samples", "standalone_signatures", "shared_signatures"):
            print(f"{key:32s} {metrics[key]}")
        print(f"wrote {transfer_path(output, store)}")
    return 0


def transfer_path(output: Path, store: Path) -> Path:
    """Where ``--evaluate-on STORE`` writes its metrics: ``DIR/transfer-STEM.json``."""
    return output / f"transfer-{store.stem}.json"


def run_evaluate(*, output: Path, store: Path) -> dict[str, Any]:
    """Metrics of the model in ``output`` (written by ``cosched profile -o``) on every record
    of ``store``, without measuring or fitting; also written to :func:`transfer_path`.

    ``shared_signatures`` counts the store's signatures that ``output/profiles.sqlite`` (the
    training store) holds too, when it exists: 0 means every record is of a task never seen.
    """
    from cosched.costmodel.evaluate import evaluate_on
    from cosched.costmodel.store import ProfileStore
    from cosched.costmodel.xgb import XGBoostModel

    model_dir = output / "model"
    if not (model_dir / "metadata.json").is_file():
        raise ConfigError(f"-o {output}: expected a folder written by `cosched profile -o DIR`, "
                          f"holding model/metadata.json; found no {model_dir / 'metadata.json'}")
    if not store.is_file():
        raise ProfileError(f"--evaluate-on {store}: no such profile store (expected a "
                           "profiles.sqlite written by `cosched profile`)")
    model = XGBoostModel.load(model_dir)
    with ProfileStore(store) as other:
        data = other.load(_fingerprint(other, model.device.fingerprint))
    metrics = evaluate_on(model, data)
    training = output / "profiles.sqlite"
    shared = None
    if training.is_file() and training.resolve() != store.resolve():
        with ProfileStore(training) as seen:
            shared = len(set(data.standalone) & seen.signatures(model.device.fingerprint))
    metrics = {**metrics, "model": str(model_dir), "store": str(store), "device": data.device.name,
               "fingerprint": data.device.fingerprint, "standalone_signatures": len(data.standalone),
               "corun_groups": len(data.groups), "shared_signatures": shared}
    clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}
    transfer_path(output, store).write_text(json.dumps(clean, indent=2, sort_keys=True) + "\n")
    return metrics


def _fingerprint(store: ProfileStore, wanted: str) -> str:
    """``wanted`` if ``store`` holds it, else the store's only device (with a warning)."""
    found = store.fingerprints()
    if wanted in found:
        return wanted
    if len(found) == 1:
        log.warning("profile store %s holds device %s, the model was trained on %s: evaluating "
                    "across devices", store.path, found[0], wanted)
        return str(found[0])
    raise ProfileError(f"profile store {store.path} holds no records of the model's device {wanted} "
                       f"and more than one other device ({found}); expected the model's device")


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
