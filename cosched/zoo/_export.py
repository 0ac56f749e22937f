"""Exporting zoo models to ONNX, with an on-disk cache, and drawing their example inputs.

The cache holds one file per (name, size, batch, dynamic_batch, legacy) and per torch,
onnxscript and :data:`BUILDER_VERSION`; any of these changing gives a new file name, so a stale
export is never returned. Files are written to a temporary name in the cache directory and
renamed into place, so concurrent processes see either no file or a whole one.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxscript
import torch

from cosched.cache import CACHE_ENV, cache_root
from cosched.errors import ConfigError, CoschedError
from cosched.zoo._registry import spec
from cosched.zoo._spec import DEFAULT_SEED, InputSpec, ModelSpec

__all__ = [
    "BUILDER_VERSION",
    "CACHE_ENV",
    "LEGACY_OPSET",
    "ExportError",
    "cache_dir",
    "cached_name",
    "example_inputs",
    "export",
]

log = logging.getLogger(__name__)

# Bump when any builder, initialiser or export option changes what a file contains.
BUILDER_VERSION = 1
# Opset of the TorchScript (legacy) exporter; the dynamo exporter uses its own default.
LEGACY_OPSET = 18
_NOISY_LOGGERS = ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx", "onnxscript")


class ExportError(CoschedError):
    """torch.onnx.export failed for a zoo model, or produced a file failing onnx.checker."""


def cache_dir() -> Path:
    """Where exports are cached: the ``zoo`` folder of :func:`cosched.cache.cache_root`."""
    return cache_root() / "zoo"


def _check_batch(batch: int) -> None:
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ConfigError(f"zoo batch must be an integer >= 1, got {batch!r}")


def cached_name(name: str, *, size: str, batch: int, dynamic_batch: bool, legacy: bool) -> str:
    """The cache file name of an export: readable options plus a digest of every key part."""
    key = {
        "name": name, "size": size, "batch": batch, "dynamic_batch": dynamic_batch,
        "legacy": legacy, "torch": torch.__version__, "onnxscript": onnxscript.__version__,
        "builder": BUILDER_VERSION,
    }  # fmt: skip
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    dyn = "-dyn" if dynamic_batch else ""
    exporter = "legacy" if legacy else "dynamo"
    return f"{name}-{size}-b{batch}{dyn}-{exporter}-{digest}.onnx"


def _draw(spec_: InputSpec, batch: int, rng: np.random.Generator) -> np.ndarray:
    shape = spec_.batched(batch)
    if spec_.kind == "dense":
        return rng.standard_normal(shape, dtype=np.float32).astype(spec_.dtype)
    if spec_.kind == "mask":
        lengths = rng.integers(1, shape[-1] + 1, size=shape[:-1])
        return (np.arange(shape[-1]) < lengths[..., None]).astype(spec_.dtype)
    high = np.asarray(spec_.high, dtype=np.int64)
    if high.size > 1:  # one bound per position of axis 1 (the first non-batch axis)
        high = high.reshape((1, -1) + (1,) * (len(shape) - 2))
    return (rng.random(shape) * high).astype(spec_.dtype)


def example_inputs(
    name: str, size: str = "tiny", batch: int = 1, *, seed: int = DEFAULT_SEED
) -> dict[str, np.ndarray]:
    """Deterministic inputs for ``batch`` samples, keyed by input name.

    Float inputs are standard normal; index inputs lie in their valid ranges; attention masks
    are a run of ones followed by padding. Same arguments, same arrays.
    """
    _check_batch(batch)
    model = spec(name)
    rng = np.random.default_rng([seed, zlib.crc32(f"{name}/{size}".encode()), batch])
    return {s.name: _draw(s, batch, rng) for s in model.input_specs(size)}


def export(
    name: str,
    path: str | os.PathLike[str] | None = None,
    *,
    size: str = "tiny",
    batch: int = 1,
    dynamic_batch: bool = False,
    legacy: bool = False,
) -> Path:
    """Export zoo model ``name`` to ONNX and return the file's path.

    ``size`` is ``tiny`` or ``full``; ``batch`` fixes the batch dimension, unless
    ``dynamic_batch`` makes it symbolic (named ``batch``) in every input and output.
    ``legacy=True`` uses the TorchScript exporter (``dynamo=False``, opset
    :data:`LEGACY_OPSET`), whose files carry Shape/Gather/Concat/Constant chains; the default is
    the dynamo exporter. Weights are stored inside the one file. The export is cached (see
    :func:`cache_dir`); with ``path`` the cached file is copied there and ``path`` returned.
    Raises :class:`ConfigError` for an unknown name or size or a bad batch, and
    :class:`ExportError` when the exporter fails.
    """
    model = spec(name)
    model.config(size)
    _check_batch(batch)
    directory = cache_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"zoo cache directory {directory} cannot be created ({exc.strerror}); "
            f"set {CACHE_ENV} to a writable directory"
        ) from exc
    cached = directory / cached_name(
        name, size=size, batch=batch, dynamic_batch=dynamic_batch, legacy=legacy
    )
    if cached.exists():
        log.debug("zoo: %s %s found in cache: %s", name, size, cached)
    else:
        _export_to(
            cached, model, size=size, batch=batch, dynamic_batch=dynamic_batch, legacy=legacy
        )
    if path is None:
        return cached
    return _copy_atomic(cached, Path(path))


def _copy_atomic(source: Path, dest: Path) -> Path:
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        os.close(fd)
        shutil.copyfile(source, tmp)
        os.replace(tmp, dest)
    except OSError as exc:
        raise ConfigError(f"cannot write the exported model to {dest}: {exc.strerror}") from exc
    return dest


@contextlib.contextmanager
def _quiet() -> Iterator[io.StringIO]:
    """Capture the exporters' prints and silence their warnings and log lines."""
    captured = io.StringIO()
    loggers = [logging.getLogger(n) for n in _NOISY_LOGGERS]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(captured),
            contextlib.redirect_stderr(captured),
        ):
            warnings.simplefilter("ignore")
            yield captured
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _export_to(
    target: Path, model: ModelSpec, *, size: str, batch: int, dynamic_batch: bool, legacy: bool
) -> None:
    exporter = "legacy TorchScript" if legacy else "dynamo"
    what = f"zoo model {model.name!r} (size {size}, batch {batch}, {exporter} exporter)"
    log.info("exporting %s", what)
    # torch.export specialises a dimension of size 1, so a symbolic batch is traced at 2.
    trace_batch = max(batch, 2) if dynamic_batch else batch
    arrays = example_inputs(model.name, size, trace_batch)
    args = tuple(torch.from_numpy(arrays[n]) for n in model.input_names(size))
    module = model.build(size)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.stem}.", suffix=".tmp.onnx", dir=target.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with _quiet() as captured:
            try:
                _run_exporter(module, args, tmp, model, size, dynamic_batch, legacy)
            except Exception as exc:  # the exporters raise many types; all are export failures
                tail = captured.getvalue()[-2000:]
                raise ExportError(f"{what} failed: {type(exc).__name__}: {exc}\n{tail}") from exc
        try:
            onnx.checker.check_model(str(tmp))
        except onnx.checker.ValidationError as exc:
            raise ExportError(f"{what} produced a file failing onnx.checker: {exc}") from exc
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _run_exporter(
    module: torch.nn.Module,
    args: tuple[torch.Tensor, ...],
    tmp: Path,
    model: ModelSpec,
    size: str,
    dynamic_batch: bool,
    legacy: bool,
) -> None:
    input_names = list(model.input_names(size))
    output_names = list(model.output_names)
    if legacy:
        torch.onnx.export(
            module, args, str(tmp), dynamo=False, opset_version=LEGACY_OPSET,
            dynamic_axes=model.dynamic_axes(size) if dynamic_batch else None,
            input_names=input_names, output_names=output_names,
        )  # fmt: skip
        return
    dynamic_shapes = None
    if dynamic_batch:
        batch_dim = torch.export.Dim("batch")
        dynamic_shapes = tuple({0: batch_dim} for _ in args)
    torch.onnx.export(
        module, args, str(tmp), dynamo=True, external_data=False, dynamic_shapes=dynamic_shapes,
        verbose=False, input_names=input_names, output_names=output_names,
    )  # fmt: skip
