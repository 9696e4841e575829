"""Multi-task sequential model: per-modality CNN + BiGRU + self-attention, bidirectional
cross-modal attention, task-specific fusion of six shared features, and three tasks
(sentiment score, polarity, intensity) weighted by alpha, beta, gamma.

Per modality: Conv1d (100 kernels of height 3, stride 1, no padding; shorter sequences
are zero-padded up to the kernel) -> BiGRU (hidden 100) -> multi-head self-attention
(residual + LayerNorm) -> FFN (residual + LayerNorm).
Cross-modal, for each pair (T,A), (T,V), (A,V): X attends to Y and Y attends to X; the two
results are concatenated along time and pass a self-attention block, then mean pooling.
The mean-pooled unimodal features are projected to the cross-modal width, giving
M + M(M-1)/2 shared features (six for three modalities). Each task scores them with
`softmax(W2 tanh(W1 SF_k + b1) + b2)` and reads its own weighted sum.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ray_msa.config import ModelConfig, TextConfig
from ray_msa.models.base import ModelOutput, MSAModel
from ray_msa.models.layers import AttentionBlock, FeedForwardBlock, masked_mean, padding_mask, valid_conv1d

TASKS = ("score", "polarity", "intensity")


class ModalityEncoder(nn.Module):
    """Conv1d -> BiGRU -> self-attention -> FFN over one modality's sequence."""

    def __init__(
        self,
        in_dim: int,
        heads: int,
        ffn: int,
        dropout: float,
        kernels: int = 100,
        kernel_size: int = 3,
        hidden: int = 100,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_dim, kernels, kernel_size, stride=1, padding=0)
        self.gru = nn.GRU(kernels, hidden, batch_first=True, bidirectional=True)
        self.self_attn = AttentionBlock(2 * hidden, heads, dropout)
        self.ffn = FeedForwardBlock(2 * hidden, ffn, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, out_lengths = valid_conv1d(self.conv, x, lengths)
        h = self.drop(F.relu(h))
        packed = pack_padded_sequence(h, out_lengths.cpu(), batch_first=True, enforce_sorted=False)
        h, _ = pad_packed_sequence(self.gru(packed)[0], batch_first=True, total_length=h.size(1))
        pad = padding_mask(out_lengths, h.size(1))
        h = self.ffn(self.self_attn(h, h, pad))
        return h, pad


class CrossModalBlock(nn.Module):
    """X->Y and Y->X attention, concatenated along time, then self-attention and pooling."""

    def __init__(self, dim: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.x_to_y = AttentionBlock(dim, heads, dropout)
        self.y_to_x = AttentionBlock(dim, heads, dropout)
        self.joint = AttentionBlock(dim, heads, dropout)
        self.ffn = FeedForwardBlock(dim, ffn, dropout)

    def forward(self, x: torch.Tensor, x_pad: torch.Tensor, y: torch.Tensor, y_pad: torch.Tensor) -> torch.Tensor:
        both = torch.cat([self.x_to_y(x, y, y_pad), self.y_to_x(y, x, x_pad)], dim=1)
        pad = torch.cat([x_pad, y_pad], dim=1)
        return masked_mean(self.ffn(self.joint(both, both, pad)), pad)


class TaskHead(nn.Module):
    """Task-specific attention over the shared features, then the task's output layer."""

    def __init__(self, dim: int, score_dim: int, dropout: float) -> None:
        super().__init__()
        self.scorer = nn.Sequential(nn.Linear(dim, score_dim), nn.Tanh(), nn.Linear(score_dim, 1))
        self.out = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(dim, 1)
        )

    def forward(self, shared: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weights = torch.softmax(self.scorer(shared).squeeze(-1), dim=-1)  # (B, K), sums to 1
        fused = torch.einsum("bk,bkd->bd", weights, shared)
        return self.out(fused).squeeze(-1), weights


@dataclass(frozen=True)
class MTLConfig(ModelConfig):
    heads: int = 4  # attention heads; must divide 2 x hidden
    ffn: int = 256  # feed-forward width after each attention block
    dropout: float = 0.2
    alpha: float = 1.0  # weight of the score regression loss
    beta: float = 0.5  # weight of the polarity loss
    gamma: float = 0.5  # weight of the intensity loss
    hidden: int = 100  # BiGRU hidden size per direction (the paper's 100)

    def __post_init__(self) -> None:
        self.at_least(1, "hidden", "ffn")
        self.divides("heads", 2 * self.hidden, "2 x hidden")
        self.fraction("dropout")
        self.at_least(0.0, "alpha", "beta", "gamma")
        self.require(
            self.alpha + self.beta + self.gamma > 0, "alpha", "alpha + beta + gamma is 0", "give one task a weight"
        )


class MultiTaskSequentialModel(MSAModel):
    def __init__(
        self,
        modalities: tuple[str, ...],
        feature_dims: dict[str, int],
        config: MTLConfig = MTLConfig(),
        text: TextConfig = TextConfig(),
        outputs: int = 1,
    ) -> None:
        super().__init__(modalities, feature_dims, text, outputs)
        c = config
        self.alpha, self.beta, self.gamma = c.alpha, c.beta, c.gamma
        dims = self.input_dims
        dim = 2 * c.hidden
        self.encoders = nn.ModuleDict(
            {m: ModalityEncoder(dims[m], c.heads, c.ffn, c.dropout, hidden=c.hidden) for m in modalities}
        )
        self.pairs = list(combinations(modalities, 2))
        self.cross = nn.ModuleDict({f"{a}_{b}": CrossModalBlock(dim, c.heads, c.ffn, c.dropout) for a, b in self.pairs})
        self.project = nn.ModuleDict({m: nn.Sequential(nn.Linear(dim, dim), nn.Tanh()) for m in modalities})
        self.heads = nn.ModuleDict({t: TaskHead(dim, dim // 2, c.dropout) for t in TASKS})

    def forward(self, batch: dict[str, torch.Tensor]) -> ModelOutput:
        encoded = {m: self.encoders[m](x, lengths) for m, (x, lengths) in self.sequences(batch).items()}
        shared = [self.project[m](masked_mean(*encoded[m])) for m in self.modalities]
        shared += [self.cross[f"{a}_{b}"](*encoded[a], *encoded[b]) for a, b in self.pairs]
        shared = torch.stack(shared, dim=1)  # (B, K, dim)
        outputs, weights = {}, {}
        for task, head in self.heads.items():
            outputs[task], weights[task] = head(shared)
        extras = {"polarity_logit": outputs["polarity"], "intensity": outputs["intensity"]}
        extras.update({f"weights_{t}": w for t, w in weights.items()})
        return ModelOutput(prediction=outputs["score"], extras=extras)

    def loss(self, output: ModelOutput, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        y = batch["labels"]
        parts = {
            "loss_score": F.l1_loss(output.prediction, y),
            "loss_polarity": F.binary_cross_entropy_with_logits(output.extras["polarity_logit"], (y >= 0).to(y.dtype)),
            "loss_intensity": F.l1_loss(output.extras["intensity"], y.abs()),
        }
        total = (
            self.alpha * parts["loss_score"] + self.beta * parts["loss_polarity"] + self.gamma * parts["loss_intensity"]
        ) / (self.alpha + self.beta + self.gamma)
        return total, {k: float(v.detach()) for k, v in parts.items()}
