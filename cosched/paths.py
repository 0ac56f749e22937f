"""Checks on where cosched is asked to write, made before any work is spent."""

from __future__ import annotations

import os
from pathlib import Path

from cosched.errors import ConfigError

__all__ = ["check_writable_parent"]


def check_writable_parent(out: Path, label: str) -> None:
    """Raise :class:`ConfigError` (starting with ``label``) unless the nearest existing
    ancestor of ``out`` is a directory this process may create entries in."""
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{label} {out}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{label} {out}: directory {parent} is not writable")
