"""Adaptive weight fusion: gradient-balanced B-fusion plus attention A-fusion (paper 001).

Unimodal nets: the text LM's token states (frozen features or the fine-tuned LM),
mean-pooled, then a linear layer W_T; a single-layer LSTM for audio and for vision, each
followed by a last linear layer W_A, W_V; all three give vectors Z_i of size d.
- B-fusion: `Z_GB = [w_T Z_T, w_A Z_A, w_V Z_V]`, omega balanced from gradients after
  every backward pass (see `balance.py`); the task loss never updates omega.
- A-fusion, the paper's Eq. 11-13 (`attention: paper`): each Z_i is average-pooled to one
  number, `h = ReLU([avg Z_T, avg Z_A, avg Z_V] W1)`, `alpha = sigmoid(h W2)`, W1 and W2 of
  size M x M; `Z_ATT = [alpha_T Z_T, alpha_A Z_A, alpha_V Z_V]`. `attention: vector` is the
  earlier form of this code (the mean of the Z_i, a d-vector, through Linear(d, att_hidden)
  and Linear(att_hidden, M)), kept as a named option.
- The paper lets alpha decide each modality's contribution without changing the unimodal
  learning rates, and A-fusion learn from the task loss alone: with `afusion_detach` (the
  default) A-fusion reads detached Z_i, so the gradient reaching W_T/W_A/W_V is B-fusion's.
- Output from `Z = (Z_GB + Z_ATT) / 2`.
Ablations (001 Tables 8-10): `bfusion: false` (the unweighted concatenation, omega stays 1;
g_i still logged), `afusion: false` (output from Z_GB alone), `afusion_frozen: true`
(A-fusion's parameters not trained).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ray_msa.config import ModelConfig, TextConfig
from ray_msa.models.balance import SHORT, GradientBalancer, GradReader, dot_grad, gradients
from ray_msa.models.base import ModelOutput, MSAModel
from ray_msa.models.layers import Dropout, LSTMEncoder, masked_mean, padding_mask


@dataclass(frozen=True)
class AWFConfig(ModelConfig):
    dim: int = 64  # width d of each modality's vector Z_i
    lstm_hidden: int = 64
    post_fusion: int = 64  # width of the layer after fusion
    att_hidden: int = 32  # A-fusion's hidden width (attention: vector only; the paper's is M x M)
    dropout: float = 0.2
    omega_lr: float = 0.05  # B-fusion's step size for omega
    attention: Literal["paper", "vector"] = "paper"
    afusion_detach: bool = True  # A-fusion reads detached Z_i: it leaves the gradient on W_i to B-fusion
    bfusion: bool = True
    afusion: bool = True
    afusion_frozen: bool = False

    def __post_init__(self) -> None:
        self.at_least(1, "dim", "lstm_hidden", "att_hidden", "post_fusion")
        self.fraction("dropout")
        self.positive("omega_lr")
        self.require(self.bfusion or self.afusion, "afusion", "both fusions are off", "keep bfusion or afusion on")


class AdaptiveWeightFusion(MSAModel):
    plot_prefixes = ("omega_", "grad_", "alpha_")

    def __init__(
        self,
        modalities: tuple[str, ...],
        feature_dims: dict[str, int],
        config: AWFConfig = AWFConfig(),
        text: TextConfig = TextConfig(),
        outputs: int = 1,
    ) -> None:
        super().__init__(modalities, feature_dims, text, outputs)
        self.config = config
        dim, lstm_hidden, dropout = config.dim, config.lstm_hidden, config.dropout
        count = len(modalities)
        self.lstms = nn.ModuleDict(
            {m: LSTMEncoder(d, lstm_hidden, dropout) for m, d in self.input_dims.items() if m != "text"}
        )
        self.last = nn.ModuleDict(
            {m: nn.Linear(self.input_dims[m] if m == "text" else lstm_hidden, dim) for m in modalities}
        )
        self.balancer = GradientBalancer(modalities, config.omega_lr)
        hidden = count if config.attention == "paper" else config.att_hidden
        self.attention = nn.Sequential(
            nn.Linear(count if config.attention == "paper" else dim, hidden),  # W1
            nn.ReLU(),
            nn.Linear(hidden, count),  # W2
            nn.Sigmoid(),
        )
        if config.afusion_frozen:
            self.attention.requires_grad_(False)
        self.head = nn.Sequential(
            Dropout(dropout),
            nn.Linear(dim * count, config.post_fusion),
            nn.ReLU(),
            nn.Linear(config.post_fusion, outputs),
        )

    def unimodal(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        z = {}
        for m, (x, lengths) in self.sequences(batch).items():
            pooled = masked_mean(x, padding_mask(lengths, x.size(1))) if m == "text" else self.lstms[m](x, lengths)
            z[m] = self.last[m](pooled)
        return z

    def attention_input(self, z: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, M) average-pooled Z_i (paper), or the (B, d) mean of the Z_i (vector)."""
        stacked = torch.stack([z[m] for m in self.modalities], 1)  # (B, M, d)
        return stacked.mean(-1) if self.config.attention == "paper" else stacked.mean(1)

    def forward(self, batch: dict[str, torch.Tensor]) -> ModelOutput:
        c = self.config
        z = self.unimodal(batch)
        weighted = self.balancer.weigh(z) if c.bfusion else [z[m] for m in self.modalities]  # without: omega = 1
        parts, extras = [torch.cat(weighted, dim=-1)], {}
        if c.afusion:
            seen = {m: v.detach() for m, v in z.items()} if c.afusion_detach else z
            alpha = self.attention(self.attention_input(seen))  # (B, M)
            parts.append(torch.cat([alpha[:, i : i + 1] * seen[m] for i, m in enumerate(self.modalities)], dim=-1))
            extras = {f"alpha_{SHORT[m]}": alpha[:, i] for i, m in enumerate(self.modalities)}
        fused = sum(parts) / len(parts)
        return ModelOutput(prediction=self.to_prediction(self.head(fused)), extras=extras)

    def after_backward(
        self, output: ModelOutput, batch: dict[str, torch.Tensor], grad: GradReader = dot_grad
    ) -> dict[str, float]:
        """B-fusion's step (or, without it, the g_i alone) and the batch's mean alpha."""
        layers = dict(self.last.items())
        logged = self.balancer.step(layers, grad) if self.config.bfusion else gradients(layers, self.modalities, grad)
        logged.update({k: float(v.detach().mean()) for k, v in output.extras.items()})
        return logged
