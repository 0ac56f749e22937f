"""DLRM (Naumov et al., 2019): bottom MLP, embedding tables, dot interaction, top MLP.

Embedding bags are ``nn.Embedding`` lookups summed over the bag axis with ``.sum`` (not
``nn.EmbeddingBag``, which exports as Loop + sequence ops): each table gives
Gather + ReduceSum. The pairwise dot-product interaction is a batched MatMul of the stacked
features with their transpose, of which the strictly lower triangle is gathered.

full: 13 dense features, 26 sparse features with 64-dimensional embeddings, bags of 4
indices; bottom MLP 13-512-256-64, top MLP 415-512-512-256-1 (415 = 64 + 27*26/2), sigmoid
output, as the DLRM reference's Criteo Terabyte configuration. Table rows are the Criteo Kaggle
cardinalities capped at 40,000 rows (the DLRM reference's ``--max-ind-range=40000``):
367,398 rows in all, 94.1 MB of float32 embedding weights and 24.3M parameters, so the ONNX
file stays under 100 MB; uncapped, the tables would hold 33.8M rows (8.6 GB).
tiny: 4 dense features, 3 tables of 50, 30 and 20 rows, 8-dimensional embeddings, bags of 2,
bottom MLP 4-16-8, top MLP 14-16-1.

Inputs: ``dense_features`` float32 [batch, dense], ``sparse_indices`` int64
[batch, tables, bag] (row indices, each within its table). Output: ``click_probability``
float32 [batch, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import torch
from torch import nn

from cosched.zoo._spec import InputSpec, ModelSpec

__all__ = ["CRITEO_KAGGLE_ROWS", "SPEC", "DLRMConfig"]

# Rows per sparse feature in Criteo Kaggle (the DLRM reference's day_fea_count).
CRITEO_KAGGLE_ROWS = (
    1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194,
    27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572,
)  # fmt: skip
MAX_IND_RANGE = 40_000


@dataclass(frozen=True)
class DLRMConfig:
    dense: int
    table_rows: tuple[int, ...]
    embedding_dim: int
    bag: int
    bottom: tuple[int, ...]  # hidden widths; the last equals embedding_dim
    top: tuple[int, ...]  # hidden widths; a final 1-wide layer is added


def _mlp(widths: tuple[int, ...], sigmoid_last: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (cin, cout) in enumerate(pairwise(widths)):
        layers.append(nn.Linear(cin, cout))
        last = i == len(widths) - 2
        layers.append(nn.Sigmoid() if last and sigmoid_last else nn.ReLU())
    return nn.Sequential(*layers)


class DLRM(nn.Module):
    def __init__(self, config: DLRMConfig) -> None:
        super().__init__()
        features = len(config.table_rows) + 1
        self.pairs = [(i, j) for i in range(features) for j in range(i)]  # strictly lower
        self.flat_pairs = [i * features + j for i, j in self.pairs]
        self.bottom = _mlp((config.dense, *config.bottom), sigmoid_last=False)
        self.tables = nn.ModuleList(
            nn.Embedding(rows, config.embedding_dim) for rows in config.table_rows
        )
        top_in = config.embedding_dim + len(self.pairs)
        self.top = _mlp((top_in, *config.top, 1), sigmoid_last=True)

    def forward(self, dense_features: torch.Tensor, sparse_indices: torch.Tensor) -> torch.Tensor:
        x = self.bottom(dense_features)
        bags = [table(sparse_indices[:, t]).sum(dim=1) for t, table in enumerate(self.tables)]
        z = torch.stack([x, *bags], dim=1)  # [batch, features, dim]
        interactions = torch.bmm(z, z.transpose(1, 2)).flatten(1)  # [batch, features^2]
        index = torch.tensor(self.flat_pairs, dtype=torch.int64, device=z.device)
        pairs = interactions.index_select(1, index)
        return self.top(torch.cat([x, pairs], dim=1))


def _inputs(config: DLRMConfig) -> tuple[InputSpec, ...]:
    tables = len(config.table_rows)
    return (
        InputSpec("dense_features", (config.dense,), "float32"),
        InputSpec(
            "sparse_indices", (tables, config.bag), "int64", kind="index", high=config.table_rows
        ),
    )


SPEC = ModelSpec(
    name="dlrm",
    summary="DLRM recommender (bottom MLP, 26 embedding tables summed over bags, dot interaction, top MLP)",
    configs=(
        (
            "tiny",
            DLRMConfig(
                dense=4, table_rows=(50, 30, 20), embedding_dim=8, bag=2, bottom=(16, 8), top=(16,)
            ),
        ),
        (
            "full",
            DLRMConfig(
                dense=13,
                table_rows=tuple(min(rows, MAX_IND_RANGE) for rows in CRITEO_KAGGLE_ROWS),
                embedding_dim=64,
                bag=4,
                bottom=(512, 256, 64),
                top=(512, 512, 256),
            ),
        ),
    ),
    make=DLRM,
    inputs=_inputs,
    output_names=("click_probability",),
)
