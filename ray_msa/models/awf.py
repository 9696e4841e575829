"""Adaptive weight fusion: gradient-balanced B-fusion plus attention A-fusion.

Unimodal nets: the text LM's token states (frozen features or the fine-tuned LM),
mean-pooled, then a linear layer W_T; a single-layer LSTM for audio and for vision, each
followed by a last linear layer W_A, W_V; all three give vectors of size d.
- B-fusion: `Z_GB = [w_T Z_T, w_A Z_A, w_V Z_V]`, omega balanced from gradients after
  every backward pass (see `balance.py`); the task loss never updates omega.
- A-fusion: `h = ReLU(avgpool([Z_T, Z_A, Z_V]) W1)`, `alpha = sigmoid(h W2)`,
  `Z_ATT = [alpha_T Z_T, alpha_A Z_A, alpha_V Z_V]`, learned from the task loss only.
- Output from `Z = (Z_GB + Z_ATT) / 2`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ray_msa.config import ModelConfig, TextConfig
from ray_msa.models.balance import SHORT, GradientBalancer
from ray_msa.models.base import ModelOutput, MSAModel
from ray_msa.models.layers import LSTMEncoder, masked_mean, padding_mask


@dataclass(frozen=True)
class AWFConfig(ModelConfig):
    dim: int = 64  # width d of each modality's vector Z_i
    lstm_hidden: int = 64
    att_hidden: int = 32  # A-fusion's hidden width
    dropout: float = 0.2
    omega_lr: float = 0.05  # B-fusion's step size for omega

    def __post_init__(self) -> None:
        self.at_least(1, "dim", "lstm_hidden", "att_hidden")
        self.fraction("dropout")
        self.positive("omega_lr")


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
        dim = config.dim
        lstm_hidden = config.lstm_hidden
        att_hidden = config.att_hidden
        dropout = config.dropout
        omega_lr = config.omega_lr
        self.lstms = nn.ModuleDict(
            {m: LSTMEncoder(d, lstm_hidden, dropout) for m, d in self.input_dims.items() if m != "text"}
        )
        self.last = nn.ModuleDict(
            {m: nn.Linear(self.input_dims[m] if m == "text" else lstm_hidden, dim) for m in modalities}
        )
        self.balancer = GradientBalancer(modalities, omega_lr)
        self.attention = nn.Sequential(
            nn.Linear(dim, att_hidden), nn.ReLU(), nn.Linear(att_hidden, len(modalities)), nn.Sigmoid()
        )
        self.head = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(dim * len(modalities), dim), nn.ReLU(), nn.Linear(dim, outputs)
        )

    def unimodal(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        z = {}
        for m, (x, lengths) in self.sequences(batch).items():
            pooled = masked_mean(x, padding_mask(lengths, x.size(1))) if m == "text" else self.lstms[m](x, lengths)
            z[m] = self.last[m](pooled)
        return z

    def forward(self, batch: dict[str, torch.Tensor]) -> ModelOutput:
        z = self.unimodal(batch)
        alpha = self.attention(torch.stack([z[m] for m in self.modalities], 1).mean(1))  # (B, M)
        z_gb = torch.cat(self.balancer.weigh(z), dim=-1)
        z_att = torch.cat([alpha[:, i : i + 1] * z[m] for i, m in enumerate(self.modalities)], dim=-1)
        extras = {f"alpha_{SHORT[m]}": alpha[:, i] for i, m in enumerate(self.modalities)}
        return ModelOutput(prediction=self.to_prediction(self.head((z_gb + z_att) / 2)), extras=extras)

    def after_backward(self, output: ModelOutput, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        logged = self.balancer.step(dict(self.last.items()))
        logged.update({k: float(v.detach().mean()) for k, v in output.extras.items()})
        return logged
