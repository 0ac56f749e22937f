"""``cosched profile``: measure a device, fit the cost model, report held-out accuracy.

Writes under ``-o DIR``: ``profiles.sqlite`` (appended to when it exists), ``model/`` (two
XGBoost JSON boosters and ``metadata.json``) and ``metrics.json`` (held-out accuracy split by
task signature, with the roofline and no-interference baselines; see
:mod:`cosched.costmodel.evaluate`).

With ``--evaluate-on STORE.sqlite`` it measures and fits nothing: the model already in
``-o DIR`` is evaluated on every record of the other store (profiles of other models), and
the metrics go to ``DIR/transfer-STORE.json``.

With ``--comm`` it profiles communication instead of tasks (:mod:`cosched.costmodel.commprofiler`)
into the same ``profiles.sqlite``, fits the alpha-beta model on everything the store holds for
the device and backend, writes it to ``model/comm.json`` and the fit's accuracy, on sizes held
out of a second fit, to ``comm-metrics.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cosched.cli.options import check_model_file
from cosched.errors import ConfigError, CoschedError, ProfileError
from cosched.files import check_output_dir, writing
from cosched.sizes import parse_bytes

if TYPE_CHECKING:
    from cosched.costmodel.store import ProfileStore

__all__ = ["register", "run_comm", "run_evaluate", "run_profile", "transfer_path"]

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
  cosched profile --evaluate-on profiles/cpu-full/profiles.sqlite -o profiles/cpu

--comm measures communication, not tasks: send/recv, all-reduce, all-gather and all-to-all
over --world-sizes ranks of --backend (gloo over loopback on CPU, NCCL on one GPU per rank),
at log-spaced sizes up to --max-bytes (bytes of the result on one rank), one process per rank.
It appends to DIR/profiles.sqlite, fits ms = alpha + bytes * beta per (kind, world) on all the
store holds for this device and backend, writes DIR/model/comm.json and DIR/comm-metrics.json
(the fit's error, and predicted/measured on every other size, held out of a second fit), and
prints alpha (us) and bandwidth (GB/s) per kind and world. More ranks than cores are allowed:
they share the cores. Only --device, --backend, --world-sizes, --max-bytes, -o, --json apply.
  cosched profile --comm --world-sizes 2 4 --max-bytes 16MiB -o profiles/cpu
  cosched profile --comm --device cuda --backend nccl --world-sizes 2 8 -o profiles/h100"""

#: Options of communication profiling (only with --comm), with their defaults.
COMM_DEFAULTS: dict[str, Any] = {"backend": None, "world_sizes": None, "max_bytes": None}
COMM_WORLD_SIZES = (2, 4)
COMM_MAX_BYTES = "16MiB"
COMM_METRICS_FILE = "comm-metrics.json"

#: Options of profiling that --evaluate-on does not take, with their defaults.
PROFILING_DEFAULTS: dict[str, Any] = {"device": "cpu", "batch": [1], "budget_s": 300.0,
                                      "max_groups": None, "seed": 0}

REPORTED = ("standalone_mape", "standalone_spearman", "corun_mape", "corun_spearman",
            "roofline_corun_mape", "no_interference_corun_mape", "corun_measured_standalone_mape",
            "slowdown_mape", "measured_slowdown_median")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "profile", help="profile tasks and co-run groups (or, with --comm, communication) and fit the cost model",
        description="Measure every distinct task alone and in co-run groups, fit the XGBoost "
                    "cost model and report its accuracy on held-out task signatures; or, with "
                    "--evaluate-on, report a trained model's accuracy on another store; or, with "
                    "--comm, measure communication and fit the alpha-beta communication model.",
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
    source.add_argument("--comm", action="store_true",
                        help="profile communication (collectives and send/recv) instead of tasks "
                             "and fit the alpha-beta communication model (see below)")
    parser.add_argument("--batch", type=int, nargs="+", default=PROFILING_DEFAULTS["batch"], metavar="N",
                        help="batch size, or several: the models are profiled at each (default 1)")
    parser.add_argument("--budget-s", type=float, default=PROFILING_DEFAULTS["budget_s"], metavar="N",
                        help="wall-time budget of the measurements in seconds (default 300)")
    parser.add_argument("--max-groups", type=int, default=PROFILING_DEFAULTS["max_groups"], metavar="N",
                        help="stop after N co-run groups (default: until the budget is spent)")
    parser.add_argument("--seed", type=int, default=PROFILING_DEFAULTS["seed"],
                        help="seed of group choice and the split")
    parser.add_argument("--backend", choices=("gloo", "nccl"), default=COMM_DEFAULTS["backend"],
                        help="with --comm: torch.distributed backend (default gloo on cpu, nccl on cuda)")
    parser.add_argument("--world-sizes", type=int, nargs="+", default=COMM_DEFAULTS["world_sizes"],
                        metavar="N", help="with --comm: numbers of ranks to profile (default 2 4)")
    parser.add_argument("--max-bytes", default=COMM_DEFAULTS["max_bytes"], metavar="SIZE",
                        help="with --comm: largest message, as bytes or with a unit: 64KiB, 16MiB, "
                             f"1GB (default {COMM_MAX_BYTES})")
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
    if args.comm:
        return _main_comm(args)
    given = [_flag(k) for k, v in COMM_DEFAULTS.items() if getattr(args, k) != v]
    if given:
        raise ConfigError(f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} only with "
                          "--comm (profiling communication)")
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
    given = [_flag(k) for k, v in PROFILING_DEFAULTS.items() if getattr(args, k) != v]
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


