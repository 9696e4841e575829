"""Write synthetic datasets as real files in every public format, with the exact public shapes.

The content comes from `make_synthetic` (a planted latent signal, duration-correlated
lengths), so a model that reads a file correctly can learn from it. Used by tests, by
`bench/load_data.py`, and from the command line:

    python -m ray_msa.data.synthetic_files mmsa mosei /tmp/MOSEI --sizes 16326 1871 4659
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import numpy as np

from ray_msa.data.csd import ComputationalSequence, write_csd
from ray_msa.data.dataset import SPLITS, MSADataset
from ray_msa.data.synthetic import make_synthetic, write_label_csv
from ray_msa.data.text import tokenize

# (text length, text dim), (audio length, dim), (vision length, dim) as the public files have them.
MMSA_SHAPES = {
    ("mosi", "unaligned"): {"text": (50, 768), "audio": (375, 5), "vision": (500, 20)},
    ("mosi", "aligned"): {"text": (50, 768), "audio": (50, 5), "vision": (50, 20)},
    ("mosei", "unaligned"): {"text": (50, 768), "audio": (500, 74), "vision": (500, 35)},
    ("mosei", "aligned"): {"text": (50, 768), "audio": (50, 74), "vision": (50, 35)},
    ("sims", "unaligned"): {"text": (39, 768), "audio": (400, 33), "vision": (55, 709)},
}
MMSA_FILE = {
    ("mosi", "unaligned"): "unaligned_50.pkl",
    ("mosi", "aligned"): "aligned_50.pkl",
    ("mosei", "unaligned"): "unaligned_50.pkl",
    ("mosei", "aligned"): "aligned_50.pkl",
    ("sims", "unaligned"): "unaligned_39.pkl",
}
MULT_SHAPES = {
    ("mosi", "aligned"): {"text": (50, 300), "audio": (50, 5), "vision": (50, 20)},
    ("mosi", "unaligned"): {"text": (50, 300), "audio": (375, 5), "vision": (500, 20)},
    ("mosei", "aligned"): {"text": (50, 300), "audio": (50, 74), "vision": (50, 35)},
    ("mosei", "unaligned"): {"text": (50, 300), "audio": (500, 74), "vision": (500, 35)},
    ("iemocap", "aligned"): {"text": (20, 300), "audio": (20, 74), "vision": (20, 35)},
    ("iemocap", "unaligned"): {"text": (20, 300), "audio": (400, 74), "vision": (500, 35)},
}
MULT_FILE = {
    ("mosi", "aligned"): "mosi_data.pkl",
    ("mosi", "unaligned"): "mosi_data_noalign.pkl",
    ("mosei", "aligned"): "mosei_senti_data.pkl",
    ("mosei", "unaligned"): "mosei_senti_data_noalign.pkl",
    ("iemocap", "aligned"): "iemocap_data.pkl",
    ("iemocap", "unaligned"): "iemocap_data_noalign.pkl",
}


def _token_ids(texts: np.ndarray, length: int) -> np.ndarray:
    """MMSA's text_bert (N, 3, L): BERT-vocabulary ids, mask, segment ids."""
    ids, mask = tokenize(texts, max_tokens=length)
    pad = length - ids.shape[1]
    ids, mask = np.pad(ids, ((0, 0), (0, pad))), np.pad(mask, ((0, 0), (0, pad)))
    return np.stack([ids, mask, np.zeros_like(ids)], axis=1).astype(np.float32)  # MMSA stores them as floats


