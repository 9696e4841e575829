"""Multi-task sequential model: per-modality CNN + BiGRU + self-attention, bidirectional
cross-modal attention, task-specific fusion of six shared features, and three tasks
(sentiment score, polarity, intensity) weighted by alpha, beta, gamma.

Per modality: Conv1d (100 kernels of height 3, stride 1, no padding; shorter sequences
are zero-padded up to the kernel) -> BiGRU (hidden 100) -> multi-head self-attention
(residual + LayerNorm) -> FFN (residual + LayerNorm).
Cross-modal, for each pair (T,A), (T,V), (A,V) (Eq. 4-5): X attends to Y and Y attends to X,
each direction followed by its own FFN (residual + LayerNorm); the two results are
concatenated along time and pass a self-attention block and its FFN, then mean pooling.
The mean-pooled unimodal features are projected to the cross-modal width, giving
M + M(M-1)/2 shared features (six for three modalities). Each task scores them with
`softmax(W2 tanh(W1 SF_k + b1) + b2)` and reads its own weighted sum; the loss is
`(alpha L_score + beta L_pol + gamma L_int) / (alpha + beta + gamma)` over the tasks trained.

The ablations of the paper's Table 5 are switches of `MTLConfig` (defaults: the full model);
a switched-off part is not built, so it has no parameters, no output and no loss term.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ray_msa.config import ConfigError, ModelConfig, TextConfig
from ray_msa.models.balance import SHORT
from ray_msa.models.base import ModelOutput, MSAModel
from ray_msa.models.layers import (
    AttentionBlock,
    Dropout,
    FeedForwardBlock,
    masked_mean,
    padding_mask,
    valid_conv1d,
    zero_padding,
)

TASKS = ("score", "polarity", "intensity")


class ModalityEncoder(nn.Module):
    """Conv1d -> BiGRU -> self-attention -> FFN over one modality's sequence; without the CNN the
    BiGRU reads the input, without the BiGRU a Linear maps to its width, so the rest is unchanged."""

    def __init__(
        self,
        in_dim: int,
        heads: int,
        ffn: int,
        dropout: float,
        kernels: int = 100,
        kernel_size: int = 3,
        hidden: int = 100,
        cnn: bool = True,
        bigru: bool = True,
        attention: bool = True,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_dim, kernels, kernel_size, stride=1, padding=0) if cnn else None
        width = kernels if cnn else in_dim
        self.gru = nn.GRU(width, hidden, batch_first=True, bidirectional=True) if bigru else None
        self.linear = None if bigru else nn.Linear(width, 2 * hidden)
        self.self_attn = AttentionBlock(2 * hidden, heads, dropout) if attention else None
        self.ffn = FeedForwardBlock(2 * hidden, ffn, dropout) if attention else None
        self.drop = Dropout(dropout)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.conv is not None:
            h, lengths = valid_conv1d(self.conv, x, lengths)
            h = self.drop(F.relu(h))
        else:
            h, lengths = x, lengths.clamp(min=1, max=x.size(1))
        if self.gru is not None:
            packed = pack_padded_sequence(h, lengths.cpu(), batch_first=True, enforce_sorted=False)
            h, _ = pad_packed_sequence(self.gru(packed)[0], batch_first=True, total_length=h.size(1))
        else:
            h = zero_padding(self.linear(h), lengths)  # padded frames stay zero, as the GRU leaves them
        pad = padding_mask(lengths, h.size(1))
        if self.self_attn is not None:
            h = self.ffn(self.self_attn(h, h, pad))
        return h, pad


class CrossModalBlock(nn.Module):
    """X->Y and Y->X attention, each with its own FFN (Eq. 4-5), concatenated along time, then
    self-attention with its FFN (skipped without cross-modal self-attention) and pooling."""

    def __init__(self, dim: int, heads: int, ffn: int, dropout: float, joint: bool = True) -> None:
        super().__init__()
        self.x_to_y = AttentionBlock(dim, heads, dropout)
        self.x_to_y_ffn = FeedForwardBlock(dim, ffn, dropout)
        self.y_to_x = AttentionBlock(dim, heads, dropout)
        self.y_to_x_ffn = FeedForwardBlock(dim, ffn, dropout)
        self.joint = AttentionBlock(dim, heads, dropout) if joint else None
        self.joint_ffn = FeedForwardBlock(dim, ffn, dropout) if joint else None

    def forward(self, x: torch.Tensor, x_pad: torch.Tensor, y: torch.Tensor, y_pad: torch.Tensor) -> torch.Tensor:
        x_y = self.x_to_y_ffn(self.x_to_y(x, y, y_pad))  # X's positions, attending to Y
        y_x = self.y_to_x_ffn(self.y_to_x(y, x, x_pad))
        both, pad = torch.cat([x_y, y_x], dim=1), torch.cat([x_pad, y_pad], dim=1)
        if self.joint is not None:
            both = self.joint_ffn(self.joint(both, both, pad))
        return masked_mean(both, pad)


class TaskHead(nn.Module):
    """Task-specific attention over the shared features, then the task's output layer."""

    def __init__(self, dim: int, score_dim: int, dropout: float) -> None:
        super().__init__()
        self.scorer = nn.Sequential(nn.Linear(dim, score_dim), nn.Tanh(), nn.Linear(score_dim, 1))
        self.out = nn.Sequential(Dropout(dropout), nn.Linear(dim, dim), nn.ReLU(), Dropout(dropout), nn.Linear(dim, 1))

    def forward(self, shared: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weights = torch.softmax(self.scorer(shared).squeeze(-1), dim=-1)  # (B, K), sums to 1
        fused = torch.einsum("bk,bkd->bd", weights, shared)
        return self.out(fused).squeeze(-1), weights


@dataclass(frozen=True)
class MTLConfig(ModelConfig):
    heads: int = 4  # attention heads; must divide 2 x hidden
    ffn: int = 256  # feed-forward width after each attention block
    dropout: float = 0.2
    alpha: float = 1.0  # weight of the score regression loss (the paper's 1)
    beta: float = 1.0  # weight of the polarity loss (the paper's 1)
    gamma: float = 1.0  # weight of the intensity loss (the paper's 1)
    hidden: int = 100  # BiGRU hidden size per direction (the paper's 100)
    text_length: int | None = None  # read only the first N text positions (the paper: 20 MOSI, 40 MOSEI)
    # ablations (paper Table 5); the defaults are the full model
    polarity_task: bool = True  # off: no polarity head, loss term or metric
    intensity_task: bool = True  # off: no intensity head, loss term or metric
    unimodal_shared: bool = True  # off: only the M(M-1)/2 cross-modal shared features are scored
    cross_shared: bool = True  # off: only the M unimodal shared features are scored
    cnn: bool = True  # off: the BiGRU reads the input directly
    bigru: bool = True  # off: a Linear from the CNN width to 2 x hidden
    unimodal_attention: bool = True  # off: no per-modality self-attention and its FFN
    cross_attention: bool = True  # off: no self-attention over the concatenated directions; they are pooled

    def __post_init__(self) -> None:
        self.at_least(1, "hidden", "ffn")
        self.divides("heads", 2 * self.hidden, "2 x hidden")
        self.fraction("dropout")
        self.at_least(0.0, "alpha", "beta", "gamma")
        if self.text_length is not None:
            self.at_least(1, "text_length")
        self.require(
            self.unimodal_shared or self.cross_shared,
            "cross_shared",
            "unimodal_shared and cross_shared are both off, so no shared feature is left",
            "turn one of them on",
        )
        weight = self.alpha + self.beta * self.polarity_task + self.gamma * self.intensity_task
        self.require(weight > 0, "alpha", "the trained tasks' weights sum to 0", "give one trained task a weight")


class MultiTaskSequentialModel(MSAModel):
    plot_prefixes = tuple(f"sfw_{task}_" for task in TASKS)  # each task's shared-feature weights, per epoch

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
        self.tasks = tuple(t for t, on in zip(TASKS, (True, c.polarity_task, c.intensity_task)) if on)
        self.task_weights = {t: w for t, w in zip(TASKS, (c.alpha, c.beta, c.gamma)) if t in self.tasks}
        self.text_length = c.text_length
        dims = self.input_dims
        dim = 2 * c.hidden
        self.encoders = nn.ModuleDict(
            {
                m: ModalityEncoder(
                    dims[m],
                    c.heads,
                    c.ffn,
                    c.dropout,
                    hidden=c.hidden,
                    cnn=c.cnn,
                    bigru=c.bigru,
                    attention=c.unimodal_attention,
                )
                for m in modalities
            }
        )
        self.unimodal = modalities if c.unimodal_shared else ()
        self.pairs = list(combinations(modalities, 2)) if c.cross_shared else []
        self.features = tuple(SHORT.get(m, m) for m in self.unimodal) + tuple(
            SHORT.get(a, a) + SHORT.get(b, b) for a, b in self.pairs
        )  # names of the shared features, in the order they are scored: T, A, V, TA, TV, AV
        if not self.features:
            raise ConfigError(
                "model.unimodal_shared",
                f"with the one modality {modalities[0]} there are no cross-modal shared features",
                "keep unimodal_shared on",
            )
        self.cross = nn.ModuleDict(
            {f"{a}_{b}": CrossModalBlock(dim, c.heads, c.ffn, c.dropout, c.cross_attention) for a, b in self.pairs}
        )
        self.project = nn.ModuleDict({m: nn.Sequential(nn.Linear(dim, dim), nn.Tanh()) for m in self.unimodal})
        self.heads = nn.ModuleDict({t: TaskHead(dim, dim // 2, c.dropout) for t in self.tasks})

    def sequences(self, batch: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """As the base class, with the text cut to its first `text_length` positions (features or token ids)."""
        if self.text_length is not None and "text" in self.modalities:
            n, batch = self.text_length, dict(batch)
            for key in ("text", "text_ids", "text_mask"):
                if key in batch:
                    batch[key] = batch[key][:, :n]
            batch["text_lengths"] = batch["text_lengths"].clamp(max=n)
        return super().sequences(batch)

    def forward(self, batch: dict[str, torch.Tensor]) -> ModelOutput:
        encoded = {m: self.encoders[m](x, lengths) for m, (x, lengths) in self.sequences(batch).items()}
        shared = [self.project[m](masked_mean(*encoded[m])) for m in self.unimodal]
        shared += [self.cross[f"{a}_{b}"](*encoded[a], *encoded[b]) for a, b in self.pairs]
        shared = torch.stack(shared, dim=1)  # (B, K, dim)
        outputs, weights = {}, {}
        for task, head in self.heads.items():
            outputs[task], weights[task] = head(shared)
        extras = {f"weights_{t}": w for t, w in weights.items()}
        if "polarity" in outputs:
            extras["polarity_logit"] = outputs["polarity"]
        if "intensity" in outputs:
            extras["intensity"] = outputs["intensity"]
        return ModelOutput(prediction=outputs["score"], extras=extras)

    def loss(self, output: ModelOutput, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """The weighted mean of the trained tasks' losses; a task that is off has no term at all."""
        y = batch["labels"]
        parts = {"score": F.l1_loss(output.prediction, y)}
        if "polarity" in self.tasks:
            target = (y >= 0).to(y.dtype)
            parts["polarity"] = F.binary_cross_entropy_with_logits(output.extras["polarity_logit"], target)
        if "intensity" in self.tasks:
            parts["intensity"] = F.l1_loss(output.extras["intensity"], y.abs())
        total = sum(self.task_weights[t] * v for t, v in parts.items()) / sum(self.task_weights.values())
        return total, {f"loss_{t}": float(v.detach()) for t, v in parts.items()}

    @torch.no_grad()
    def after_backward(
        self,
        output: ModelOutput,
        batch: dict[str, torch.Tensor],
        grad: Callable[[nn.Parameter], torch.Tensor | None] | None = None,
    ) -> dict[str, float]:
        """Each task's batch-mean weight of each shared feature, logged per epoch (`sfw_<task>_<feature>`);
        the weights are outputs, so the engine's gradient reader `grad` is not needed."""
        means = torch.stack([output.extras[f"weights_{t}"].detach().float().mean(0) for t in self.tasks]).tolist()
        return {f"sfw_{t}_{f}": means[i][k] for i, t in enumerate(self.tasks) for k, f in enumerate(self.features)}

    def validation_metrics(self, extras: dict[str, np.ndarray], labels: np.ndarray) -> dict[str, float]:
        """The auxiliary tasks scored on their own targets: polarity `y >= 0`, intensity `|y|`."""
        y = np.asarray(labels, dtype=np.float64).reshape(-1)
        out = {}
        if "polarity" in self.tasks and "polarity_logit" in extras:
            out["Polarity_Acc"] = float(np.mean((np.asarray(extras["polarity_logit"]).reshape(-1) > 0) == (y >= 0)))
        if "intensity" in self.tasks and "intensity" in extras:
            out["Intensity_MAE"] = float(np.mean(np.abs(np.asarray(extras["intensity"]).reshape(-1) - np.abs(y))))
        return out

    def fold_plots(self, extras: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
        """Paper Fig. 7: per task, the distribution over validation samples of each shared feature's weight."""
        return {
            f"shared_feature_weights_{t}.png": {f: extras[f"weights_{t}"][:, k] for k, f in enumerate(self.features)}
            for t in self.tasks
            if f"weights_{t}" in extras
        }
