"""Small building blocks shared by the sequence models."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence


def padding_mask(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """(B, width) bool, True at padded positions (PyTorch's key_padding_mask convention)."""
    return torch.arange(width, device=lengths.device)[None, :] >= lengths[:, None]


def masked_mean(x: torch.Tensor, pad: torch.Tensor | None) -> torch.Tensor:
    """Mean over time of (B, T, D), ignoring padded positions (`pad` None: none are)."""
    if pad is None:
        return x.mean(1)
    keep = (~pad).unsqueeze(-1).to(x.dtype)
    return (x * keep).sum(1) / keep.sum(1).clamp(min=1.0)


def dropout_keep_mask(shape: torch.Size, p: float, device: torch.device) -> torch.Tensor:
    """Bernoulli(1 - p) keep mask built from 15 random bits per element, four elements per 64-bit draw: on
    CPU about 5x faster than `bernoulli_`, which draws each element serially. p is rounded to a multiple
    of 1/32768 (`mask_rate`)."""
    n = math.prod(shape)
    bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_().view(torch.int16)[:n]
    return (bits & 0x7FFF).ge_(round(p * 32768)).view(shape)  # int64 random_ leaves bit 63 clear: use 15 bits per lane


def mask_rate(p: float) -> float:
    """The drop probability `dropout_keep_mask` realises for p."""
    return round(p * 32768) / 32768


class Dropout(nn.Dropout):
    """nn.Dropout with its CPU mask from `dropout_keep_mask` instead of ATen's `bernoulli_`, which took a
    sixth of a default `mtl` trial: each element kept with probability 1 - p (p to 1/32768) and scaled by
    1 / (1 - p). Another random stream than nn.Dropout's, so a seed gives other, equally distributed masks;
    on GPUs it is nn.Dropout."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or x.device.type != "cpu":
            return super().forward(x)
        rate = mask_rate(self.p)
        if rate >= 1.0:
            return x * 0.0
        return x * dropout_keep_mask(x.shape, self.p, x.device).to(x.dtype).mul_(1.0 / (1.0 - rate))


class AttentionBlock(nn.Module):
    """Multi-head attention with residual and LayerNorm (queries attend to keys)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(
            dim, heads, batch_first=True
        )  # residual dropout only: attention-weight dropout costs a quarter of CPU time
        self.drop = Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, key_pad: torch.Tensor) -> torch.Tensor:
        out, _ = self.attn(query, keys, keys, key_padding_mask=key_pad, need_weights=False)
        return self.norm(query + self.drop(out))


class FeedForwardBlock(nn.Module):
    """Position-wise two-layer FFN with residual and LayerNorm."""

    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), Dropout(dropout), nn.Linear(hidden, dim))
        self.drop = Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.drop(self.net(x)))


def zero_padding(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Zero every position at or past its sequence's length, so padding values never leak."""
    return x.masked_fill(padding_mask(lengths, x.size(1)).unsqueeze(-1), 0.0)


def valid_conv1d(conv: nn.Conv1d, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """An unpadded Conv1d over a padded batch (B, L, D): padded frames are zeroed first (no
    padding value leaks in) and a sequence shorter than the kernel is zero-padded up to it.
    Returns (B, L', C) and each sequence's number of valid output steps."""
    k = conv.kernel_size[0]
    x = zero_padding(x, lengths)
    if x.size(1) < k:
        x = F.pad(x, (0, 0, 0, k - x.size(1)))
    h = conv(x.transpose(1, 2)).transpose(1, 2)
    return h, (lengths - k + 1).clamp(min=1, max=h.size(1))


def last_valid(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, D): the state at each sequence's last real position."""
    index = (lengths.clamp(min=1, max=x.size(1)) - 1).view(-1, 1, 1).expand(-1, 1, x.size(-1))
    return x.gather(1, index).squeeze(1)


class LSTMEncoder(nn.Module):
    """Single-layer LSTM over packed sequences; returns the final hidden state (B, hidden)."""

    def __init__(self, in_dim: int, hidden: int, dropout: float = 0.0, bidirectional: bool = False) -> None:
        super().__init__()
        self.lstm = nn.LSTM(in_dim, hidden, batch_first=True, bidirectional=bidirectional)
        self.drop = Dropout(dropout)
        self.out_dim = hidden * (2 if bidirectional else 1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(
            x, lengths.clamp(min=1, max=x.size(1)).cpu(), batch_first=True, enforce_sorted=False
        )
        _, (h, _) = self.lstm(packed)
        return self.drop(torch.cat(list(h), dim=-1))


class PooledSubNet(nn.Module):
    """Masked mean over time, then a small MLP: the utterance encoder of TFN, LMF and LF-DNN."""

    def __init__(self, in_dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(in_dim),
            Dropout(dropout),
            nn.Linear(in_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
        )
        self.out_dim = hidden

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.net(masked_mean(x, padding_mask(lengths, x.size(1))))


def utterance_encoders(dims: dict[str, int], hidden: dict[str, int], dropout: float, text_lstm: bool) -> nn.ModuleDict:
    """Per-modality encoders to one vector each; text may use an LSTM (as TFN/LMF do)."""
    return nn.ModuleDict(
        {
            m: LSTMEncoder(d, hidden[m], dropout)
            if (m == "text" and text_lstm)
            else PooledSubNet(d, hidden[m], dropout)
            for m, d in dims.items()
        }
    )
