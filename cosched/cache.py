"""cosched's on-disk cache: zoo exports, device measurements, trained cost models.

:func:`cache_root` is the one place that reads ``$COSCHED_CACHE_DIR``; every cached kind of
file lives in its own subfolder of it.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CACHE_ENV", "cache_root"]

CACHE_ENV = "COSCHED_CACHE_DIR"


def cache_root() -> Path:
    """``$COSCHED_CACHE_DIR`` if set, else ``~/.cache/cosched``."""
    override = os.environ.get(CACHE_ENV)
    return Path(override).expanduser() if override else Path.home() / ".cache" / "cosched"
