"""Late-fusion DNN: one pooled MLP per modality, a last linear layer W_i each,
concatenated, then an MLP to the score. `balance: true` adds B-fusion (gradient-balanced
modality weights, see `balance.py`) on the concatenation, as in the adaptive-weight-fusion
paper's table that adds it to existing models; the per-modality gradients g_i are logged
with it on or off (the paper's gradient curves)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ray_msa.config import ModelConfig, TextConfig
from ray_msa.models.balance import GradientBalancer, GradReader, dot_grad, gradients
from ray_msa.models.base import ModelOutput, MSAModel
from ray_msa.models.layers import Dropout, utterance_encoders


@dataclass(frozen=True)
class LateFusionConfig(ModelConfig):
    hidden: int = 64
    post_fusion: int = 64
    dropout: float = 0.2
    balance: bool = False  # B-fusion: gradient-balanced modality weights
    omega_lr: float = 0.05  # B-fusion's step size for omega

    def __post_init__(self) -> None:
        self.at_least(1, "hidden", "post_fusion")
        self.fraction("dropout")
        self.positive("omega_lr")


class LateFusionDNN(MSAModel):
    plot_prefixes = ("omega_", "grad_")

    def __init__(
        self,
        modalities: tuple[str, ...],
        feature_dims: dict[str, int],
        config: LateFusionConfig = LateFusionConfig(),
        text: TextConfig = TextConfig(),
        outputs: int = 1,
    ) -> None:
        super().__init__(modalities, feature_dims, text, outputs)
        hidden = config.hidden
        post_fusion = config.post_fusion
        dropout = config.dropout
        balance = config.balance
        omega_lr = config.omega_lr
        self.encoders = self.make_encoders(hidden, dropout)
        self.last = nn.ModuleDict({m: nn.Linear(self.encoders[m].out_dim, hidden) for m in modalities})
        self.balancer = GradientBalancer(modalities, omega_lr) if balance else None
        self.post = nn.Sequential(
            Dropout(dropout),
            nn.Linear(hidden * len(modalities), post_fusion),
            nn.ReLU(),
            nn.Linear(post_fusion, outputs),
        )

    def make_encoders(self, hidden: int, dropout: float) -> nn.ModuleDict:
        return utterance_encoders(self.input_dims, {m: hidden for m in self.modalities}, dropout, text_lstm=False)

    def forward(self, batch: dict[str, torch.Tensor]) -> ModelOutput:
        z = {m: self.last[m](self.encoders[m](x, lengths)) for m, (x, lengths) in self.sequences(batch).items()}
        parts = self.balancer.weigh(z) if self.balancer is not None else [z[m] for m in self.modalities]
        return ModelOutput(prediction=self.to_prediction(self.post(torch.cat(parts, dim=-1))))

    def after_backward(
        self, output: ModelOutput, batch: dict[str, torch.Tensor], grad: GradReader = dot_grad
    ) -> dict[str, float]:
        """B-fusion's step when balancing; the per-modality gradients g_i are logged either way."""
        if self.balancer is not None:
            return self.balancer.step(dict(self.last.items()), grad)
        return gradients(dict(self.last.items()), self.modalities, grad)
