"""Training with missing inputs (`train.missing_rate`, off at 0): the masks of the feature-missing protocol,
drawn per sample at a rate r ~ U(0, missing_rate) with a random half of each batch left complete, as LNLN
trains. Masked tokens are [UNK] before the text encoder, so a frozen LM's states of the masked samples are
computed again (the cost of this setting with frozen text); masked frames are zeros. Validation stays clean.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ray_msa.config import TextConfig
from ray_msa.data.dataset import SPLITS, MSADataset, Split
from ray_msa.data.text import MAX_TEXT_TOKENS, uncached
from ray_msa.models.spec import ModelSpec
from ray_msa.robustness.masks import training_rates
from ray_msa.robustness.protocols import TextInput, drop_elements, token_ids
from ray_msa.trial import TrialConfig

TEXT_FIELDS = ("text", "text_ids", "text_mask", "text_lengths")
MISSING_STREAM = 7  # the masks' random stream beside an epoch's (seed, fold, epoch): batches and dropout unchanged


def missing_inputs(trial: TrialConfig, dataset: MSADataset) -> MissingInputs | None:
    """The trial's missing-input training, or None when `train.missing_rate` is 0 (the default)."""
    rate = trial.train.missing_rate
    return MissingInputs(rate, trial.spec, trial.text, dataset) if rate > 0 else None


@dataclass
class MissingInputs:
    rate: float
    spec: ModelSpec
    text: TextConfig
    dataset: MSADataset  # its name, task and metric set, for the text preparation

    def batch_split(self, split: Split, rows: np.ndarray, rng: np.random.Generator) -> Split:
        """The samples at `rows`, each with its own missing rate; the masked texts prepared again."""
        part = split.take(rows)
        text = TextInput(self.text.mode, self.text.model, MAX_TEXT_TOKENS)
        changes = drop_elements(part, training_rates(len(rows), self.rate, rng), lambda modality: rng, text)
        if "text_ids" in changes and self.text.mode != "finetune":  # the model reads encoded text
            encoded = self._encoded(part, changes["text_ids"], changes["text_mask"], token_ids(part, text)[0])
            changes = {k: v for k, v in changes.items() if not k.startswith("text")} | encoded
        return replace(part, **changes)

    def _encoded(self, part: Split, ids: np.ndarray, mask: np.ndarray, clean: np.ndarray) -> dict[str, np.ndarray]:
        """`part`'s text fields with the samples whose tokens were masked prepared again from `ids`."""
        out = {k: np.array(getattr(part, k)) for k in TEXT_FIELDS if getattr(part, k) is not None}
        changed = np.flatnonzero((ids != clean).any(1))
        if not len(changed):
            return out
        masked = Split(
            ids=part.ids[changed],
            video_ids=part.video_ids[changed],
            labels=part.labels[changed],
            text_ids=ids[changed],
            text_mask=mask[changed],
        )
        empty = masked.take(np.zeros(0, np.int64))
        alone = replace(self.dataset, splits={s: masked if s == "train" else empty for s in SPLITS})
        with uncached():
            again = self.spec.prepare_text(alone, self.text).splits["train"]
        for k in out:
            out[k][changed] = getattr(again, k)
        return out
