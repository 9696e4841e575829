"""The K fold models of a cross-validation as one model (`--final ensemble`): each fold's model,
trained on its own K-1 parts and stopped at its own best epoch, predicts, and the predictions
(scores, or logits) are averaged. No final epoch count has to be guessed."""

from __future__ import annotations

import torch
from torch import nn

from ray_msa.models.base import ModelOutput, MSAModel


class FoldEnsemble(nn.Module):
    """Averages its members' predictions; reads the union of what they read."""

    def __init__(self, members: list[MSAModel]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one model")
        self.members = nn.ModuleList(members)

    def inputs(self) -> tuple[str, ...] | None:
        reads = [m.inputs() for m in self.members]
        if any(r is None for r in reads):
            return None
        return tuple(dict.fromkeys(name for r in reads for name in r))

    def forward(self, batch: dict[str, torch.Tensor]) -> ModelOutput:
        return ModelOutput(torch.stack([m(batch).prediction for m in self.members]).mean(0))
