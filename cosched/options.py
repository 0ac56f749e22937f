"""``CompileOptions``: every option of :func:`cosched.compile`, with its default, checked once.

``compile()`` builds one from its keyword arguments (or takes one and applies its keyword
arguments over it); ``cosched compile`` builds one from its flags
(:func:`cosched.cli.compile.options_from_args`), and its argparse defaults are the
defaults here. A bad value is an :class:`~cosched.errors.OptionError` naming the option,
raised before any work; the CLI re-words it with the flag. The options for the search
stage are mapped in one place, :meth:`CompileOptions.search_config`.

Importing this module is cheap (no torch, onnx or optuna), so the CLI can read the defaults
while it builds its parser.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from cosched.errors import ConfigError, OptionError
from cosched.sizes import parse_bytes

if TYPE_CHECKING:
    from cosched.costmodel import CostModel
    from cosched.search import SearchConfig

__all__ = ["DEFAULTS", "OBJECTIVES", "PROVIDER_CHOICES", "SPLIT_KINDS", "CompileOptions", "Objective",
           "option_names"]

Objective = Literal["makespan", "pareto"]
OBJECTIVES: tuple[Objective, ...] = ("makespan", "pareto")
#: ``"auto"`` or a provider of :data:`cosched.codegen.plan.PROVIDERS`, spelled out here so
#: that importing the options stays cheap (tests/test_compile_options.py checks that they agree).
PROVIDER_CHOICES = ("auto", "torch", "ort")
SPLIT_KINDS = ("tensor", "pipeline", "embedding-row", "embedding-table")
"""The splits ``splits`` may ask for (:func:`cosched.search.splitting.forced_split`)."""


@dataclass(frozen=True)
class CompileOptions:
    """How :func:`cosched.compile` imports, costs, searches and lowers; checked on construction."""

    names: Sequence[str] | None = None
    """Tenant names, one per model in order; by default each file's stem (an in-memory
    model's graph name). Checked by :func:`cosched.ir.load_models`, as are ``batch`` and
    ``input_shapes``."""
    device: str = "cpu"
    """``"cpu"``, ``"cuda"`` or ``"cuda:<i>"``: what the plan is compiled for."""
    batch: int | Mapping[str, int] | None = None
    """The leading dim of every input: one int for every tenant, or tenant -> int."""
    input_shapes: Mapping[str, Mapping[str, Sequence[int]]] | None = None
    """Tenant -> input name -> full shape; fixes any dim, applied before ``batch``."""
    cost_model: str | Path | CostModel = "auto"
    """``"auto"`` (the model cached for this device's fingerprint, refitted after profiling,
    within ``profile_budget_s`` seconds, the task signatures of these models that its store
    lacks; with no cache and no budget, the roofline model with a warning; see
    :mod:`cosched.costmodel.select`), ``"roofline"``, a directory written by ``cosched
    profile``, or a :class:`~cosched.costmodel.CostModel`."""
    trials: int = 100
    """Optuna trials of the search; 0 decodes the baselines only."""
    time_budget_s: float | None = None
    """Stop the search after this many seconds even if trials remain (None: no limit)."""
    seed: int = 0
    """Seed of the search."""
    slo_ms: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    """Tenant -> latency objective in ms, held as a read-only copy (None is taken as none)."""
    objective: Objective = "makespan"
    """``"makespan"``, or ``"pareto"``: makespan against the ``slo_ms`` objectives, with NSGA-II."""
    max_streams: int = 4
    """The most streams a plan may use."""
    interference_threshold: float = 1.10
    """The largest predicted slowdown two overlapping tasks may inflict on each other;
    ``math.inf`` lifts the constraint (throughput first)."""
    best_effort: bool = False
    """Keep the best plan found when an SLO cannot be met, instead of raising
    :class:`~cosched.errors.SLOError`."""
    study: str | None = None
    """An Optuna storage URL (``"sqlite:///FILE.db"``) that persists the study, so a later
    compile of the same graph, cost model and objective resumes it; a different one starts a
    study of its own in the same file (see :mod:`cosched.search.study`). The URL is checked
    by the search's own config (:meth:`search_config`)."""
    profile_budget_s: float = 60.0
    """Seconds of profiling ``cost_model="auto"`` may spend (0: none)."""
    measure: bool = False
    """Run the best simulated candidates and the sequential baseline on the device (random
    inputs, interleaved) and keep the fastest measured one (so in this process the plan does
    not measure slower than sequential execution)."""
    in_situ: bool | None = None
    """Run the graph's tasks one after another on the device, at one intra-op thread and at
    every core, and let the simulator charge those measured latencies instead of the cost
    model's standalone ones (a few seconds; see :mod:`cosched.calibration`). None: on CPU."""
    provider: str = "auto"
    """Who runs the tasks: ``"ort"`` (onnxruntime sessions, one per run of tasks on a
    stream; CPU only, :mod:`cosched.execution.ort`), ``"torch"`` (cosched's kernels), or
    ``"auto"``: onnxruntime on CPU where it imports, torch elsewhere."""
    progress: bool = False
    """Show progress bars (profiling, search)."""
    devices: Sequence[str] | None = None
    """The devices of a multi-device plan: ``["cpu:0", "cpu:1"]`` (ranks on this machine,
    sharing its cores and memory evenly) or ``["cuda:0", ..., "cuda:7"]``; the search places
    the tenants on them under ``memory_cap`` (:mod:`cosched.search.multidevice`). None, or one
    device: the one-device plan for ``device``, exactly as without this option."""
    memory_cap: str | int | Mapping[str, str | int] | None = None
    """The memory each device of ``devices`` may use: one size for all (``"2GB"``,
    ``"512MiB"``, bytes) or device -> size; by default each device's memory."""
    comm_model: str | Path = "auto"
    """What prices the communication of tenants split over ``devices``: ``"auto"`` (the
    measurement in this device's profile store, made once when missing and the profile budget
    allows; :func:`cosched.costmodel.select.resolve_comm_model`), a ``comm.json``, or a
    directory written by ``cosched profile --comm``."""
    device_spec: str | Path | None = None
    """A device spec JSON (:meth:`cosched.costmodel.DeviceSpec.save`) used for every device of
    ``devices``: to plan ahead of time for hardware this machine does not have."""
    splits: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """Tenant -> how to split it over every device of ``devices`` even when it fits one whole
    (to cut its latency): ``"tensor"``, ``"pipeline"``, ``"embedding-row"`` or
    ``"embedding-table"`` (:mod:`cosched.ir.sharding`). Other tenants are split only when they
    fit no device; held as a read-only copy."""
    serve: bool = False
    """Also search a plan for each set of tenants a server may find active (every proper
    subset up to 5 tenants, else each tenant alone and each pair;
    :mod:`cosched.codegen.serving`), kept with the plan for :meth:`CompiledPlan.serve
    <cosched.compiled.CompiledPlan.serve>`. One device only."""

    def __post_init__(self) -> None:
        _check_kinds(self)
        _check_ranges(self)
        slo_ms = _checked_slos(self.slo_ms)
        object.__setattr__(self, "slo_ms", slo_ms)
        _check_devices(self)
        if self.objective == "pareto" and not slo_ms:
            raise OptionError("objective", "'pareto' needs at least one tenant SLO to search makespan against",
                              see="slo_ms")

    def updated(self, **overrides: Any) -> CompileOptions:
        """These options with ``overrides`` (option name -> value), checked like new ones; an
        unknown name is a :class:`~cosched.errors.ConfigError` listing the options."""
        unknown = sorted(set(overrides) - set(option_names()))
        if unknown:
            raise ConfigError(f"unknown compile option(s) {unknown}; the options are "
                              f"{list(option_names())} (see cosched.CompileOptions)")
        return replace(self, **overrides) if overrides else self

    def search_config(self) -> SearchConfig:
        """The search stage's config for these options, which checks ``study`` too."""
        from cosched.search import SearchConfig

        return SearchConfig(
            trials=self.trials, timeout_s=self.time_budget_s, seed=self.seed, max_streams=self.max_streams,
            threshold=self.interference_threshold, slo_ms=self.slo_ms, best_effort=self.best_effort,
            multi_objective=self.objective == "pareto", storage=self.study, progress=self.progress,
        )