def _flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"


def _main_comm(args: argparse.Namespace) -> int:
    given = [_flag(k) for k, v in PROFILING_DEFAULTS.items() if k != "device" and getattr(args, k) != v]
    if given:
        raise ConfigError(f"--comm profiles communication, so {', '.join(given)} "
                          f"{'does' if len(given) == 1 else 'do'} not apply; expected --device, "
                          "--backend, --world-sizes, --max-bytes, -o and --json with it")
    metrics = run_comm(
        device=args.device, backend=args.backend, world_sizes=args.world_sizes or list(COMM_WORLD_SIZES),
        max_bytes=parse_bytes(args.max_bytes or COMM_MAX_BYTES, "--max-bytes"),
        output=check_output_dir(args.output, "-o"), quiet=args.quiet)
    if args.json:
        print(json.dumps(metrics, indent=2, sort_keys=True))
        return 0
    print(f"{metrics['backend']} on {metrics['device']} ({metrics['cores']} cores): "
          f"{metrics['records']} sizes measured in all"
          + (f"; worlds {metrics['worlds_sharing_cores']} had more ranks than cores"
             if metrics["worlds_sharing_cores"] else ""))
    print(f"{'kind':11s} {'world':>5s} {'alpha us':>9s} {'GB/s':>8s} {'fit MAPE':>8s} "
          f"{'held-out pred/meas':>19s}")
    for fit in metrics["fits"]:
        ratios = fit["held_out_ratios"]
        spread = f"{min(ratios):.2f}-{max(ratios):.2f}" if ratios else "-"
        gbps = "inf" if fit["bandwidth_gbps"] is None else f"{fit['bandwidth_gbps']:.3f}"
        print(f"{fit['kind']:11s} {fit['world']:5d} {fit['alpha_us']:9.1f} {gbps:>8s} "
              f"{fit['mape']:8.3f} {spread:>19s}")
    for kind, worlds in metrics["not_measured"].items():
        print(f"{kind}: not measured over world(s) {worlds} (see the warning above)")
    print(f"wrote {args.output}/{STORE_FILE}, {args.output}/model/comm.json, {args.output}/{COMM_METRICS_FILE}")
    return 0


def run_comm(*, device: str, backend: str | None, world_sizes: list[int], max_bytes: int, output: Path,
             quiet: bool) -> dict[str, Any]:
    """Profile communication into ``output``'s store, fit and save the model and the
    held-out metrics; returns the metrics written."""
    from cosched.costmodel.comm import CommModel, held_out_split
    from cosched.costmodel.commprofiler import CommProfileConfig, message_sizes, profile_comm
    from cosched.costmodel.device import DeviceSpec
    from cosched.costmodel.store import ProfileStore

    config = CommProfileConfig(world_sizes=tuple(world_sizes), max_bytes=max_bytes, quiet=quiet)
    for world in config.world_sizes:
        if len(message_sizes(config, world)) < 2:
            raise ConfigError(f"--max-bytes {max_bytes} leaves one message size over {world} ranks "
                              f"(sizes are whole float32 per rank); an alpha-beta fit needs two: raise it")
    spec = DeviceSpec.detect(device)
    chosen = backend or ("nccl" if spec.kind == "cuda" else "gloo")
    config = dataclasses.replace(config, backend=chosen)
    shared = sorted(w for w in set(world_sizes) if spec.kind == "cpu" and w > spec.cores)
    if shared:
        log.info("world(s) %s: more ranks than the %d cores, so ranks share cores, and the times say so",
                 shared, spec.cores)
    with writing("-o", output):
        output.mkdir(parents=True, exist_ok=True)
    with ProfileStore(output / STORE_FILE) as store:
        measured = profile_comm(spec, config, store)
        records = store.comm_records(spec.fingerprint, chosen)
        model = CommModel.from_store(store, spec.fingerprint, chosen)
    fit, held = held_out_split(records)
    held_rows = CommModel.fit(chosen, spec.fingerprint, fit).evaluate(held)
    fits = [{**{k: getattr(f, k) for k in ("kind", "world", "points", "mape", "max_rel_error", "min_bytes",
                                           "max_bytes", "alpha_us")},
             "bandwidth_gbps": f.bandwidth_gbps if math.isfinite(f.bandwidth_gbps) else None,
             "held_out_ratios": [r["ratio"] for r in held_rows if (r["kind"], r["world"]) == (f.kind, f.world)]}
            for f in model.fits]
    done = {(r.kind, r.world) for r in measured}
    missing: dict[str, list[int]] = {}
    for kind in config.kinds:
        for world in ([min(world_sizes)] if kind == "send_recv" else sorted(set(world_sizes))):
            if (kind, 2 if kind == "send_recv" else world) not in done:
                missing.setdefault(kind, []).append(world)
    metrics = {"device": spec.name, "fingerprint": spec.fingerprint, "cores": spec.cores, "backend": chosen,
               "world_sizes": sorted(set(world_sizes)), "max_bytes": max_bytes, "records": len(records),
               "fits": fits, "held_out": held_rows, "not_measured": missing, "worlds_sharing_cores": shared}
    with writing("-o", output):
        (output / "model").mkdir(exist_ok=True)
        model.save(output / "model" / "comm.json")
        (output / COMM_METRICS_FILE).write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return metrics


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
