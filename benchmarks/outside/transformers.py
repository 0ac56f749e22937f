"""Two transformers, written from their papers: a vision encoder and a causal language model.

As in :mod:`benchmarks.outside.cnn`, each docstring names the paper, the configuration and
the parameter count that ``tests/benchmarks/test_outside.py`` checks against the paper.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["PythiaDecoder", "ViTSmall"]


# ---------------------------------------------------------------------------------------------
# ViT-S/16


class SelfAttention(nn.Module):
    """Multi-head self-attention written out: one QKV projection, softmax(QK^T / sqrt(d)) V."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        weights = (q @ k.transpose(-2, -1)) * (d // self.heads) ** -0.5
        out = weights.softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class EncoderBlock(nn.Module):
    """Pre-norm transformer encoder block (ViT eq. 2-3): x + MSA(LN(x)), x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = SelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViTSmall(nn.Module):
    """ViT-S/16: the Vision Transformer of Dosovitskiy et al., "An Image is Worth 16x16 Words:
    Transformers for Image Recognition at Scale", ICLR 2021, at the "small" size defined by
    Touvron et al., "Training data-efficient image transformers & distillation through
    attention" (DeiT-S), ICML 2021.

    224 x 224 input cut into 16 x 16 patches by a stride-16 convolution (196 tokens, width
    384), a class token and learned position embeddings (197 x 384); 12 pre-norm encoder
    blocks of 6-head self-attention and a 1536-wide GELU MLP; LayerNorm (eps 1e-6); a
    linear head on the class token to 1000 classes.
    Parameters: 22,050,664 (DeiT's Table 1: 22M).
    """

    PAPER_PARAMS = 22e6

    def __init__(
        self,
        num_classes: int = 1000,
        *,
        image: int = 224,
        patch: int = 16,
        dim: int = 384,
        depth: int = 12,
        heads: int = 6,
        mlp: int = 1536,
    ) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.empty(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.empty(1, (image // patch) ** 2 + 1, dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.Sequential(*(EncoderBlock(dim, heads, mlp) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(image).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        x = self.blocks(torch.cat((cls, tokens), dim=1) + self.pos_embed)
        return self.head(self.norm(x)[:, 0])


# ---------------------------------------------------------------------------------------------
# Pythia-70M


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


class RotaryAttention(nn.Module):
    """Causal multi-head attention with rotary position embeddings (Su et al. 2021) on the
    first ``rotary`` dimensions of each head, as in GPT-NeoX; scaled dot-product attention
    through :func:`torch.nn.functional.scaled_dot_product_attention` with ``is_causal``."""

    cos: torch.Tensor
    sin: torch.Tensor

    def __init__(self, dim: int, heads: int, rotary: int, max_len: int) -> None:
        super().__init__()
        self.heads, self.rotary = heads, rotary
        self.qkv = nn.Linear(dim, 3 * dim)
        self.dense = nn.Linear(dim, dim)
        inv_freq = 1.0 / 10000 ** (torch.arange(0, rotary, 2, dtype=torch.float32) / rotary)
        angles = torch.outer(torch.arange(max_len, dtype=torch.float32), inv_freq)
        angles = torch.cat((angles, angles), dim=-1)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def _rotate(self, x: torch.Tensor, n: int) -> torch.Tensor:
        rot, keep = x[..., : self.rotary], x[..., self.rotary :]
        cos, sin = self.cos[:n], self.sin[:n]
        return torch.cat((rot * cos + rotate_half(rot) * sin, keep), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        # GPT-NeoX lays the fused projection out per head: [q_h, k_h, v_h] for each head h
        qkv = self.qkv(x).reshape(b, n, self.heads, 3 * (d // self.heads)).transpose(1, 2)
        q, k, v = qkv.chunk(3, dim=-1)
        out = F.scaled_dot_product_attention(self._rotate(q, n), self._rotate(k, n), v,
                                             is_causal=True)  # fmt: skip
        return self.dense(out.transpose(1, 2).reshape(b, n, d))


class DecoderLayer(nn.Module):
    """GPT-NeoX layer with parallel residual: x + Attn(LN1(x)) + MLP(LN2(x))."""

    def __init__(self, dim: int, heads: int, rotary: int, max_len: int) -> None:
        super().__init__()
        self.input_norm = nn.LayerNorm(dim)
        self.post_attention_norm = nn.LayerNorm(dim)
        self.attention = RotaryAttention(dim, heads, rotary, max_len)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.attention(self.input_norm(x)) + self.mlp(self.post_attention_norm(x))


class PythiaDecoder(nn.Module):
    """Pythia-70M: Biderman et al., "Pythia: A Suite for Analyzing Large Language Models
    Across Training and Scaling", ICML 2023 (the GPT-NeoX architecture of Black et al. 2022).

    Table 1, 70M row: 6 decoder layers, model width 512, 8 heads; vocabulary 50,304 with
    untied input embedding and output projection; rotary embeddings on 25% of each head's
    64 dimensions; parallel attention and MLP (width 2048, exact GELU); LayerNorm (eps
    1e-5); a causal mask. The sequence length is fixed when exported (64 in the benchmarks).
    Parameters: 70,426,624, of which 18,915,328 outside the two 50,304 x 512 embeddings
    (Table 1 gives the non-embedding count, 18,915,328; the model card the total).
    """

    PAPER_PARAMS = 70_426_624.0
    PAPER_NON_EMBEDDING_PARAMS = 18_915_328

    def __init__(
        self,
        *,
        vocab: int = 50304,
        dim: int = 512,
        layers: int = 6,
        heads: int = 8,
        rotary_pct: float = 0.25,
        max_len: int = 2048,
    ) -> None:
        super().__init__()
        rotary = int(dim // heads * rotary_pct)
        self.embed_in = nn.Embedding(vocab, dim)
        self.layers = nn.Sequential(
            *(DecoderLayer(dim, heads, rotary, max_len) for _ in range(layers))
        )
        self.final_norm = nn.LayerNorm(dim)
        self.embed_out = nn.Linear(dim, vocab, bias=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed_out(self.final_norm(self.layers(self.embed_in(input_ids))))