def option_names() -> tuple[str, ...]:
    """The names of :class:`CompileOptions`' fields, in order."""
    return tuple(f.name for f in fields(CompileOptions))


def _check_kinds(options: CompileOptions) -> None:
    if not isinstance(options.device, str):
        raise OptionError("device", f"must be 'cpu', 'cuda' or 'cuda:<i>', got {options.device!r}")
    if not isinstance(options.cost_model, (str, os.PathLike)) and not _is_cost_model(options.cost_model):
        raise OptionError("cost_model", f"must be 'auto', 'roofline', a directory or a CostModel, "
                                        f"got {options.cost_model!r}")
    for name in ("trials", "seed", "max_streams"):
        value = getattr(options, name)
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise OptionError(name, f"must be an integer, got {value!r}")
    if options.objective not in OBJECTIVES:
        raise OptionError("objective", f"must be 'makespan' or 'pareto', got {options.objective!r}")
    if options.provider not in PROVIDER_CHOICES:
        raise OptionError("provider", f"must be {', '.join(map(repr, PROVIDER_CHOICES))}, got {options.provider!r}")
    if not isinstance(options.serve, bool):
        raise OptionError("serve", f"must be True or False, got {options.serve!r}")


def _check_ranges(options: CompileOptions) -> None:
    if options.trials < 0:
        raise OptionError("trials", f"must be >= 0, got {options.trials!r}")
    if options.max_streams < 1:
        raise OptionError("max_streams", f"must be >= 1, got {options.max_streams!r}")
    budget = options.time_budget_s
    if budget is not None and not (_real(budget) and 0 < budget < math.inf):
        raise OptionError("time_budget_s", f"must be a finite number of seconds > 0 (or unset: no limit), "
                                           f"got {budget!r}")
    if not (_real(options.profile_budget_s) and 0 <= options.profile_budget_s < math.inf):
        raise OptionError("profile_budget_s", f"must be a finite number of seconds >= 0, "
                                              f"got {options.profile_budget_s!r}")
    if not (_real(options.interference_threshold) and options.interference_threshold >= 1.0):
        raise OptionError("interference_threshold", f"must be a number >= 1.0 (inf lifts it), "
                                                    f"got {options.interference_threshold!r}")


