"""Tensor Fusion Network (Zadeh et al., EMNLP 2017).

Each modality becomes one vector (text: LSTM; audio, vision: mean over time + MLP); a 1
is appended to each and their outer product holds every unimodal, bimodal and trimodal
interaction; a post-fusion MLP maps the flattened tensor to the score.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ray_msa.config import ModelConfig, TextConfig
from ray_msa.models.base import ModelOutput, MSAModel
from ray_msa.models.layers import Dropout, utterance_encoders


def with_one(z: torch.Tensor) -> torch.Tensor:
    return torch.cat([z, torch.ones(z.size(0), 1, dtype=z.dtype, device=z.device)], dim=-1)


@dataclass(frozen=True)
class TFNConfig(ModelConfig):
    text_hidden: int = 64  # text LSTM width
    av_hidden: int = 16  # audio and vision subnetwork width
    post_fusion: int = 64  # MLP width after the fusion tensor
    dropout: float = 0.2

    def __post_init__(self) -> None:
        self.at_least(1, "text_hidden", "av_hidden", "post_fusion")
        self.fraction("dropout")


class TensorFusionNetwork(MSAModel):
    def __init__(
        self,
        modalities: tuple[str, ...],
        feature_dims: dict[str, int],
        config: TFNConfig = TFNConfig(),
        text: TextConfig = TextConfig(),
        outputs: int = 1,
    ) -> None:
        super().__init__(modalities, feature_dims, text, outputs)
        text_hidden = config.text_hidden
        av_hidden = config.av_hidden
        post_fusion = config.post_fusion
        dropout = config.dropout
        hidden = {m: text_hidden if m == "text" else av_hidden for m in modalities}
        self.encoders = utterance_encoders(self.input_dims, hidden, dropout, text_lstm=True)
        fused = 1
        for m in modalities:
            fused *= hidden[m] + 1
        self.post = nn.Sequential(
            Dropout(dropout),
            nn.Linear(fused, post_fusion),
            nn.ReLU(),
            nn.Linear(post_fusion, post_fusion),
            nn.ReLU(),
            nn.Linear(post_fusion, outputs),
        )

    def forward(self, batch: dict[str, torch.Tensor]) -> ModelOutput:
        tensor = None
        for m, (x, lengths) in self.sequences(batch).items():
            z = with_one(self.encoders[m](x, lengths))
            tensor = z if tensor is None else torch.einsum("bi,bj->bij", tensor, z).flatten(1)
        return ModelOutput(prediction=self.to_prediction(self.post(tensor)))
