"""Reference model zoo: seeded torch.nn builds of well-known nets, exported to ONNX.

Models (``names()``): resnet50, inception_v3, googlenet, mobilenet_v2, squeezenet1_1, bert,
dlrm. Each comes in two sizes: ``full`` follows the published architecture (layer counts,
channels, input size); ``tiny`` keeps the topology, narrower and shallower, for fast tests.
Each model's module docstring (``cosched.zoo.resnet``, ...) states both configurations.

Stable API::

    path = export("resnet50", size="tiny", batch=1, dynamic_batch=False, legacy=False)
    feeds = example_inputs("resnet50", "tiny", batch=1)   # {input name: np.ndarray}
    module = build("resnet50", "tiny")                   # torch.nn.Module, eval(), seeded
    ZOO["bert"].input_names("full"), ZOO["bert"].output_names

Batch is always axis 0 of every input and output. Weights depend only on the seed (default
0), never on torch's global random state, which building leaves untouched. Exports are cached
under :func:`cache_dir` (``$COSCHED_CACHE_DIR`` or ``~/.cache/cosched/zoo``).

Layering: beside :mod:`cosched.ir` at the bottom (imports :mod:`cosched.cache` and
:mod:`cosched.errors`); only tests, benchmarks and the CLI use it.
"""

from __future__ import annotations

from torch import nn

from cosched.zoo._export import (
    BUILDER_VERSION,
    CACHE_ENV,
    LEGACY_OPSET,
    ExportError,
    cache_dir,
    cached_name,
    example_inputs,
    export,
)
from cosched.zoo._registry import ZOO, names, spec
from cosched.zoo._spec import DEFAULT_SEED, SIZES, InputSpec, ModelSpec

__all__ = [
    "BUILDER_VERSION",
    "CACHE_ENV",
    "DEFAULT_SEED",
    "LEGACY_OPSET",
    "SIZES",
    "ZOO",
    "ExportError",
    "InputSpec",
    "ModelSpec",
    "build",
    "cache_dir",
    "cached_name",
    "example_inputs",
    "export",
    "names",
    "spec",
]


def build(name: str, size: str = "tiny", *, seed: int = DEFAULT_SEED) -> nn.Module:
    """Zoo model ``name`` as a torch module in eval mode, weights drawn from ``seed``."""
    return spec(name).build(size, seed=seed)
