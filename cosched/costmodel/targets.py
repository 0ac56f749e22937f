"""The devices a plan targets, and the memory each may use.

A one-device plan targets ``"cpu"`` or ``"cuda[:i]"`` (:meth:`DeviceSpec.detect`). A
multi-device plan targets a list:

- ``["cpu:0", "cpu:1", ...]``: ranks on this machine, one process each; the machine's cores
  and memory are shared out evenly, so each rank's :class:`DeviceSpec` has ``cores // n``
  cores (at least one) and ``memory_bytes // n`` bytes;
- ``["cuda:0", ..., "cuda:7"]``: GPUs of this machine (measured), or, to plan ahead of time
  for hardware this machine does not have, a stored spec (``device_spec``: a JSON file
  written by :meth:`DeviceSpec.save`, or hand-written with the device's published
  ceilings) used for every device of the list.

Every device has a memory cap: its memory, or less when the user caps it
(``memory_cap="2GB"`` for all, or ``{"cuda:0": "16GB", ...}`` per device). Sizes accept
``B``, ``KB``/``MB``/``GB``/``TB`` (powers of 1000) and ``KiB``/``MiB``/``GiB``/``TiB``
(powers of 1024); a bare number is bytes. Devices of one plan must be of one kind and one
spec (the search prices every device with one cost model).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cosched.costmodel.device import DeviceSpec, parse_device
from cosched.errors import ConfigError, DeviceError
from cosched.sizes import format_bytes, parse_bytes

__all__ = ["Target", "resolve_targets"]

@dataclass(frozen=True)
class Target:
    """One device of a plan: its spec, its name in the plan (``"cpu:1"``) and its memory cap."""

    name: str
    spec: DeviceSpec
    cap_bytes: int


def resolve_targets(devices: Sequence[str], memory_cap: str | int | Mapping[str, str | int] | None = None,
                    device_spec: str | Path | DeviceSpec | None = None) -> tuple[Target, ...]:
    """The :class:`Target` of every device of ``devices`` (see the module docstring)."""
    names = [str(d).strip().lower() for d in devices]
    if not names:
        raise ConfigError("devices: give at least one device, e.g. ['cpu:0', 'cpu:1']")
    if len(set(names)) != len(names):
        raise ConfigError(f"devices: {names} names a device twice")
    try:
        parsed = [parse_device(n) for n in names]
    except DeviceError as exc:
        raise ConfigError(f"devices: {exc}") from None
    if len(set(parsed)) != len(parsed):
        raise ConfigError(f"devices: {names} name one device twice (as {sorted(set(names))} parse to "
                          f"{[f'{k}:{i}' for k, i in parsed]})")
    kinds = {kind for kind, _ in parsed}
    if len(kinds) > 1:
        raise ConfigError(f"devices: {names} mixes device kinds; a plan's devices are all 'cpu:<i>' or all 'cuda:<i>'")
    kind = kinds.pop()
    if device_spec is not None:
        base = device_spec if isinstance(device_spec, DeviceSpec) else DeviceSpec.load(device_spec)
        if base.kind != kind:
            raise ConfigError(f"device_spec describes a {base.kind!r} device, but devices are {kind!r}: {names}")
        specs = [dataclasses.replace(base, index=i) for _, i in parsed]
    elif kind == "cpu":
        whole = DeviceSpec.detect("cpu")
        n, cores = len(names), _cores()
        if sorted(i for _, i in parsed) != list(range(n)):
            raise ConfigError(f"devices: CPU ranks of one machine are numbered 0..{n - 1}; got {names}")
        if n > cores:
            raise ConfigError(f"devices: {n} CPU ranks on a machine of {cores} cores; give at most "
                              f"{cores} (each rank needs a core of its own)")
        specs = [dataclasses.replace(whole, cores=max(1, cores // n), memory_bytes=whole.memory_bytes // n,
                                     name=f"{whole.name} (rank {i} of {n})", index=i) for _, i in parsed]
    else:
        specs = [DeviceSpec.detect(name) for name in names]
        if len({(s.name, s.fingerprint) for s in specs}) > 1:
            raise ConfigError(f"devices: {names} are GPUs of different models; a plan's devices share one spec")
    caps = _caps(names, memory_cap)
    targets = []
    for name, spec in zip(names, specs, strict=True):
        cap = caps.get(name)
        if cap is None:
            if not spec.memory_bytes:
                raise ConfigError(f"the memory of {name} ({spec.name}) is unknown; give it with memory_cap "
                                  "(--memory-cap), e.g. 16GB")
            cap = spec.memory_bytes
        elif spec.memory_bytes and cap > spec.memory_bytes:
            raise ConfigError(f"memory cap of {name}: {format_bytes(cap)} is more than the device has "
                              f"({format_bytes(spec.memory_bytes)})")
        targets.append(Target(name, spec, int(cap)))
    return tuple(targets)


def _cores() -> int:
    """The cores this process may run on (its affinity), whatever torch's thread count is now."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _caps(names: Sequence[str], memory_cap: str | int | Mapping[str, str | int] | None) -> dict[str, int]:
    if memory_cap is None:
        return {}
    if isinstance(memory_cap, Mapping):
        unknown = sorted(set(str(k).lower() for k in memory_cap) - set(names))
        if unknown:
            raise ConfigError(f"memory_cap names device(s) {unknown} that are not among the devices {list(names)}")
        return {str(k).lower(): parse_bytes(v, f"memory cap of {k}") for k, v in memory_cap.items()}
    cap = parse_bytes(memory_cap, "memory_cap")
    return {name: cap for name in names}
