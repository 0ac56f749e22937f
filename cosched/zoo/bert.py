"""BERT encoder (Devlin et al., 2019), written with plain ops so it exports to plain ONNX.

Attention is spelled out (MatMul, scale, additive mask, Softmax, MatMul) instead of
``nn.MultiheadAttention``/SDPA, so exporters emit MatMul/Softmax rather than fused or
opset-specific attention ops. GELU is the exact (erf) form, as in BERT.

full: BERT-base: 12 layers, hidden 768, 12 heads, FFN 3072, vocab 30522, 512 positions,
2 token types, sequence 128; 109,482,240 parameters with the pooler, as HuggingFace's
``bert-base-uncased`` ``BertModel``.
tiny: 2 layers, hidden 64, 4 heads, FFN 256, vocab 1000, sequence 16.

Inputs are ``input_ids`` and ``attention_mask`` (int64, [batch, seq]); token types are all 0.
Outputs are ``last_hidden_state`` [batch, seq, hidden] and ``pooler_output`` [batch, hidden].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from cosched.zoo._spec import InputSpec, ModelSpec

__all__ = ["SPEC", "BertConfig"]

MASK_BIAS = -10000.0  # added to attention scores of padded positions, as in BERT


@dataclass(frozen=True)
class BertConfig:
    vocab: int
    hidden: int
    layers: int
    heads: int
    intermediate: int
    max_positions: int
    type_vocab: int
    seq: int
    eps: float = 1e-12


class SelfAttention(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.heads = config.heads
        self.head_dim = config.hidden // config.heads
        self.query = nn.Linear(config.hidden, config.hidden)
        self.key = nn.Linear(config.hidden, config.hidden)
        self.value = nn.Linear(config.hidden, config.hidden)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        b, s, hidden = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, s, self.heads, self.head_dim).transpose(1, 2)

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(self.head_dim))
        probs = torch.softmax(scores + mask_bias, dim=-1)
        return torch.matmul(probs, v).transpose(1, 2).reshape(b, s, hidden)


class EncoderLayer(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.attention = SelfAttention(config)
        self.attention_output = nn.Linear(config.hidden, config.hidden)
        self.attention_norm = nn.LayerNorm(config.hidden, eps=config.eps)
        self.intermediate = nn.Linear(config.hidden, config.intermediate)
        self.gelu = nn.GELU()
        self.output = nn.Linear(config.intermediate, config.hidden)
        self.output_norm = nn.LayerNorm(config.hidden, eps=config.eps)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        x = self.attention_norm(x + self.attention_output(self.attention(x, mask_bias)))
        return self.output_norm(x + self.output(self.gelu(self.intermediate(x))))


class Bert(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab, config.hidden)
        self.position_embeddings = nn.Embedding(config.max_positions, config.hidden)
        self.token_type_embeddings = nn.Embedding(config.type_vocab, config.hidden)
        self.embedding_norm = nn.LayerNorm(config.hidden, eps=config.eps)
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.layers))
        self.pooler = nn.Linear(config.hidden, config.hidden)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(positions)
            + self.token_type_embeddings(torch.zeros_like(input_ids))
        )
        x = self.embedding_norm(x)
        mask_bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * MASK_BIAS
        for layer in self.layers:
            x = layer(x, mask_bias)
        return x, torch.tanh(self.pooler(x[:, 0]))


def _inputs(config: BertConfig) -> tuple[InputSpec, ...]:
    return (
        InputSpec("input_ids", (config.seq,), "int64", kind="index", high=(config.vocab,)),
        InputSpec("attention_mask", (config.seq,), "int64", kind="mask", high=(2,)),
    )


SPEC = ModelSpec(
    name="bert",
    summary="BERT encoder (embeddings, 12x [self-attention, GELU FFN, LayerNorm], pooler)",
    configs=(
        (
            "tiny",
            BertConfig(
                vocab=1000,
                hidden=64,
                layers=2,
                heads=4,
                intermediate=256,
                max_positions=16,
                type_vocab=2,
                seq=16,
            ),
        ),
        (
            "full",
            BertConfig(
                vocab=30522,
                hidden=768,
                layers=12,
                heads=12,
                intermediate=3072,
                max_positions=512,
                type_vocab=2,
                seq=128,
            ),
        ),
    ),
    make=Bert,
    inputs=_inputs,
    output_names=("last_hidden_state", "pooler_output"),
)
