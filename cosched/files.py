"""Reading ``--inputs TENANT=FILE.npz`` and writing ``--save-outputs DIR`` (the CLI verbs and the
distributed runtime), and checking output paths before any work.

Inputs of one tenant are one ``.npz`` file whose keys are the model's own input names;
outputs are written the same way, one ``DIR/TENANT.npz`` per tenant keyed by the model's
output names, so a run's outputs can be fed back or compared with onnxruntime's.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from cosched.errors import ConfigError, InputError
from cosched.paths import check_writable_parent

__all__ = [
    "check_output_dir",
    "check_output_file",
    "load_npz",
    "parse_assignments",
    "read_inputs",
    "save_outputs",
    "writing",
]


def parse_assignments(specs: Iterable[str], flag: str, example: str) -> dict[str, str]:
    """``["a=x", "b=y"]`` -> ``{"a": "x", "b": "y"}``; a malformed or repeated key names ``flag``."""
    out: dict[str, str] = {}
    for spec in specs:
        key, sep, value = spec.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise ConfigError(f"{flag} {spec!r}: expected TENANT=VALUE, e.g. {flag} {example}")
        if key in out:
            raise ConfigError(f"{flag}: tenant {key!r} is given twice ({out[key]!r} and {value!r})")
        out[key] = value
    return out


def load_npz(path: str | Path, tenant: str) -> dict[str, np.ndarray]:
    """The arrays of one ``.npz`` file, keyed by name; errors name the tenant and the file."""
    file = Path(path)
    if not file.is_file():
        raise InputError(f"inputs of tenant {tenant!r}: file {file} does not exist")
    if not zipfile.is_zipfile(file):
        raise InputError(f"inputs of tenant {tenant!r}: {file} is not a .npz archive "
                         "(write one with numpy.savez(path, input_name=array, ...))")
    try:
        with np.load(file, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise InputError(f"inputs of tenant {tenant!r}: {file} is not a readable .npz archive ({exc})") from None


def read_inputs(specs: Sequence[str], tenants: Sequence[str]) -> dict[str, dict[str, np.ndarray]]:
    """Inputs from ``--inputs TENANT=FILE.npz`` specs, checked against the known ``tenants``."""
    files = parse_assignments(specs, "--inputs", "bert=bert_inputs.npz")
    unknown = sorted(set(files) - set(tenants))
    if unknown:
        raise ConfigError(f"--inputs names unknown tenant(s) {unknown}; tenants are {list(tenants)}")
    return {tenant: load_npz(path, tenant) for tenant, path in files.items()}


def save_outputs(outputs: Mapping[str, Mapping[str, np.ndarray]], directory: str | Path) -> list[Path]:
    """Write ``DIR/TENANT.npz`` per tenant, keyed by the model's output names; returns the files."""
    out = check_output_dir(directory, "--save-outputs")
    written = []
    with writing("--save-outputs", out):
        out.mkdir(parents=True, exist_ok=True)
        for tenant, arrays in outputs.items():
            path = out / f"{tenant}.npz"
            payload: dict[str, Any] = {name: np.asarray(value) for name, value in arrays.items()}
            np.savez(path, **payload)
            written.append(path)
    return written


def check_output_file(path: str | Path, flag: str) -> Path:
    """``path`` as a Path if a file can be written there (it is no directory, and its nearest
    existing parent is a writable directory); else :class:`ConfigError` naming ``flag``.
    Called before any expensive work, so a bad path fails first."""
    out = Path(path)
    if out.is_dir():
        raise ConfigError(f"{flag} {out}: is a directory; give a file path")
    if out.exists() and not os.access(out, os.W_OK):
        raise ConfigError(f"{flag} {out}: the file is not writable")
    check_writable_parent(out, flag)
    return out


def check_output_dir(path: str | Path, flag: str) -> Path:
    """``path`` as a Path if a directory can be written there (an existing writable directory,
    or creatable under a writable one); else :class:`ConfigError` naming ``flag``."""
    out = Path(path)
    if out.exists():
        if not out.is_dir():
            raise ConfigError(f"{flag} {out}: exists and is not a directory")
        if not os.access(out, os.W_OK | os.X_OK):
            raise ConfigError(f"{flag} {out}: the directory is not writable")
        return out
    check_writable_parent(out, flag)
    return out


@contextmanager
def writing(flag: str, path: str | Path) -> Iterator[None]:
    """Turn an ``OSError`` while writing ``path`` (a full disk, a read-only file system) into
    a :class:`ConfigError` naming ``flag`` and the reason."""
    try:
        yield
    except OSError as exc:
        reason = f"{exc.strerror}: {exc.filename}" if exc.strerror and exc.filename else str(exc)
        raise ConfigError(f"{flag} {path}: cannot write ({reason})") from None
