"""The one dataset type every reader produces and every model consumes.

A dataset is three splits of aligned per-sample arrays. Text is either token ids with a
mask (for a language model inside the network) or precomputed feature vectors; audio and
vision are padded sequences with their true lengths (utterance-level vectors are
sequences of length 1). A modality that a source lacks is simply absent.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields, replace

import numpy as np

SPLITS = ("train", "valid", "test")
MODALITIES = ("text", "audio", "vision")
MODALITY_FIELDS = {
    "text": ("raw_text", "text_ids", "text_mask", "text", "text_lengths"),
    "audio": ("audio", "audio_lengths"),
    "vision": ("vision", "vision_lengths"),
}


@dataclass
class Split:
    """Per-sample arrays of one split; every array has the same first dimension N."""

    ids: np.ndarray  # (N,) str, "video$_$clip" as MMSA writes them
    video_ids: np.ndarray  # (N,) str, the grouping key for cross-validation
    labels: np.ndarray  # (N,) float32 sentiment score, or (N, 4) int64 binary emotions (IEMOCAP)
    raw_text: np.ndarray | None = None  # (N,) str
    text_ids: np.ndarray | None = None  # (N, L) int64 token ids
    text_mask: np.ndarray | None = None  # (N, L) int64 attention mask
    text: np.ndarray | None = None  # (N, L, D) float32 text features
    text_lengths: np.ndarray | None = None  # (N,) int64
    audio: np.ndarray | None = None  # (N, La, Da) float32
    audio_lengths: np.ndarray | None = None
    vision: np.ndarray | None = None  # (N, Lv, Dv) float32
    vision_lengths: np.ndarray | None = None
    unimodal_labels: np.ndarray | None = None  # (N, 3) float32 text/audio/vision scores (CH-SIMS)
    image: np.ndarray | None = None  # (N, 3, S, S) uint8 pixels (image+text posts)

    def __len__(self) -> int:
        return len(self.labels)

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays that are present, by field name."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def take(self, index: np.ndarray) -> Split:
        """A new split holding the samples at `index`, in that order (lazy arrays stay lazy)."""
        return Split(
            **{k: v.take_rows(index) if hasattr(v, "take_rows") else v[index] for k, v in self.arrays().items()}
        )

    @staticmethod
    def concat(parts: list[Split]) -> Split:
        """Stack splits sample-wise; sequences are padded to the longest."""
        names = parts[0].arrays().keys()
        out = {}
        for name in names:
            arrays = [getattr(p, name) for p in parts]
            filled = [a for a in arrays if len(a)]  # an empty split is read eagerly: it must not make the rest eager
            if filled and all(hasattr(a, "take_rows") for a in filled) and len({a.path for a in filled}) == 1:
                out[name] = type(filled[0]).concat(filled)  # rows of the same cache file: stays lazy
                continue
            arrays = [np.asarray(a) for a in (filled or arrays[:1])]  # empty parts add nothing (and may lack the width)
            if arrays[0].ndim >= 2 and name not in ("ids", "video_ids", "labels", "raw_text", "unimodal_labels"):
                longest = max(a.shape[1] for a in arrays)
                arrays = [_pad_time(a, longest) for a in arrays]
            out[name] = np.concatenate(arrays)
        return Split(**out)


def _pad_time(a: np.ndarray, length: int) -> np.ndarray:
    pad = [(0, 0)] * a.ndim
    pad[1] = (0, length - a.shape[1])
    return np.pad(a, pad)


@dataclass
class MSADataset:
    """A named dataset: its splits, where it came from and a content fingerprint."""

    name: str
    splits: dict[str, Split]
    source: str
    label_range: tuple[float, float] = (-3.0, 3.0)
    notes: dict[str, str] = field(default_factory=dict)
    metric_set: str = (
        "mmsa"  # how predictions are scored: "mmsa" (MOSI/MOSEI), "sims", "emotions" (IEMOCAP), "classes" (MVSA)
    )
    stored_fingerprint: str | None = None  # set when read from the HDF5 cache, which stores it
    class_names: tuple[str, ...] = ()  # for class labels (MVSA: negative, neutral, positive)

    @property
    def task(self) -> str:
        """What a model must predict: "score" (MOSI/MOSEI/SIMS), "emotions" (IEMOCAP) or "classes" (MVSA)."""
        return {"emotions": "emotions", "classes": "classes"}.get(self.metric_set, "score")

    @property
    def modalities(self) -> tuple[str, ...]:
        first = self.splits["train"]
        present = {
            "text": first.text is not None or first.text_ids is not None or first.raw_text is not None,
            "audio": first.audio is not None,
            "vision": first.vision is not None,
        }
        return tuple(m for m in MODALITIES if present[m])

    def feature_dims(self) -> dict[str, int]:
        """Input width of each modality (text: 0 when it enters as token ids)."""
        first = self.splits["train"]
        dims = {}
        for m in self.modalities:
            array = first.text if m == "text" else getattr(first, m)
            dims[m] = 0 if array is None else int(array.shape[-1])
        return dims

    def fingerprint(self) -> str:
        """SHA-256 over every array of every split: same content, same fingerprint."""
        if self.stored_fingerprint is not None:
            return self.stored_fingerprint
        digest = hashlib.sha256()
        for split_name in SPLITS:
            split = self.splits[split_name]
            for name, array in sorted(split.arrays().items()):
                digest.update(f"{split_name}/{name}/{array.dtype}/{array.shape}".encode())
                if array.dtype.kind in "OUS":
                    digest.update("\x1f".join(map(str, array.tolist())).encode())
                else:
                    digest.update(np.ascontiguousarray(array).reshape(-1).view(np.uint8))  # bytes without a copy
        return digest.hexdigest()[:16]

    def only(self, modalities: tuple[str, ...]) -> MSADataset:
        """The same samples with every array of the other modalities removed, so nothing
        downstream (models, batching, statistics) can read them."""
        unknown = set(modalities) - set(self.modalities)
        if unknown:
            raise ValueError(f"{self.name} has no {', '.join(sorted(unknown))} (it has {'+'.join(self.modalities)})")
        dropped = [name for m in MODALITIES if m not in modalities for name in MODALITY_FIELDS[m]]
        return replace(self, splits={k: replace(v, **dict.fromkeys(dropped)) for k, v in self.splits.items()})

    def with_splits(self, **splits: Split) -> MSADataset:
        return replace(self, splits={**self.splits, **splits})

    def summary(self) -> str:
        sizes = ", ".join(f"{s} {len(self.splits[s])}" for s in SPLITS)
        repairs = (
            f"; reader notes (repairs, fallbacks): {', '.join(f'{k} ({v})' for k, v in self.notes.items())}"
            if self.notes
            else ""
        )
        return f"{self.name}: {sizes}; modalities {'+'.join(self.modalities)} ({self.source}){repairs}"
