"""The field's robustness protocols as transformations of a split, applied before the model's text encoder.

- `feature_missing` (TFR-Net, LNLN): every element within a sequence's length is kept with probability
  1 - r: text tokens become [UNK] (CLS and SEP kept) and are encoded again, audio and vision frames become
  zeros; text features of a source without transcripts lose frames like audio.
- `modality_missing` (MMIN): only the named modalities stay; a missing transcript is empty ([CLS][SEP]),
  missing frames and images are zeros. An image+text post has two: text, and image (its pixels and the image
  features computed from them), whose frames the other protocols leave alone.
- `noise` (MultiBench): transcripts get typing noise (`text_noise`); audio and vision get Gaussian noise
  N(0, p) in units of each feature's standard deviation on the evaluated samples (so p means the same for
  every feature, whatever its scale), then lose whole frames with probability p; text features (a model
  that reads the source's features, not words) are treated as frames.
Every draw comes from (seed, protocol, level, modality), so each architecture sees the same inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from itertools import combinations

import numpy as np

from ray_msa.data.dataset import MODALITIES, Split
from ray_msa.data.text import tokenize
from ray_msa.pretrained.lm import load_tokenizer
from ray_msa.robustness.masks import keep_mask, valid_positions
from ray_msa.robustness.text_noise import noisy_text

PROTOCOLS = ("feature_missing", "modality_missing", "noise")
LEVELS = tuple(round(0.1 * k, 1) for k in range(10))  # 0.0 ... 0.9
STREAMS = {"text": 1, "audio": 2, "vision": 3, "image": 4}  # one random stream per modality


@dataclass(frozen=True)
class TextInput:
    """How the model reads text: token ids of `model` (frozen or fine-tuned LM), or the source's features."""

    mode: str  # frozen, finetune or features
    model: str
    max_tokens: int


@dataclass(frozen=True)
class Condition:
    """One evaluated condition: a protocol at a level (a rate or noise level), or a set of present
    modalities (`modality_missing`), with the seed of its draws."""

    protocol: str
    level: float = 0.0
    present: tuple[str, ...] = ()
    seed: int = 0

    @property
    def label(self) -> str:
        return "+".join(self.present) if self.protocol == "modality_missing" else f"{self.level:.1f}"

    def rng(self, modality: str) -> np.random.Generator:
        level = int(round(self.level * 1000))
        return np.random.default_rng([self.seed, PROTOCOLS.index(self.protocol), level, STREAMS[modality]])


def modality_conditions(modalities: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Every non-empty proper subset of the modalities, smallest first ({T}, {A}, {V}, {T,A}, {T,V}, {A,V})."""
    return [c for k in range(1, len(modalities)) for c in combinations(modalities, k)]


def frame_stds(array: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Each feature's standard deviation over the valid frames (1 where a feature is constant)."""
    frames = np.asarray(array)[valid_positions(lengths, array.shape[1])].astype(np.float64)
    std = frames.std(0) if len(frames) else np.ones(array.shape[-1])
    std[std < 1e-6] = 1.0
    return std.astype(np.float32)


def _frames(split: Split, modality: str, condition: Condition, stds: np.ndarray | None) -> np.ndarray:
    """A sequence modality's frames with the modality missing, or with noise and dropped frames."""
    x = np.array(getattr(split, modality), dtype=np.float32)  # a copy: the clean split stays as it was
    lengths = np.asarray(getattr(split, f"{modality}_lengths"))
    if condition.protocol == "modality_missing":
        return x if modality in condition.present else np.zeros_like(x)
    rng = condition.rng(modality)
    stds = frame_stds(x, lengths) if stds is None else stds
    valid = valid_positions(lengths, x.shape[1])[..., None]
    x += np.where(valid, rng.standard_normal(x.shape, np.float32) * condition.level * stds, 0.0).astype(np.float32)
    return np.where(keep_mask(lengths, x.shape[1], condition.level, rng)[..., None], x, np.float32(0.0))


def token_ids(split: Split, text: TextInput, raw: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The split's token ids and mask (its own, or its transcripts, or `raw` in their place, tokenized)."""
    if raw is None and split.text_ids is not None:
        return np.array(split.text_ids), np.asarray(split.text_mask)
    ids, mask = tokenize(np.asarray(split.raw_text if raw is None else raw), text.model, text.max_tokens)
    return ids.copy(), mask


def _token_fields(ids: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    return {"text_ids": ids, "text_mask": mask, "text_lengths": mask.sum(1).astype(np.int64)}


def drop_elements(
    split: Split, rate: float | np.ndarray, rng: Callable[[str], np.random.Generator], text: TextInput
) -> dict[str, np.ndarray]:
    """Random feature missing at `rate` (one, or one per sample): the changed arrays of `split`. Text
    tokens become [UNK] (CLS and SEP kept; the model's text preparation encodes them again), frames zeros."""
    changes = {}
    for m in MODALITIES:
        tokens = m == "text" and text.mode != "features"
        if getattr(split, "raw_text" if tokens else m) is None and not (tokens and split.text_ids is not None):
            continue
        if m == "vision" and split.image is not None:  # a post's image features: an image is not a frame sequence
            continue
        if tokens:
            ids, mask = token_ids(split, text)
            keep = keep_mask(mask.sum(1), ids.shape[1], rate, rng("text"), keep_ends=True)
            ids[~keep] = load_tokenizer(text.model).unk_token_id
            changes |= _token_fields(ids, mask)
            continue
        x, lengths = getattr(split, m), np.asarray(getattr(split, f"{m}_lengths"))
        keep = keep_mask(lengths, x.shape[1], rate, rng(m))
        changes[m] = np.where(keep[..., None], np.asarray(x, np.float32), np.float32(0.0))
    return changes


def perturb(split: Split, condition: Condition, text: TextInput, stds: dict[str, np.ndarray]) -> Split:
    """`split` (as read, before text preparation) under `condition`; the clean split is not changed.
    `stds`: each sequence modality's feature standard deviations (`noise`; default: `frame_stds` of `split`)."""
    if condition.protocol == "feature_missing":
        return replace(split, **drop_elements(split, condition.level, condition.rng, text))
    changes = {}
    posts = split.image is not None  # image+text posts: their image features and pixels are one modality, image
    image_gone = posts and condition.protocol == "modality_missing" and "image" not in condition.present
    for m in MODALITIES:
        tokens = m == "text" and text.mode != "features"
        if getattr(split, "raw_text" if tokens else m) is None:
            continue
        if posts and m == "vision":
            if image_gone:
                changes[m] = np.zeros_like(np.asarray(split.vision))
            continue
        if tokens:
            raw = None
            if condition.protocol == "modality_missing" and "text" not in condition.present:
                raw = np.full(len(split), "", dtype=object)  # an empty transcript: [CLS] [SEP]
            elif condition.protocol == "noise" and condition.level > 0:
                rng = condition.rng("text")
                raw = np.array([noisy_text(str(t), condition.level, rng) for t in split.raw_text], dtype=object)
            changes |= _token_fields(*token_ids(split, text, raw))
        else:  # audio, vision, and text features (a model reading features cannot see words)
            changes[m] = _frames(split, m, condition, stds.get(m))
    if image_gone:
        changes["image"] = np.zeros_like(split.image)
    return replace(split, **changes)