def write_mmsa_pickle(
    directory: Path,
    dataset: str = "mosi",
    alignment: str = "unaligned",
    sizes: tuple[int, int, int] = (64, 16, 24),
    seed: int = 0,
    neg_inf_frames: int = 0,
    shapes: dict[str, tuple[int, int]] | None = None,
) -> Path:
    """An MMSA pickle; `neg_inf_frames` real audio values per split become -inf, as in the real files.
    `shapes` overrides the public shapes (tiny files for tests)."""
    shapes = shapes or MMSA_SHAPES[(dataset, alignment)]
    synth = _synthetic(dataset, shapes, sizes, seed)
    rng = np.random.default_rng(seed + 1)
    out = {}
    for split_name in SPLITS:
        split = synth.splits[split_name]
        bert = _token_ids(split.raw_text, shapes["text"][0])
        part = {
            "raw_text": split.raw_text.astype(object),
            "id": split.ids.astype(object),
            "text": split.text,
            "text_bert": bert,
            "audio": split.audio,
            "vision": split.vision,
            "regression_labels": split.labels,
            "classification_labels": np.digitize(split.labels, [-1e-9, 1e-9]).astype(np.float32),
            "annotations": np.where(
                split.labels > 0, "Positive", np.where(split.labels < 0, "Negative", "Neutral")
            ).astype(object),
        }
        if alignment == "unaligned":
            part["audio_lengths"], part["vision_lengths"] = split.audio_lengths.tolist(), split.vision_lengths.tolist()
        else:  # aligned: every modality has the text's length
            text_len = bert[:, 1].sum(1).astype(np.int64)
            for m in ("audio", "vision"):
                part[m] = part[m] * (np.arange(part[m].shape[1])[None, :, None] < text_len[:, None, None])
        if neg_inf_frames:
            real = np.argwhere(
                np.arange(part["audio"].shape[1])[None, :]
                < (split.audio_lengths if alignment == "unaligned" else text_len)[:, None]
            )
            chosen = real[rng.choice(len(real), neg_inf_frames, replace=False)]
            part["audio"][chosen[:, 0], chosen[:, 1], 0] = -np.inf
        if dataset == "sims":
            for i, key in enumerate(("regression_labels_T", "regression_labels_A", "regression_labels_V")):
                part[key] = np.clip(split.labels + 0.2 * rng.normal(size=len(split)) * (i + 1) / 3, -1, 1).astype(
                    np.float32
                )
        out[split_name] = part
    return _dump(out, directory / MMSA_FILE[(dataset, alignment)])


def write_mult_pickle(
    directory: Path,
    dataset: str = "mosi",
    alignment: str = "unaligned",
    sizes: tuple[int, int, int] = (64, 16, 24),
    seed: int = 0,
    shapes: dict[str, tuple[int, int]] | None = None,
) -> Path:
    """A MulT pickle: zero padding in front (as the SDK's alignment leaves it), ids (video, start, end) as bytes."""
    shapes = shapes or MULT_SHAPES[(dataset, alignment)]
    synth = _synthetic(dataset, shapes, sizes, seed)
    out = {}
    for split_name in SPLITS:
        split = synth.splits[split_name]
        part = {}
        for m in ("text", "audio", "vision"):
            values, lengths = getattr(split, m), getattr(split, f"{m}_lengths")
            order = (np.arange(values.shape[1])[None, :] - (values.shape[1] - lengths)[:, None]) % values.shape[1]
            part[m] = np.take_along_axis(values, order[:, :, None], axis=1)  # real frames last
        if dataset == "iemocap":
            part["labels"] = np.eye(2, dtype=np.float32)[split.labels]  # (N, 4, 2)
        else:
            part["labels"] = split.labels.reshape(-1, 1, 1)
        videos = [i.split("$_$")[0] for i in split.ids]
        part["id"] = np.array([[v.encode(), str(k).encode(), str(k + 1).encode()] for k, v in enumerate(videos)])
        out[split_name] = part
    return _dump(out, directory / MULT_FILE[(dataset, alignment)])


