"""Late-fusion LSTM: one LSTM per modality over its whole sequence, final states
concatenated, then an MLP to the score."""

from __future__ import annotations

from torch import nn

from ray_msa.models.layers import LSTMEncoder
from ray_msa.models.lf_dnn import LateFusionDNN


class LateFusionLSTM(LateFusionDNN):
    def make_encoders(self, hidden: int, dropout: float) -> nn.ModuleDict:
        return nn.ModuleDict({m: LSTMEncoder(d, hidden, dropout) for m, d in self.input_dims.items()})
