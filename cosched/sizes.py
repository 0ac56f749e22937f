"""Sizes in bytes as users write them: ``2GB`` (powers of 1000), ``512MiB`` (powers of 1024),
``3G`` (1024s, as ``free -g`` shows), or a bare number of bytes.

Imported by the options (it must stay cheap: no torch) and by the device and memory code.
"""

from __future__ import annotations

import math
import re

from cosched.errors import ConfigError

__all__ = ["format_bytes", "parse_bytes"]

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*$", re.IGNORECASE)


def parse_bytes(text: str | int, what: str) -> int:
    """``"2GB"`` -> 2_000_000_000, ``"1.5GiB"`` -> 1610612736, ``4096`` -> 4096 (``what``
    names the option in errors)."""
    if isinstance(text, bool):
        raise ConfigError(f"{what}: expected a size such as 2GB or 512MiB, got {text!r}")
    if isinstance(text, int):
        value, unit = float(text), ""
    else:
        match = _SIZE.match(str(text))
        if not match or match.group(2).lower() not in _UNITS:
            raise ConfigError(f"{what}: {text!r} is not a size; expected e.g. 2GB, 512MiB or a number of bytes")
        value, unit = float(match.group(1)), match.group(2).lower()
    size = value * _UNITS[unit]
    if not math.isfinite(size) or size < 1:
        raise ConfigError(f"{what}: a size must be at least 1 byte, got {text!r}")
    return int(size)


def format_bytes(n: int | float) -> str:
    """``1536 * 2**20`` -> ``"1.50 GiB"``."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{int(n)} B"
