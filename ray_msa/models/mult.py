"""Multimodal Transformer (Tsai et al., ACL 2019) for unaligned sequences.

Each modality is projected by a temporal Conv1d to width d and given sinusoidal
positions. For every target modality X and source Y != X, a crossmodal transformer lets
X's sequence attend to Y's (six directions for three modalities); the streams into X are
concatenated and pass a self-attention transformer, whose state at X's last real step
represents X. The three representations are concatenated, passed through a residual
projection and a linear output.

Differences from the reference code, for speed and correctness on padded batches:
every attention gets a key padding mask (the reference attends to padding), padded
frames are zeroed before the convolution (no padding value can leak in), batches are
trimmed to their longest sequence (and the loop batches similar lengths together), and
attention runs through PyTorch's fused scaled-dot-product kernel in batch-first layout
(no transposes per layer). On CPU that kernel is a flash-attention kernel only without
attention-weight dropout; with dropout it materialises the scores, so queries are then
processed in blocks small enough for the allocator to reuse (see `attention`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ray_msa.config import ModelConfig, TextConfig
from ray_msa.models.base import ModelOutput, MSAModel
from ray_msa.models.layers import Dropout, dropout_keep_mask, last_valid, padding_mask, valid_conv1d


def sinusoidal_positions(length: int, dim: int, device: torch.device) -> torch.Tensor:
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq[: dim // 2])
    return table


CHUNK_BYTES = 16 * 2**20  # keep each materialised score block under glibc's mmap threshold


def _dropout_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor, p: float
) -> torch.Tensor:
    weights = torch.softmax(
        (q @ k.transpose(-2, -1)).mul_(q.size(-1) ** -0.5).masked_fill_(~allowed, float("-inf")), dim=-1
    )
    return (weights * dropout_keep_mask(weights.shape, p, weights.device)).div_(1.0 - p) @ v


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor, dropout: float) -> torch.Tensor:
    """Fused attention without attention dropout (a flash kernel on CPU). With dropout the
    scores must be materialised: queries are then processed in blocks that stay in the
    allocator's reusable heap (larger ones are mmapped and page-faulted on every call), and
    on CPU the dropout mask comes from `dropout_keep_mask` instead of `bernoulli_`."""
    if dropout == 0.0:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    if q.is_cuda:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout)
    rows = q.size(0) * q.size(1) * k.size(2) * 4
    block = max(1, CHUNK_BYTES // rows)
    return torch.cat(
        [_dropout_attention(q[:, :, i : i + block], k, v, allowed, dropout) for i in range(0, q.size(2), block)], dim=2
    )


class TransformerLayer(nn.Module):
    """Pre-LayerNorm layer: (cross-)attention then ReLU FFN, each with a residual."""

    def __init__(
        self, dim: int, heads: int, attn_dropout: float, relu_dropout: float, res_dropout: float, cross: bool
    ) -> None:
        super().__init__()
        self.heads, self.attn_dropout = heads, attn_dropout
        self.norm_q, self.norm_ffn = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim) if cross else None
        self.q, self.kv, self.o = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim), nn.Linear(dim, dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 4 * dim), nn.ReLU(), Dropout(relu_dropout), nn.Linear(4 * dim, dim))
        self.res_drop = Dropout(res_dropout)

    def forward(self, x: torch.Tensor, source: torch.Tensor | None, allowed: torch.Tensor) -> torch.Tensor:
        """x (B, Lq, d) attends to source (B, Lk, d) (itself when None); allowed (B, 1, 1, Lk) bool."""
        b, lq, d = x.shape
        q_in = self.norm_q(x)
        kv_in = q_in if source is None else self.norm_kv(source)
        q = self.q(q_in).view(b, lq, self.heads, -1).transpose(1, 2)
        k, v = self.kv(kv_in).view(b, kv_in.size(1), 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        attn = attention(q, k, v, allowed, self.attn_dropout if self.training else 0.0)
        x = x + self.res_drop(self.o(attn.transpose(1, 2).reshape(b, lq, d)))
        return x + self.res_drop(self.ffn(self.norm_ffn(x)))


class Transformer(nn.Module):
    def __init__(
        self,
        dim: int,
        heads: int,
        layers: int,
        attn_dropout: float,
        relu_dropout: float,
        res_dropout: float,
        embed_dropout: float,
        cross: bool,
    ) -> None:
        super().__init__()
        self.scale = math.sqrt(dim)
        self.layers = nn.ModuleList(
            [TransformerLayer(dim, heads, attn_dropout, relu_dropout, res_dropout, cross) for _ in range(layers)]
        )
        self.drop = Dropout(embed_dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, source: torch.Tensor | None, source_pad: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.scale * x + sinusoidal_positions(x.size(1), x.size(2), x.device))
        if source is not None:
            source = self.drop(
                self.scale * source + sinusoidal_positions(source.size(1), source.size(2), source.device)
            )
        allowed = (~source_pad)[:, None, None, :]
        for layer in self.layers:
            x = layer(x, source, allowed)
        return self.norm(x)


@dataclass(frozen=True)
class MulTConfig(ModelConfig):
    dim: int = 40  # width d of every stream; heads must divide it
    heads: int = 10
    layers: int = 4  # crossmodal transformer depth (self-attention memory: at least 3)
    kernel_text: int = 1  # temporal Conv1d kernel of each modality's projection
    kernel_audio: int = 1
    kernel_vision: int = 1
    attn_dropout: float = 0.1
    attn_dropout_audio: float | None = None  # None: attn_dropout
    attn_dropout_vision: float | None = None
    relu_dropout: float = 0.1
    res_dropout: float = 0.1
    embed_dropout: float = 0.2
    out_dropout: float = 0.1

    def __post_init__(self) -> None:
        self.at_least(1, "dim", "layers", "kernel_text", "kernel_audio", "kernel_vision")
        self.divides("heads", self.dim, "dim")
        self.fraction("attn_dropout", "relu_dropout", "res_dropout", "embed_dropout", "out_dropout")
        self.fraction(*(k for k in ("attn_dropout_audio", "attn_dropout_vision") if getattr(self, k) is not None))


class MultimodalTransformer(MSAModel):
    def __init__(
        self,
        modalities: tuple[str, ...],
        feature_dims: dict[str, int],
        config: MulTConfig = MulTConfig(),
        text: TextConfig = TextConfig(),
        outputs: int = 1,
    ) -> None:
        super().__init__(modalities, feature_dims, text, outputs)
        c = config
        dim, heads, layers, attn_dropout = c.dim, c.heads, c.layers, c.attn_dropout
        attn_dropout_audio, attn_dropout_vision = c.attn_dropout_audio, c.attn_dropout_vision
        relu_dropout, res_dropout, embed_dropout = c.relu_dropout, c.res_dropout, c.embed_dropout
        kernel_text, kernel_audio, kernel_vision, out_dropout = (
            c.kernel_text,
            c.kernel_audio,
            c.kernel_vision,
            c.out_dropout,
        )
        kernels = {"text": kernel_text, "audio": kernel_audio, "vision": kernel_vision}
        self.project = nn.ModuleDict(
            {m: nn.Conv1d(self.input_dims[m], dim, kernels[m], padding=0, bias=False) for m in modalities}
        )
        # As in the reference code, a crossmodal transformer's attention dropout is its source's.
        source_dropout = {
            "text": attn_dropout,
            "audio": attn_dropout if attn_dropout_audio is None else attn_dropout_audio,
            "vision": attn_dropout if attn_dropout_vision is None else attn_dropout_vision,
        }
        rest = (relu_dropout, res_dropout, embed_dropout)
        self.cross = nn.ModuleDict(
            {
                f"{y}_to_{x}": Transformer(dim, heads, layers, source_dropout[y], *rest, cross=True)
                for x in modalities
                for y in modalities
                if y != x
            }
        )
        stream = dim * max(1, len(modalities) - 1)
        self.memory = nn.ModuleDict(
            {x: Transformer(stream, heads, max(layers, 3), attn_dropout, *rest, cross=False) for x in modalities}
        )
        total = stream * len(modalities)
        self.proj1, self.proj2 = nn.Linear(total, total), nn.Linear(total, total)
        self.out_drop = Dropout(out_dropout)
        self.out = nn.Linear(total, outputs)

    def forward(self, batch: dict[str, torch.Tensor]) -> ModelOutput:
        seq, pad, lengths = {}, {}, {}
        for m, (x, n) in self.sequences(batch).items():
            seq[m], lengths[m] = valid_conv1d(self.project[m], x, n)
            pad[m] = padding_mask(lengths[m], seq[m].size(1))
        pooled = []
        for x in self.modalities:
            sources = [y for y in self.modalities if y != x]
            if sources:
                streams = torch.cat([self.cross[f"{y}_to_{x}"](seq[x], seq[y], pad[y]) for y in sources], dim=-1)
            else:
                streams = seq[x]
            h = self.memory[x](streams, None, pad[x])
            pooled.append(last_valid(h, lengths[x]))
        h = torch.cat(pooled, dim=-1)
        h = h + self.proj2(self.out_drop(F.relu(self.proj1(h))))
        return ModelOutput(prediction=self.to_prediction(self.out(h)))
