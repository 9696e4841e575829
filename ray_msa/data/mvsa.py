"""Image + text posts (MVSA-style): a folder of `data/<guid>.jpg` + `data/<guid>.txt`, with
`train.txt` (`guid,tag`, tag positive / neutral / negative) and `test_without_label.txt`
(`guid,null`; where it carries real tags, a held-out part of the labelled posts, they are the test labels).

Texts come in many encodings: each is decoded as UTF-8, else GB18030, else Latin-1 (which
never fails), and the fallbacks are counted. Cleaning removes URLs, @user mentions and
retweet marks; hashtags keep their words. A missing or unreadable image, a missing or
empty text file, an unknown tag, a guid listed twice or in both lists stops the read with every
offending guid named. A text
that is nothing but links and mentions (42 posts of the real set) becomes empty after
cleaning: the post stays, as image only, and its guid is listed in the dataset's notes.
Nothing is silently dropped.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from ray_msa.data.dataset import MSADataset, Split
from ray_msa.errors import InputError
from ray_msa.pretrained.efficientnet_lite import MEAN, STD, pretrained_efficientnet_lite0

TAGS = ("negative", "neutral", "positive")
ENCODINGS = ("utf-8", "gb18030", "latin-1")
URL = re.compile(r"(https?://\S+|www\.\S+)")
MENTION = re.compile(r"@\w+:?")
RETWEET = re.compile(r"(^|\s)RT\b:?", re.IGNORECASE)
HASHTAG = re.compile(r"#(\w+)")
SPACE = re.compile(r"\s+")
PRETRAINED_SIZE = 224  # EfficientNet-Lite0's ImageNet resolution
SCRATCH_SIZE = 64  # the from-scratch CNN trains on small images: 2 CPU cores


@dataclass
class Posts:
    """One split of posts: guids, cleaned texts, image paths, class ids (-1: unlabelled)."""

    guids: np.ndarray
    texts: np.ndarray
    images: list[Path]
    labels: np.ndarray
    encodings: dict[str, int] = field(default_factory=dict)  # how many texts each encoding decoded
    image_only: list[str] = field(default_factory=list)  # guids whose text was only links/mentions


def clean(text: str) -> str:
    """Tweet text without URLs, mentions and retweet marks; '#word' becomes 'word'."""
    text = URL.sub(" ", text)
    text = RETWEET.sub(" ", text)
    text = MENTION.sub(" ", text)
    text = HASHTAG.sub(r"\1", text)
    return SPACE.sub(" ", text).strip()


def decode(raw: bytes) -> tuple[str, str]:
    for encoding in ENCODINGS:
        try:
            return raw.decode(encoding), encoding
        except UnicodeDecodeError:
            continue
    raise AssertionError("latin-1 decodes every byte string")


def read_index(path: Path, labelled: bool) -> list[tuple[str, str]]:
    """(guid, tag) rows of train.txt or test_without_label.txt."""
    if not path.is_file():
        raise InputError(path, "file", "not found", "put train.txt and test_without_label.txt beside data/")
    with path.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows or [c.strip().lower() for c in rows[0][:2]] != ["guid", "tag"]:
        raise InputError(
            path, "header", f"{rows[0] if rows else 'empty file'}", "start the file with the header guid,tag"
        )
    out, bad, seen = [], [], set()
    for line, row in enumerate(rows[1:], start=2):
        if not row or not "".join(row).strip():
            continue
        guid, tag = row[0].strip(), (row[1].strip().lower() if len(row) > 1 else "")
        if labelled and tag not in TAGS:
            bad.append(f"{guid} (line {line}: {tag or 'empty'!r})")
        if guid in seen:
            raise InputError(path, "guid", f"{guid} listed twice (line {line})", "list every post once")
        seen.add(guid)
        out.append((guid, tag))
    if bad:
        raise InputError(
            path, "tag", f"unknown tag for {len(bad)} guids: {', '.join(bad[:10])}", f"use one of {', '.join(TAGS)}"
        )
    if not out:
        raise InputError(path, "rows", "no posts", "list one guid,tag per line")
    return out


def read_posts(directory: Path, index_name: str, labelled: bool) -> Posts:
    """The posts listed in `index_name`, checked: every guid has a readable image and a non-empty text."""
    rows = read_index(directory / index_name, labelled)
    data = directory / "data"
    guids, texts, images, encodings = [], [], [], dict.fromkeys(ENCODINGS, 0)
    missing_text, empty_text, missing_image, image_only = [], [], [], []
    for guid, _ in rows:
        text_path, image_path = data / f"{guid}.txt", data / f"{guid}.jpg"
        if not image_path.is_file():
            missing_image.append(guid)
        if not text_path.is_file():
            missing_text.append(guid)
            continue
        text, encoding = decode(text_path.read_bytes())
        encodings[encoding] += 1
        cleaned = clean(text)
        if not text.strip():
            empty_text.append(guid)
        elif not cleaned:
            image_only.append(guid)
        guids.append(guid)
        texts.append(cleaned)
        images.append(image_path)
    for problem, listed, fix in (
        ("no image", missing_image, "add data/<guid>.jpg or remove the guid from the list"),
        ("no text file", missing_text, "add data/<guid>.txt or remove the guid from the list"),
        ("empty text file", empty_text, "give each post its text, or remove it"),
    ):
        if listed:
            raise InputError(
                data, f"{index_name} guids", f"{problem}: {len(listed)} posts: {', '.join(listed[:10])}", fix
            )
    # a test list whose tags are real (a held-out part of train.txt) is scored; `null` tags stay unlabelled (-1)
    labels = np.array([TAGS.index(tag) if labelled or tag in TAGS else -1 for _, tag in rows], dtype=np.int64)
    return Posts(np.array(guids), np.array(texts), images, labels, encodings, image_only)


def load_images(
    paths: list[Path] | list[BinaryIO], guids: np.ndarray, sizes: tuple[int, ...], where: Path | str | None = None
) -> list[np.ndarray]:
    """Each image (a file, or a binary stream of one) decoded once, at every size: (N, 3, size, size) uint8,
    shorter side resized to `size`, centre crop. Unreadable images are named by guid."""
    from PIL import Image, UnidentifiedImageError  # only MVSA folders need an image decoder

    outs = [np.zeros((len(paths), 3, size, size), np.uint8) for size in sizes]
    broken = []
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as decoded:
                decoded = decoded.convert("RGB")
                for out, size in zip(outs, sizes):
                    scale = size / min(decoded.size)
                    image = decoded.resize(
                        (max(size, round(decoded.width * scale)), max(size, round(decoded.height * scale))),
                        Image.BICUBIC,
                    )
                    left, top = (image.width - size) // 2, (image.height - size) // 2
                    out[i] = np.asarray(image.crop((left, top, left + size, top + size))).transpose(2, 0, 1)
        except (OSError, UnidentifiedImageError, ValueError):
            broken.append(str(guids[i]))
    if broken:
        raise InputError(
            where if where is not None else paths[0].parent,
            "images",
            f"{len(broken)} unreadable: guids {', '.join(broken[:10])}",
            "replace those JPEG files or remove the guids from the list",
        )
    return outs


def posts_split(
    guids: np.ndarray,
    texts: np.ndarray,
    images: list[Path] | list[BinaryIO],
    labels: np.ndarray,
    scratch_size: int = SCRATCH_SIZE,
    where: Path | str | None = None,
) -> Split:
    """Posts as the model reads them: cleaned text, EfficientNet-Lite0 tokens of the 224-pixel image
    (`vision`) and the image at `scratch_size` pixels (`image`). `predict` and the served model build
    new posts here too, so they are read exactly as in training."""
    pixels, small = load_images(images, guids, (PRETRAINED_SIZE, scratch_size), where)
    tokens = image_tokens(pixels)
    return Split(
        ids=guids,
        video_ids=guids,
        labels=labels,
        raw_text=texts,
        vision=tokens,
        vision_lengths=np.full(len(guids), tokens.shape[1], np.int64),
        image=small,
    )


def image_tokens(images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Frozen EfficientNet-Lite0 feature maps as tokens: (N, 49, 1280) float16 for 224-pixel images."""
    model = pretrained_efficientnet_lite0().eval()
    mean, std = torch.tensor(MEAN)[:, None, None], torch.tensor(STD)[:, None, None]
    parts = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = (torch.from_numpy(images[start : start + batch_size]).float() / 255.0 - mean) / std
            parts.append(model(x).flatten(2).transpose(1, 2).to(torch.float16).numpy())
    return np.concatenate(parts) if parts else np.zeros((0, 49, 1280), np.float16)


