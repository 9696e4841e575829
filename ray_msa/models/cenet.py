"""CENet: cross-modal enhancement of a transformer language model by acoustic and visual
vocabularies (Wang et al., IEEE TMM 2022).

Audio and vision frames become words of small vocabularies: k-means (scikit-learn) is
fitted on the frames of the training data only (`prepare_from_training_data`), every
frame is replaced by its nearest centroid's id, and the ids are embedded to the LM width.
A CE module sits before LM layer `ce_layer`: the text hidden states query the acoustic
and the visual embeddings (attention logits multiplied by `ce_scale` before softmax),
the two results are concatenated, projected to the LM width and added to the hidden
states; the remaining LM layers run as usual, and a regression head reads the first
token. Any BERT-family encoder with `encoder.layer` works (default: the bundled MiniLM);
the module is attached with a forward pre-hook, so the LM's own code is untouched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.cluster import KMeans
from torch import nn

from ray_msa.config import ModelConfig, TextConfig
from ray_msa.data.dataset import Split
from ray_msa.models.base import ModelOutput, MSAModel
from ray_msa.models.layers import Dropout, padding_mask

MAX_KMEANS_FRAMES = 50_000


@dataclass(frozen=True)
class CENetConfig(ModelConfig):
    vocab_size: int = 16  # k-means words per acoustic and visual vocabulary
    ce_layer: int = 1  # the LM layer whose input the CE module enhances
    ce_scale: float = 1.0  # multiplies the CE attention logits before softmax
    dropout: float = 0.1
    ce_module: bool = True  # false: the ablation without the CE module (the fine-tuned LM and its head alone)

    def __post_init__(self) -> None:
        self.at_least(1, "vocab_size")
        self.at_least(0, "ce_layer")
        self.positive("ce_scale")
        self.fraction("dropout")


class CENet(MSAModel):
    def __init__(
        self,
        modalities: tuple[str, ...],
        feature_dims: dict[str, int],
        config: CENetConfig = CENetConfig(),
        text: TextConfig = TextConfig(mode="finetune"),
        outputs: int = 1,
    ) -> None:
        if "text" not in modalities:
            raise ValueError("cenet enhances a language model: it needs the text modality")
        super().__init__(modalities, feature_dims, text, outputs, own_lm=True)
        vocab_size, ce_layer, ce_scale, dropout = config.vocab_size, config.ce_layer, config.ce_scale, config.dropout
        layers = self.lm.encoder.layer
        if not 0 <= ce_layer < len(layers):
            raise ValueError(f"cenet: ce_layer {ce_layer} outside 0..{len(layers) - 1}")
        width = self.lm.config.hidden_size
        self.vocab_size, self.ce_layer, self.ce_scale = vocab_size, ce_layer, ce_scale
        self.nonverbal = tuple(m for m in modalities if m != "text") if config.ce_module else ()
        for m in self.nonverbal:
            self.register_buffer(f"{m}_centroids", torch.zeros(vocab_size, feature_dims[m]))
        self.embed = nn.ModuleDict({m: nn.Embedding(vocab_size, width) for m in self.nonverbal})
        self.query = nn.Linear(width, width)
        self.keys = nn.ModuleDict({m: nn.Linear(width, width) for m in self.nonverbal})
        self.values = nn.ModuleDict({m: nn.Linear(width, width) for m in self.nonverbal})
        self.project = nn.Linear(width * max(1, len(self.nonverbal)), width)
        self.drop = Dropout(dropout)
        self.head = nn.Linear(width, outputs)
        self._context: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None
        if self.nonverbal:
            layers[ce_layer].register_forward_pre_hook(self._enhance, with_kwargs=True)

    def inputs(self) -> tuple[str, ...]:
        """Without the CE module the audio and vision arrays are never read."""
        lengths = tuple(f"{m}_lengths" for m in self.nonverbal)
        return ("text_ids", "text_mask", "text_lengths", "labels", *self.nonverbal, *lengths)

    @torch.no_grad()
    def prepare_from_training_data(self, split: Split, index: np.ndarray) -> None:
        """Fit each vocabulary on the real frames of the training samples `index` only."""
        rng = np.random.default_rng(0)
        for m in self.nonverbal:
            parts, total = [], 0
            for rows in np.array_split(
                rng.permutation(index), max(1, len(index) // 256)
            ):  # read only what k-means needs
                rows = np.sort(rows)
                values, lengths = getattr(split, m)[rows], getattr(split, f"{m}_lengths")[rows]
                parts.append(values[np.arange(values.shape[1])[None, :] < lengths[:, None]])
                total += len(parts[-1])
                if total >= MAX_KMEANS_FRAMES:
                    break
            frames = np.concatenate(parts)
            if len(frames) > MAX_KMEANS_FRAMES:
                frames = frames[rng.choice(len(frames), MAX_KMEANS_FRAMES, replace=False)]
            frames = (
                (torch.from_numpy(frames).float() - getattr(self, f"{m}_mean")) / getattr(self, f"{m}_std")
            ).numpy()
            clusters = min(self.vocab_size, len(np.unique(frames, axis=0)))
            km = KMeans(n_clusters=clusters, n_init=3, random_state=0).fit(frames)
            centroids = np.repeat(km.cluster_centers_, math.ceil(self.vocab_size / clusters), axis=0)[: self.vocab_size]
            getattr(self, f"{m}_centroids").copy_(torch.from_numpy(centroids).float())

    def words(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        """Nearest-centroid id of every frame: (B, L) long."""
        centroids = getattr(self, f"{modality}_centroids")
        return torch.cdist(x, centroids.unsqueeze(0).expand(x.size(0), -1, -1)).argmin(-1)

    def _enhance(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
        if self._context is None:
            return args, kwargs
        hidden = args[0] if args else kwargs["hidden_states"]
        q = self.query(hidden)
        parts = []
        for m, (embedded, pad) in self._context.items():
            logits = q @ self.keys[m](embedded).transpose(1, 2) / math.sqrt(q.size(-1)) * self.ce_scale
            weights = torch.softmax(logits.masked_fill(pad[:, None, :], float("-inf")), dim=-1)
            parts.append(weights @ self.values[m](embedded))
        enhanced = hidden + self.drop(self.project(torch.cat(parts, dim=-1)))
        if args:
            return (enhanced, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": enhanced}

    def forward(self, batch: dict[str, torch.Tensor]) -> ModelOutput:
        context = {}
        for m in self.nonverbal:
            x, lengths = self.normalised(batch, m), batch[f"{m}_lengths"]
            context[m] = (self.embed[m](self.words(x, m)), padding_mask(lengths, x.size(1)))
        self._context = context or None
        try:
            hidden = self.lm(input_ids=batch["text_ids"], attention_mask=batch["text_mask"]).last_hidden_state
        finally:
            self._context = None
        return ModelOutput(prediction=self.to_prediction(self.head(self.drop(hidden[:, 0]))))