def write_csd_files(
    directory: Path,
    dataset: str = "mosi",
    sizes: tuple[int, int, int] = (64, 16, 24),
    seed: int = 0,
    shapes: dict[str, tuple[int, int]] | None = None,
) -> Path:
    """label.csv + SDK computational sequences: labels (segment intervals), COVAREP audio and
    FACET vision frames with their own intervals, segments of a video one after another."""
    shapes = shapes or {"audio": (375, 5), "vision": (500, 20)}
    synth = _synthetic(dataset, shapes, sizes, seed)
    for split in synth.splits.values():
        split.ids = _clip_ids(split.video_ids)
    write_label_csv(synth, directory)
    rng = np.random.default_rng(seed + 2)
    labels: dict[str, list] = {}
    frames: dict[str, dict[str, list]] = {m: {} for m in shapes}
    clock: dict[str, float] = {}
    for split_name in SPLITS:
        split = synth.splits[split_name]
        for i, video in enumerate(split.video_ids):
            start = clock.get(video, 0.0)
            end = start + rng.uniform(1.0, 8.0)
            clock[video] = end + rng.uniform(0.2, 1.0)  # silence between segments: frames there belong to no segment
            labels.setdefault(video, []).append((split.labels[i], start, end))
            for m in shapes:
                n = int(getattr(split, f"{m}_lengths")[i])
                edges = np.linspace(start, end, n + 1)
                frames[m].setdefault(video, []).append((getattr(split, m)[i, :n], np.stack([edges[:-1], edges[1:]], 1)))
    label_data = {
        v: (np.array([[r[0]] for r in rows], np.float32), np.array([r[1:] for r in rows])) for v, rows in labels.items()
    }
    write_csd(
        directory / f"CMU_{dataset.upper()}_Opinion_Labels.csd",
        ComputationalSequence("Opinion Segment Labels", label_data, {"dimension names": ["sentiment"]}),
    )
    names = {"audio": ("COVAREP", "COVAREP"), "vision": ("Visual_Facet_42", "FACET 4.2")}
    for m in shapes:
        data = {
            v: (np.concatenate([f for f, _ in parts]).astype(np.float32), np.concatenate([t for _, t in parts]))
            for v, parts in frames[m].items()
        }
        write_csd(
            directory / f"CMU_{dataset.upper()}_{names[m][0]}.csd",
            ComputationalSequence(names[m][1], data, {"dataset name": dataset}),
        )
    return directory


def _clip_ids(video_ids: np.ndarray) -> np.ndarray:
    """`video$_$k` with k = 1, 2, ... per video in order, as the SDK numbers a video's segments."""
    seen: dict[str, int] = {}
    out = []
    for video in video_ids:
        seen[video] = seen.get(video, 0) + 1
        out.append(f"{video}$_${seen[video]}")
    return np.array(out)


def _synthetic(dataset: str, shapes: dict[str, tuple[int, int]], sizes: tuple[int, int, int], seed: int) -> MSADataset:
    synth = make_synthetic(sizes=sizes, shapes=shapes, seed=seed, name=dataset, emotions=dataset == "iemocap")
    if dataset == "sims":  # SIMS scores live in [-1, 1]
        for split in synth.splits.values():
            split.labels = np.clip(split.labels / 3, -1, 1).astype(np.float32)
    return synth


def _dump(obj: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        pickle.dump(obj, handle, protocol=4)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m ray_msa.data.synthetic_files",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("format", choices=("mmsa", "mult", "csv", "csd"))
    parser.add_argument("dataset", choices=("mosi", "mosei", "sims", "iemocap"))
    parser.add_argument("out", type=Path)
    parser.add_argument("--alignment", choices=("unaligned", "aligned"), default="unaligned")
    parser.add_argument("--sizes", type=int, nargs=3, default=(64, 16, 24))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.format == "mmsa":
        path = write_mmsa_pickle(args.out, args.dataset, args.alignment, tuple(args.sizes), args.seed)
    elif args.format == "mult":
        path = write_mult_pickle(args.out, args.dataset, args.alignment, tuple(args.sizes), args.seed)
    elif args.format == "csd":
        path = write_csd_files(args.out, args.dataset, tuple(args.sizes), args.seed)
    else:
        path = write_label_csv(make_synthetic(sizes=tuple(args.sizes), seed=args.seed, name=args.dataset), args.out)
    print(path)


if __name__ == "__main__":
    main()
