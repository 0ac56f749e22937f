"""Outside models: architectures the cosched team did not write for cosched.zoo.

A result that holds only on the reference zoo is a result about the zoo. These models are
written from their papers in plain ``torch.nn`` (:mod:`benchmarks.outside.cnn`,
:mod:`benchmarks.outside.transformers`), independently of :mod:`cosched.zoo`, and exported
the way a user exports their own model: ``torch.onnx.export`` with the default (dynamo)
exporter and default opset. Full size only, batch 1 by default:

===================  ===========================================  ============  ===========
name                 paper                                        parameters    input
===================  ===========================================  ============  ===========
shufflenet_v2_x1_0   Ma et al. 2018, ShuffleNet V2 1.0x           2,278,604     image
efficientnet_b0      Tan & Le 2019, EfficientNet-B0               5,288,548     image
densenet121          Huang et al. 2017, DenseNet-121              7,978,856     image
resnext50_32x4d      Xie et al. 2017, ResNeXt-50 (32x4d)          25,028,904    image
vit_s16              Dosovitskiy et al. 2021 / DeiT-S, ViT-S/16   22,050,664    image
pythia_70m           Biderman et al. 2023, Pythia-70M             70,426,624    input_ids
===================  ===========================================  ============  ===========

``image`` is ``(batch, 3, 224, 224)`` float32; ``input_ids`` is ``(batch, 64)`` int64 token
ids. Every model has one output, ``logits``. API::

    names()                          # the six names above
    build(name)                      # torch.nn.Module in eval mode, seeded weights
    export(name, batch=1) -> Path    # cached ONNX file
    example_inputs(name, batch=1)    # {input name: np.ndarray}, deterministic

Weights: ``torch.manual_seed`` (inside :func:`torch.random.fork_rng`, so the caller's
random state is untouched), torch's default initialisation, then BatchNorm and LayerNorm
affine parameters drawn away from 1 and 0, and BatchNorm running statistics measured on one
seeded batch of random images (a float64 train-mode forward with a cumulative average), so every
BatchNorm holds non-trivial statistics that keep activations of order one.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import tempfile
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxscript
import torch
from torch import nn

from benchmarks.outside.cnn import DenseNet121, EfficientNetB0, ResNeXt50, ShuffleNetV2
from benchmarks.outside.transformers import PythiaDecoder, ViTSmall
from cosched.cache import cache_root
from cosched.errors import ConfigError, CoschedError

__all__ = [
    "BUILD_VERSION",
    "MODELS",
    "SEQ_LEN",
    "OutsideExportError",
    "OutsideModel",
    "build",
    "cache_dir",
    "example_inputs",
    "export",
    "names",
]

# Bump when a model, its initialisation or the export options change what a file contains.
BUILD_VERSION = 1
SEQ_LEN = 64
IMAGE = (3, 224, 224)
_CALIBRATION_BATCH = 4


class OutsideExportError(CoschedError):
    """torch.onnx.export failed for an outside model, or wrote a file failing onnx.checker."""


@dataclass(frozen=True)
class OutsideModel:
    """An outside model: its class, family and single input (shape without the batch axis)."""

    name: str
    make: Callable[[], nn.Module]
    family: str  # "cnn" or "transformer"
    input_name: str
    input_shape: tuple[int, ...]
    vocab: int = 0  # exclusive bound of an int64 token input; 0 for a float image

    @property
    def paper_params(self) -> float:
        """The parameter count the paper gives (its class's ``PAPER_PARAMS``)."""
        return float(getattr(self.make, "PAPER_PARAMS"))  # noqa: B009 (typed as Callable)


MODELS: dict[str, OutsideModel] = {
    m.name: m
    for m in (
        OutsideModel("shufflenet_v2_x1_0", ShuffleNetV2, "cnn", "image", IMAGE),
        OutsideModel("efficientnet_b0", EfficientNetB0, "cnn", "image", IMAGE),
        OutsideModel("densenet121", DenseNet121, "cnn", "image", IMAGE),
        OutsideModel("resnext50_32x4d", ResNeXt50, "cnn", "image", IMAGE),
        OutsideModel("vit_s16", ViTSmall, "transformer", "image", IMAGE),
        OutsideModel("pythia_70m", PythiaDecoder, "transformer", "input_ids", (SEQ_LEN,), 50304),
    )
}


def names() -> list[str]:
    """The outside models' names, CNNs first."""
    return list(MODELS)


def _model(name: str) -> OutsideModel:
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(
            f"unknown outside model {name!r}; expected one of {', '.join(MODELS)}"
        ) from None


def _check_batch(batch: int) -> None:
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ConfigError(f"outside model batch must be an integer >= 1, got {batch!r}")


def example_inputs(name: str, batch: int = 1, *, seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic inputs: standard normal images, or token ids uniform over the vocabulary."""
    model = _model(name)
    _check_batch(batch)
    rng = np.random.default_rng([seed, zlib.crc32(name.encode()), batch])
    shape = (batch, *model.input_shape)
    if model.vocab:
        return {model.input_name: rng.integers(0, model.vocab, size=shape, dtype=np.int64)}
    return {model.input_name: rng.standard_normal(shape, dtype=np.float32)}


def build(name: str, *, seed: int = 0) -> nn.Module:
    """Outside model ``name`` in eval mode with weights fixed by ``seed`` (see module doc)."""
    model = _model(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = model.make()
        with torch.no_grad():
            _perturb_norms(module)
            if any(isinstance(m, nn.BatchNorm2d) for m in module.modules()):
                _calibrate_batchnorm(module)
    return module.eval()


def _perturb_norms(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d | nn.LayerNorm):
            low, high = (0.5, 1.5) if isinstance(m, nn.BatchNorm2d) else (0.8, 1.2)
            m.weight.uniform_(low, high)
            m.bias.uniform_(-0.2, 0.2)


def _calibrate_batchnorm(module: nn.Module) -> None:
    """Running statistics of every BatchNorm := those of one random batch (as after training).

    Measured in float64 and rounded to float32, so the statistics do not depend on how many
    threads summed them: the same seed gives the same weights on any machine. One thread:
    torch runs float64 grouped convolutions group by group, and with two threads on a busy
    machine each of those thousands of small calls waits for the other thread (seconds to
    a minute instead of about one second).
    """
    norms = [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: one batch sets the statistics exactly
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        module.double().train()
        module(torch.randn(_CALIBRATION_BATCH, *IMAGE, dtype=torch.float64))
    finally:
        torch.set_num_threads(threads)
        module.float()
    for m in norms:
        m.momentum = 0.1


def cache_dir() -> Path:
    """Where exports are cached: the ``outside`` folder of :func:`cosched.cache.cache_root`."""
    return cache_root() / "outside"


def cached_name(name: str, batch: int) -> str:
    """The model, batch and torch version, readable, plus a digest of everything that matters."""
    key = {"name": name, "batch": batch, "torch": torch.__version__,
           "onnxscript": onnxscript.__version__, "build": BUILD_VERSION}  # fmt: skip
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return f"{name}-b{batch}-torch{torch.__version__}-{digest}.onnx"


def export(name: str, batch: int = 1) -> Path:
    """ONNX file of ``name`` at ``batch``: exported once, then returned from the cache.

    Written to a temporary file in the cache directory and renamed into place, so a
    concurrent reader sees no file or a whole one.
    """
    model = _model(name)
    _check_batch(batch)
    target = cache_dir() / cached_name(name, batch)
    if target.exists():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the outside-model cache {target.parent}: {exc}") from exc
    feeds = example_inputs(name, batch)
    args = (torch.from_numpy(feeds[model.input_name]),)
    module = build(name)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    what = f"outside model {name!r} (batch {batch}, torch {torch.__version__})"
    try:
        with _quiet() as captured:
            try:
                torch.onnx.export(module, args, str(tmp), dynamo=True, external_data=False,
                                  input_names=[model.input_name], output_names=["logits"])  # fmt: skip
            except Exception as exc:  # the exporter raises many types; each is an export failure
                tail = captured.getvalue()[-2000:]
                raise OutsideExportError(f"exporting {what} failed: {exc}\n{tail}") from exc
        try:
            onnx.checker.check_model(str(tmp))
        except onnx.checker.ValidationError as exc:
            raise OutsideExportError(f"{what} exported a file failing onnx.checker: {exc}") from exc
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


@contextlib.contextmanager
def _quiet() -> Iterator[io.StringIO]:
    """The exporter prints progress and warns freely; keep that out of the caller's output."""
    captured = io.StringIO()
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with (warnings.catch_warnings(), contextlib.redirect_stdout(captured),
              contextlib.redirect_stderr(captured)):  # fmt: skip
            warnings.simplefilter("ignore")
            yield captured
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
