"""The one model interface the training loop knows.

A model takes a batch (a dict of tensors: `text` features or `text_ids`/`text_mask`,
`audio`, `vision`, each with `<modality>_lengths`, and `labels`) and returns a
`ModelOutput`. It owns its loss, so auxiliary tasks live with the model, and it may
override `after_backward` for mechanisms that act on gradients between backward and
the optimizer step. The loop calls both and knows nothing else about the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ray_msa.config import TextConfig
from ray_msa.models.balance import GradReader, dot_grad
from ray_msa.pretrained.lm import load_lm


@dataclass
class ModelOutput:
    prediction: torch.Tensor  # (B,) sentiment score, (B, 2E) two logits per emotion, or (B, C) class logits
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


class MSAModel(nn.Module):
    """Base class: input normalisation buffers, default L1 loss, no-op training hooks.

    A subclass takes `(modalities, feature_dims, config, text, outputs)`: its own typed
    hyperparameters (a `ModelConfig` beside it), the text input and the head width."""

    plot_prefixes: tuple[str, ...] = ()  # per-epoch training metrics worth a plot per fold

    def __init__(
        self,
        modalities: tuple[str, ...],
        feature_dims: dict[str, int],
        text: TextConfig = TextConfig(),
        outputs: int = 1,
        own_lm: bool | None = None,
    ) -> None:
        """`own_lm`: the network holds the LM and fine-tunes it (default: when text.mode is finetune)."""
        super().__init__()
        self.outputs = outputs  # 1: a sentiment score; else logits (two per emotion, or one per class)
        self.modalities = modalities
        self.feature_dims = feature_dims
        for m in ("audio", "vision"):
            if m in modalities:
                self.register_buffer(f"{m}_mean", torch.zeros(feature_dims[m]))
                self.register_buffer(f"{m}_std", torch.ones(feature_dims[m]))
        self.lm = None
        self.input_dims = dict(feature_dims)  # width of each modality as the network sees it
        if "text" in modalities and (text.finetune if own_lm is None else own_lm):
            self.lm = load_lm(text.model)
            self.input_dims["text"] = self.lm.config.hidden_size

    def inputs(self) -> tuple[str, ...] | None:
        """Batch fields the model reads (None: all); the loop never reads the others from disk."""
        return None

    def set_input_stats(self, stats: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Store training-data mean/std per modality; applied inside forward, so they ship with the model."""
        for m, (mean, std) in stats.items():
            getattr(self, f"{m}_mean").copy_(mean)
            getattr(self, f"{m}_std").copy_(std)

    def parameter_groups(self, lr: float) -> list[dict]:
        """Optimizer parameter groups; a model with pretrained layers may give them their own rate."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr}]

    def prepare_from_training_data(self, split, index) -> None:
        """Data-dependent initialisation (e.g. vocabularies) from the training samples only."""
        return None

    def normalised(self, batch: dict[str, torch.Tensor], modality: str) -> torch.Tensor:
        x = batch[modality]
        return (x - getattr(self, f"{modality}_mean")) / getattr(self, f"{modality}_std")

    def text_states(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Text as (B, L, D): given features, or the fine-tuned LM's last hidden states."""
        if self.lm is None:
            return batch["text"]
        return self.lm(input_ids=batch["text_ids"], attention_mask=batch["text_mask"]).last_hidden_state

    def sequences(self, batch: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Every modality as (normalised sequence (B, L, D), lengths (B,))."""
        return {
            m: (self.text_states(batch) if m == "text" else self.normalised(batch, m), batch[f"{m}_lengths"])
            for m in self.modalities
        }

    def to_prediction(self, head_output: torch.Tensor) -> torch.Tensor:
        """(B, 1) -> (B,) for a score; logits stay as they are."""
        return head_output.squeeze(-1) if self.outputs == 1 else head_output

    def loss(self, output: ModelOutput, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """L1 on the score (as MMSA trains regression); for emotions, cross-entropy per emotion (as MulT)."""
        if self.outputs == 1:
            loss = F.l1_loss(output.prediction, batch["labels"])
            return loss, {"loss_score": float(loss.detach())}
        loss = F.cross_entropy(output.prediction.reshape(-1, 2), batch["labels"].reshape(-1))
        return loss, {"loss_emotions": float(loss.detach())}

    def after_backward(
        self, output: ModelOutput, batch: dict[str, torch.Tensor], grad: GradReader = dot_grad
    ) -> dict[str, float]:
        """Hook between backward and optimizer step; returns metrics to log. `grad(param)` reads a
        parameter's full gradient whatever the engine did with `.grad` (DeepSpeed ZeRO partitions it)."""
        return {}

    def validation_metrics(self, extras: dict[str, np.ndarray], labels: np.ndarray) -> dict[str, float]:
        """Scores of auxiliary outputs on validation samples (e.g. a polarity task), logged beside the metrics."""
        return {}

    def fold_plots(self, extras: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
        """Box plots of per-sample validation extras at a fold's best epoch: file name -> {series: values}."""
        return {}