def _check_disjoint(directory: Path) -> None:
    """A post in both lists would be trained on and then predicted as unseen: refused, as a sample in
    two splits is for every other dataset, before any image is read."""
    train, test = directory / "train.txt", directory / "test_without_label.txt"
    if not (train.is_file() and test.is_file()):
        return
    both = sorted({g for g, _ in read_index(train, True)} & {g for g, _ in read_index(test, False)})
    if both:
        raise InputError(
            test,
            "guid",
            f"{len(both)} posts also in train.txt: {', '.join(both[:10])}",
            "list each post in one file only",
        )


def load_mvsa_dataset(directory: Path, scratch_size: int = SCRATCH_SIZE) -> MSADataset:
    """Labelled posts as `train` (cross-validated), none as `valid`, unlabelled posts as `test`
    (labels -1): cleaned text, EfficientNet-Lite0 tokens of the 224-pixel image (`vision`)
    and the image itself at `scratch_size` pixels for the from-scratch CNN (`image`)."""
    splits, notes = {}, {}
    if not any((directory / name).is_file() for name in ("train.txt", "test_without_label.txt")):
        raise InputError(
            directory,
            "train.txt",
            "neither train.txt nor test_without_label.txt found",
            "use the MVSA layout: data/, train.txt, test_without_label.txt",
        )
    _check_disjoint(directory)
    for split_name, index_name, labelled in (("train", "train.txt", True), ("test", "test_without_label.txt", False)):
        if not (directory / index_name).is_file():  # a folder to predict may lack either list
            notes[f"{index_name}"] = "absent"
            splits[split_name] = None
            continue
        posts = read_posts(directory, index_name, labelled)
        for encoding, count in posts.encodings.items():
            if encoding != "utf-8" and count:
                notes[f"{index_name} texts decoded as {encoding}"] = str(count)
        if posts.image_only:
            notes[f"{index_name} posts whose text is only links/mentions (image only)"] = (
                f"{len(posts.image_only)}: {' '.join(posts.image_only)}"
            )
        splits[split_name] = posts_split(posts.guids, posts.texts, posts.images, posts.labels, scratch_size)
    present = next(s for s in splits.values() if s is not None)
    empty = present.take(np.zeros(0, np.int64))
    splits = {name: empty if split is None else split for name, split in splits.items()}
    return MSADataset(
        name="mvsa",
        splits={"train": splits["train"], "valid": empty, "test": splits["test"]},
        source=str(directory),
        label_range=(0.0, float(len(TAGS) - 1)),
        notes=notes,
        metric_set="classes",
        class_names=TAGS,
    )
