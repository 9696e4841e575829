"""Turn split arrays into model batches: sharded across workers, trimmed to the longest
sequence in the batch, with training-only normalisation statistics."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from ray_msa.data.dataset import Split

SEQUENCES = {
    "text": "text_lengths",
    "text_ids": "text_lengths",
    "text_mask": "text_lengths",
    "audio": "audio_lengths",
    "vision": "vision_lengths",
}
STATS_CHUNK = 512
MODEL_INPUTS = (
    "labels",
    "text",
    "text_ids",
    "text_mask",
    "text_lengths",
    "audio",
    "audio_lengths",
    "vision",
    "vision_lengths",
    "image",
)


def shard(index: np.ndarray, rank: int, world: int) -> np.ndarray:
    """This worker's part of `index` (every world-th, from its rank)."""
    return index[rank::world]


def sequence_lengths(split: Split) -> np.ndarray:
    """Per-sample cost proxy: the summed lengths of its sequences."""
    parts = [getattr(split, f"{m}_lengths") for m in ("text", "audio", "vision")]
    return np.sum([p for p in parts if p is not None], axis=0)


def in_order(index: np.ndarray, batch_size: int) -> list[np.ndarray]:
    return [index[i : i + batch_size] for i in range(0, len(index), batch_size)]


def evaluation_groups(split: Split, index: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Positions in `index`, batched in order of length: how every evaluation batches (validation, test,
    `predict`), so the same model gives the same predictions wherever it is applied."""
    return in_order(np.argsort(sequence_lengths(split)[index], kind="stable"), batch_size)


def length_bucketed(
    index: np.ndarray, lengths: np.ndarray, batch_size: int, rng: np.random.Generator, bucket: int = 20
) -> list[np.ndarray]:
    """Shuffled batches of similar length: `index` (already shuffled) is cut into chunks of
    `bucket` batches, sorted by length inside each chunk, and the batches are shuffled.
    Less padding per batch, still a random order; MMSA pads every batch to the maximum."""
    groups = []
    for chunk in in_order(index, bucket * batch_size):
        groups += in_order(chunk[np.argsort(lengths[chunk], kind="stable")], batch_size)
    return [groups[i] for i in rng.permutation(len(groups))]


def batches(
    split: Split, groups: list[np.ndarray], inputs: tuple[str, ...] | None = None
) -> Iterator[dict[str, torch.Tensor]]:
    """One batch per index group, as float32/int64 tensors trimmed to the longest sequence;
    `inputs` limits it to what the model reads (lazy features it ignores are never read)."""
    wanted = MODEL_INPUTS if inputs is None else inputs
    arrays = {k: v for k, v in split.arrays().items() if k in wanted and k in MODEL_INPUTS}
    for rows in groups:
        batch = {}
        for name, array in arrays.items():
            part = array[rows]
            if name in SEQUENCES:
                longest = max(int(arrays[SEQUENCES[name]][rows].max()), 1)
                part = part[:, :longest]
            tensor = torch.from_numpy(np.ascontiguousarray(part))
            if tensor.dtype != torch.uint8:  # pixels stay bytes until the model normalises them
                tensor = tensor.float() if tensor.is_floating_point() else tensor.long()
            batch[name] = tensor
        yield batch


def input_stats(
    split: Split, index: np.ndarray, modalities: tuple[str, ...]
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Mean and std of audio/vision over the real (unpadded) frames of `index` only."""
    stats = {}
    for m in ("audio", "vision"):
        if m not in modalities:
            continue
        count, mean, m2 = 0, 0.0, 0.0
        for rows in in_order(np.sort(index), STATS_CHUNK):  # in chunks: lazy (HDF5) arrays are never read whole
            values, lengths = getattr(split, m)[rows], getattr(split, f"{m}_lengths")[rows]
            frames = values[np.arange(values.shape[1])[None, :] < lengths[:, None]].astype(np.float64)
            n, chunk_mean = len(frames), frames.mean(0)
            delta, count = chunk_mean - mean, count + n  # Chan et al.'s pairwise update: exact, stable
            mean, m2 = (
                mean + delta * n / count,
                m2 + ((frames - chunk_mean) ** 2).sum(0) + delta**2 * (count - n) * n / count,
            )
        std = np.sqrt(m2 / count)
        std[std < 1e-6] = 1.0
        stats[m] = (torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32))
    return stats
