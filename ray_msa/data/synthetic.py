"""Synthetic datasets of the field's exact shapes with a planted, learnable signal.

The label of each sample is a fixed linear function of its (time-averaged) modality
features plus noise, so a model that learns gets far below the MAE of predicting the
mean; a model that does not, does not. Used by tests and benchmarks.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ray_msa.data.dataset import SPLITS, MSADataset, Split

# MOSI unaligned (MMSA): text BERT features 50 x 768, audio 375 x 5, vision 500 x 20.
MOSI_UNALIGNED = {"text": (50, 768), "audio": (375, 5), "vision": (500, 20)}
WORDS = ("good", "bad", "great", "awful", "fine", "boring", "loved", "hated", "okay", "movie", "plot", "actor")


def make_synthetic(
    sizes: tuple[int, int, int] = (240, 60, 100),
    shapes: dict[str, tuple[int, int]] | None = None,
    signal: dict[str, float] | None = None,
    noise: float = 0.2,
    seed: int = 0,
    videos_per_split: tuple[int, int, int] | None = None,
    name: str = "synthetic",
    emotions: bool = False,
) -> MSADataset:
    """Sequences whose lengths follow one per-sample duration (as real utterances do), around
    a per-sample latent z: every frame of modality m
    is `signal[m] * z P_m + N(0, 1)`, and the label is a fixed linear function of z.
    `signal` sets how much each modality reveals (0: pure noise). With `emotions`, labels are
    IEMOCAP's four binary emotions (N, 4), each the sign of its own linear function of z."""
    shapes = shapes or {"text": (20, 16), "audio": (30, 8), "vision": (25, 12)}
    signal = signal or {m: 1.0 for m in shapes}
    rng = np.random.default_rng(seed)
    latent = 4
    projections = {m: rng.normal(size=(latent, d)) for m, (_, d) in shapes.items()}
    readout = rng.normal(size=latent)
    emotion_readout = rng.normal(size=(latent, 4))
    splits = {}
    videos_per_split = videos_per_split or tuple(max(2, n // 6) for n in sizes)
    for split_name, n, n_videos in zip(SPLITS, sizes, videos_per_split):
        arrays: dict[str, np.ndarray] = {}
        z = rng.normal(size=(n, latent))
        score = z @ readout
        duration = rng.uniform(0.05, 1.0, size=n)  # one utterance duration drives every modality's length
        for m, (length, dim) in shapes.items():
            lengths = np.clip(np.ceil(duration * length * rng.uniform(0.8, 1.0, size=n)), 1, length).astype(np.int64)
            x = rng.standard_normal(
                size=(n, length, dim), dtype=np.float32
            )  # float32 throughout: MOSEI-sized sets fit in memory
            x += (signal.get(m, 0.0) * (z @ projections[m])).astype(np.float32)[:, None, :]
            x[np.arange(length)[None, :] >= lengths[:, None]] = 0.0
            arrays[m], arrays[f"{m}_lengths"] = x, lengths.astype(np.int64)
        labels = np.clip(1.5 * score / np.linalg.norm(readout) + noise * rng.normal(size=n), -3, 3).astype(np.float32)
        if emotions:
            labels = (z @ emotion_readout + noise * rng.normal(size=(n, 4)) > 0).astype(np.int64)
        videos = np.array([f"{split_name}_v{i % n_videos:03d}" for i in range(n)])
        arrays.update(
            ids=np.array([f"{v}$_${i}" for i, v in enumerate(videos)]),
            video_ids=videos,
            labels=labels,
            raw_text=np.array([" ".join(rng.choice(WORDS, size=rng.integers(3, 9))) for _ in range(n)]),
        )
        splits[split_name] = Split(**arrays)
    return MSADataset(name=name, splits=splits, source=f"synthetic(seed={seed})")


def write_label_csv(dataset: MSADataset, directory: Path) -> Path:
    """Write the dataset's text and labels as an MMSA label.csv."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "label.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["video_id", "clip_id", "text", "label", "mode"])
        for split_name in SPLITS:
            split = dataset.splits[split_name]
            for sample_id, video, text, label in zip(split.ids, split.video_ids, split.raw_text, split.labels):
                writer.writerow([video, sample_id.split("$_$")[1], text, f"{label:.4f}", split_name])
    return path
