"""Training with missing inputs (`train.missing_rate`, off at 0): the masks of the feature-missing protocol,
drawn per sample at a rate r ~ U(0, missing_rate) with a random half of each batch left complete, as LNLN
trains. Masked tokens are [UNK] before the text encoder, so a frozen LM's states of the masked samples are
computed again, once per epoch for all of them (the cost of this setting with frozen text); masked frames are
zeros. Validation stays clean.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from ray_msa.config import TextConfig
from ray_msa.data.dataset import SPLITS, MSADataset, Split
from ray_msa.data.text import MAX_TEXT_TOKENS, uncached
from ray_msa.models.spec import ModelSpec
from ray_msa.robustness.masks import training_rates
from ray_msa.robustness.protocols import TextInput, drop_elements, token_ids
from ray_msa.trial import TrialConfig

TEXT_FIELDS = ("text", "text_ids", "text_mask", "text_lengths")
CHUNK = 1024  # samples whose masked texts are encoded together
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
    _tokens: tuple[Split, np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    @property
    def _input(self) -> TextInput:
        return TextInput(self.text.mode, self.text.model, MAX_TEXT_TOKENS)

    def _tokenized(self, split: Split) -> tuple[np.ndarray, np.ndarray]:
        """The split's token ids and mask, tokenized once (the loop passes the same split every epoch)."""
        if self._tokens is None or self._tokens[0] is not split:
            self._tokens = (split, *token_ids(split, self._input))
        return self._tokens[1], self._tokens[2]

    def epoch(self, split: Split, groups: list[np.ndarray], rng: np.random.Generator) -> Iterator[Split]:
        """Every global batch `groups` of an epoch after its inputs went missing, drawn batch by batch from
        `rng`; the masked texts of about CHUNK samples' batches are prepared again together (a pass of the
        frozen LM over many texts costs far less than one per batch; the chunk bounds the memory held)."""
        chunk: list[np.ndarray] = []
        for group in groups:
            chunk.append(group)
            if sum(map(len, chunk)) >= CHUNK:
                yield from self._chunk(split, chunk, rng)
                chunk = []
        if chunk:
            yield from self._chunk(split, chunk, rng)

    def _chunk(self, split: Split, groups: list[np.ndarray], rng: np.random.Generator) -> list[Split]:
        tokens = self.text.mode != "features" and (split.raw_text is not None or split.text_ids is not None)
        ids, mask = self._tokenized(split) if tokens else (None, None)
        parts, masked = [], []
        for group in groups:
            part = split.take(group)
            source = part if ids is None else replace(part, text_ids=ids[group], text_mask=mask[group])
            rates = training_rates(len(group), self.rate, rng)
            changes = drop_elements(source, rates, lambda modality: rng, self._input)
            if ids is not None and self.text.mode != "finetune":  # the model reads encoded text
                new_ids = changes.pop("text_ids")
                changes = {k: v for k, v in changes.items() if not k.startswith("text")}
                rows = np.flatnonzero((new_ids != ids[group]).any(1))
                masked.append((len(parts), rows, new_ids[rows], mask[group][rows]))
            parts.append(replace(part, **changes))
        return self._encoded(parts, masked) if masked else parts

    def _encoded(self, parts: list[Split], masked: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]) -> list[Split]:
        """`parts` with the text fields of their masked rows prepared again from the masked ids."""
        ids = np.concatenate([m[2] for m in masked])
        if not len(ids):
            return parts
        names = np.array([f"m{i}" for i in range(len(ids))])
        again = Split(
            ids=names,
            video_ids=names,
            labels=np.zeros(len(ids), np.float32),
            text_ids=ids,
            text_mask=np.concatenate([m[3] for m in masked]),
        )
        empty = again.take(np.zeros(0, np.int64))
        alone = replace(self.dataset, splits={s: again if s == "train" else empty for s in SPLITS})
        with uncached():  # one-off texts
            prepared = self.spec.prepare_text(alone, self.text).splits["train"]
        out, start = list(parts), 0
        for k, rows, _, _ in masked:
            fields = {}
            for name in TEXT_FIELDS:
                current = getattr(parts[k], name)
                if current is not None and getattr(prepared, name) is not None:
                    fields[name] = np.array(current)
                    fields[name][rows] = getattr(prepared, name)[start : start + len(rows)]
            out[k] = replace(parts[k], **fields)
            start += len(rows)
        return out
