"""Tiny ONNX models for the CLI error tests, written to files: two MLPs and an embedding."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ir"))
from onnx_models import make_model, mlp, tensor

__all__ = ["VOCAB", "embedding", "write_models"]

#: Rows of the embedding table: token ids must lie in [0, VOCAB).
VOCAB = 10


def embedding(name: str = "emb") -> onnx.ModelProto:
    """ids[1, 4] (int64) -> Gather(table[VOCAB, 3]) -> Relu -> y[1, 4, 3]."""
    table = np.random.default_rng(1).standard_normal((VOCAB, 3)).astype(np.float32)
    return make_model(
        [
            helper.make_node("Gather", ["table", "ids"], ["e"], name="lookup"),
            helper.make_node("Relu", ["e"], ["y"], name="relu"),
        ],
        [tensor("ids", TensorProto.INT64, [1, 4])],
        [tensor("y", TensorProto.FLOAT, [1, 4, 3])],
        {"table": table},
        name=name,
    )


def write_models(folder: Path) -> dict[str, Path]:
    """``a.onnx`` and ``b.onnx`` (x[1, 4] -> y[1, 3]), ``dyn.onnx`` (symbolic batch) and
    ``emb.onnx``, keyed by tenant."""
    folder.mkdir(parents=True, exist_ok=True)
    models = {"a": mlp("a", batch=1), "b": mlp("b", batch=1), "dyn": mlp("dyn"), "emb": embedding()}
    paths = {}
    for tenant, model in models.items():
        paths[tenant] = folder / f"{tenant}.onnx"
        onnx.save(model, paths[tenant])
    return paths