def _check_devices(options: CompileOptions) -> None:
    devices = options.devices
    if devices is not None:
        if isinstance(devices, str) or not isinstance(devices, Sequence) or not devices or not all(
                isinstance(d, str) for d in devices):
            raise OptionError("devices", f"must be a list of device names such as ['cpu:0', 'cpu:1'], got {devices!r}")
        object.__setattr__(options, "devices", tuple(devices))
    cap = options.memory_cap
    if cap is not None:
        if devices is None or len(devices) < 2:
            raise OptionError("memory_cap", "applies to the devices of a multi-device plan; give two or more",
                              see="devices")
        for value in cap.values() if isinstance(cap, Mapping) else (cap,):
            try:
                parse_bytes(value, "memory_cap")
            except ConfigError as exc:
                raise OptionError("memory_cap", str(exc).removeprefix("memory_cap: ")) from None
    if options.device_spec is not None and (devices is None or len(devices) < 2):
        raise OptionError("device_spec", "applies to the devices of a multi-device plan; give two or more",
                          see="devices")
    splits = {} if options.splits is None else options.splits
    if not isinstance(splits, Mapping):
        raise OptionError("splits", f"must map tenant -> split kind, got {splits!r}")
    for tenant, kind in splits.items():
        if kind not in SPLIT_KINDS:
            raise OptionError("splits", f"must be one of {', '.join(SPLIT_KINDS)}, got {kind!r}", key=tenant)
    if splits and (devices is None or len(devices) < 2):
        raise OptionError("splits", "applies to the devices of a multi-device plan; give two or more", see="devices")
    object.__setattr__(options, "splits", MappingProxyType(dict(splits)))
    if options.serve and devices is not None and len(devices) >= 2:
        raise OptionError("serve", "serves one-device plans; a multi-device plan has no plans per set of tenants "
                                   "yet (drop devices, or serve)", see="devices")


def _checked_slos(slo_ms: Any) -> Mapping[str, float]:
    """``slo_ms`` as a read-only copy, each SLO a finite number of ms > 0."""
    if slo_ms is None:
        return MappingProxyType({})
    if not isinstance(slo_ms, Mapping):
        raise OptionError("slo_ms", f"must map tenant -> milliseconds, got {slo_ms!r}")
    for tenant, ms in slo_ms.items():
        if not (_real(ms) and 0 < ms < math.inf):
            raise OptionError("slo_ms", f"must be a finite number > 0 ms, got {ms!r}", key=tenant)
    return MappingProxyType(dict(slo_ms))


def _real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and not math.isnan(value)


def _is_cost_model(value: Any) -> bool:
    from cosched.costmodel import CostModel  # here, not above: importing the options stays cheap

    return isinstance(value, CostModel)


DEFAULTS = CompileOptions()
"""Every option at its default; the CLI's flags default to these."""
