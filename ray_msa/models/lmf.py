"""Low-rank Multimodal Fusion (Liu et al., ACL 2018).

TFN's outer-product fusion computed without the tensor: each modality's vector (with an
appended 1) is projected by `rank` modality-specific factors; the projections are
multiplied element-wise across modalities and summed over the rank with learned weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ray_msa.config import ModelConfig, TextConfig
from ray_msa.models.base import ModelOutput, MSAModel
from ray_msa.models.layers import Dropout, utterance_encoders
from ray_msa.models.tfn import with_one


@dataclass(frozen=True)
class LMFConfig(ModelConfig):
    text_hidden: int = 64
    av_hidden: int = 16
    rank: int = 4  # modality-specific factors per modality
    fusion_dim: int = 32  # width of the fused vector
    dropout: float = 0.2

    def __post_init__(self) -> None:
        self.at_least(1, "text_hidden", "av_hidden", "rank", "fusion_dim")
        self.fraction("dropout")


class LowRankMultimodalFusion(MSAModel):
    def __init__(
        self,
        modalities: tuple[str, ...],
        feature_dims: dict[str, int],
        config: LMFConfig = LMFConfig(),
        text: TextConfig = TextConfig(),
        outputs: int = 1,
    ) -> None:
        super().__init__(modalities, feature_dims, text, outputs)
        text_hidden = config.text_hidden
        av_hidden = config.av_hidden
        rank = config.rank
        fusion_dim = config.fusion_dim
        dropout = config.dropout
        hidden = {m: text_hidden if m == "text" else av_hidden for m in modalities}
        self.encoders = utterance_encoders(self.input_dims, hidden, dropout, text_lstm=True)
        self.factors = nn.ParameterDict(
            {m: nn.Parameter(nn.init.xavier_normal_(torch.empty(rank, hidden[m] + 1, fusion_dim))) for m in modalities}
        )
        self.rank_weights = nn.Parameter(nn.init.xavier_normal_(torch.empty(1, rank)))
        self.rank_bias = nn.Parameter(torch.zeros(1, fusion_dim))
        self.out = nn.Sequential(Dropout(dropout), nn.Linear(fusion_dim, outputs))

    def forward(self, batch: dict[str, torch.Tensor]) -> ModelOutput:
        product = None
        for m, (x, lengths) in self.sequences(batch).items():
            z = torch.einsum(
                "bi,rio->rbo", with_one(self.encoders[m](x, lengths)), self.factors[m]
            )  # (rank, B, fusion_dim)
            product = z if product is None else product * z
        fused = torch.einsum("r,rbo->bo", self.rank_weights.squeeze(0), product) + self.rank_bias
        return ModelOutput(prediction=self.to_prediction(self.out(fused)))
