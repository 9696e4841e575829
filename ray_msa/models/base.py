"""The one model interface the training loop knows.

A model takes a batch (a dict of tensors: `text` features or `text_ids`/`text_mask`,
`audio`, `vision`, each with `<modality>_lengths`, and `labels`) and returns a
`ModelOutput`. It owns its loss, so auxiliary tasks live with the model, and it may
override `after_backward` for mechanisms that act on gradients between backward and
the optimizer step. The loop calls both and knows nothing else about the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class ModelOutput:
    score: torch.Tensor  # (B,) predicted sentiment score
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


class MSAModel(nn.Module):
    """Base class: input normalisation buffers, default L1 loss, no-op training hook."""

    def __init__(self, modalities: tuple[str, ...], feature_dims: dict[str, int]) -> None:
        super().__init__()
        self.modalities = modalities
        self.feature_dims = feature_dims
        for m in ("audio", "vision"):
            if m in modalities:
                self.register_buffer(f"{m}_mean", torch.zeros(feature_dims[m]))
                self.register_buffer(f"{m}_std", torch.ones(feature_dims[m]))

    def set_input_stats(self, stats: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Store training-data mean/std per modality; applied inside forward, so they ship with the model."""
        for m, (mean, std) in stats.items():
            getattr(self, f"{m}_mean").copy_(mean)
            getattr(self, f"{m}_std").copy_(std)

    def normalised(self, batch: dict[str, torch.Tensor], modality: str) -> torch.Tensor:
        x = batch[modality]
        return (x - getattr(self, f"{modality}_mean")) / getattr(self, f"{modality}_std")

    def loss(self, output: ModelOutput, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        loss = F.l1_loss(output.score, batch["labels"])
        return loss, {"loss_score": float(loss.detach())}

    def after_backward(self, output: ModelOutput, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """Hook between backward and optimizer step; returns metrics to log."""
        return {}
