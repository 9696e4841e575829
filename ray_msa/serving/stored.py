"""A trained model as it is stored and applied.

A model is two files: `model_spec.json` (the data it fits and its resolved configuration) and
`weights.safetensors` (tensors only, so loading it runs no pickled code). `predict`, the MLflow pyfunc
and the Ray Serve deployment all apply a model through `StoredModel`, which prepares new data as the
study did: the stored text mode and encoder, the input statistics held in the weights, and the
evaluation's length-sorted batches.
"""

from __future__ import annotations

import base64
import io
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_model, save_model
from torch import nn

from ray_msa.data.dataset import MSADataset, Split
from ray_msa.data.mvsa import clean, posts_split
from ray_msa.errors import InputError
from ray_msa.metrics import EMOTIONS, compute_metrics
from ray_msa.models.ensemble import FoldEnsemble
from ray_msa.train.batches import batches, evaluation_groups
from ray_msa.trial import TrialConfig

WEIGHTS = "weights.safetensors"
SPEC = "model_spec.json"
RETRAIN = "retrain it with this version (`python -m ray_msa.retest STUDY_RUN_ID` logs a new model)"


def write_model_files(directory: Path, network: nn.Module, record: dict[str, Any]) -> tuple[Path, Path]:
    """`model_spec.json` and `weights.safetensors` of `network` in `directory`: (spec path, weights path)."""
    directory.mkdir(parents=True, exist_ok=True)
    spec, weights = directory / SPEC, directory / WEIGHTS
    spec.write_text(json.dumps(record, indent=1, sort_keys=True), encoding="utf-8")
    save_model(network, str(weights))  # handles shared tensors, which save_file refuses
    return spec, weights


def task_outputs(record: dict[str, Any]) -> int:
    """The head width the record's task needs (as `head_width` computed it from the training data)."""
    if record["task"] == "classes":
        return len(record["class_names"])
    return 2 * len(EMOTIONS) if record["task"] == "emotions" else 1


@dataclass
class StoredModel:
    record: dict[str, Any]  # model_spec.json
    trial: TrialConfig  # the resolved configuration it was trained with
    network: nn.Module  # in eval mode

    @classmethod
    def from_files(cls, spec_path: Path, weights_path: Path) -> StoredModel:
        record = json.loads(Path(spec_path).read_text(encoding="utf-8"))
        if "config" not in record:
            raise InputError(spec_path, "config", "this model was logged before its configuration was stored", RETRAIN)
        trial = TrialConfig.from_dict(record["config"])
        network = cls._network(record, trial)
        load_model(network, str(weights_path), strict=True)
        network.eval()
        return cls(record, trial, network)

    @classmethod
    def from_directory(cls, directory: Path) -> StoredModel:
        """From a folder holding both files (an MLflow model's `artifacts/`)."""
        directory = Path(directory)
        if not (directory / WEIGHTS).is_file():
            pickled = any((d / "data" / "model.pth").is_file() for d in (directory, directory.parent))
            why = "a pickled PyTorch model, which this version does not load" if pickled else f"no {WEIGHTS}"
            raise InputError(directory, WEIGHTS, why, RETRAIN)
        return cls.from_files(directory / SPEC, directory / WEIGHTS)

    @classmethod
    def from_bytes(cls, record: dict[str, Any], weights: bytes) -> StoredModel:
        """From the files' contents (a Ray Serve replica on a node that cannot see the driver's disk)."""
        with tempfile.TemporaryDirectory() as tmp:
            spec_path, weights_path = Path(tmp) / SPEC, Path(tmp) / WEIGHTS
            spec_path.write_text(json.dumps(record), encoding="utf-8")
            weights_path.write_bytes(weights)
            return cls.from_files(spec_path, weights_path)

    @staticmethod
    def _network(record: dict[str, Any], trial: TrialConfig) -> nn.Module:
        def one() -> nn.Module:
            return trial.spec.build(
                tuple(record["modalities"]), record["feature_dims"], trial.model, trial.text, task_outputs(record)
            )

        members = int(record.get("members", 0))
        return FoldEnsemble([one() for _ in range(members)]) if members else one()

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.record["modalities"])

    @property
    def task(self) -> str:
        return self.record["task"]

    def prepare(self, dataset: MSADataset, source: str | Path) -> MSADataset:
        """`dataset` as the model reads it; data that does not fit is refused, naming what differs."""
        missing = [m for m in self.modalities if m not in dataset.modalities]
        if missing:
            raise InputError(
                source,
                "modalities",
                f"the model reads {'+'.join(self.modalities)}; this data has {'+'.join(dataset.modalities) or 'none'}",
                f"pass data with {', '.join(missing)} too, or a model trained without it",
            )
        task = dataset.task
        if task != self.task:
            raise InputError(
                source, "task", f"the data is labelled for {task}, the model predicts {self.task}", "pass matching data"
            )
        prepared = self.trial.spec.prepare_text(dataset.only(self.modalities), self.trial.text)
        largest = max(prepared.splits.values(), key=len)  # an empty split may not carry its arrays' widths
        for m in self.modalities:
            array = largest.text if m == "text" else getattr(largest, m)
            want, have = int(self.record["feature_dims"][m]), 0 if array is None else int(array.shape[-1])
            if want != have:
                raise InputError(
                    source,
                    f"{m} width",
                    f"the model reads {want} {m} features per step, this data has {have}",
                    f"pass {m} features extracted as in the model's training data ({self.record['dataset']})",
                )
        return prepared

    def raw_predictions(self, split: Split) -> np.ndarray:
        """The network's predictions (scores, or logits) for every sample, in the split's order."""
        index = np.arange(len(split))
        groups = evaluation_groups(split, index, self.trial.train.batch_size)
        out: np.ndarray | None = None
        with torch.inference_mode():
            for rows, batch in zip(groups, batches(split, groups, self.network.inputs())):
                values = self.network(batch).prediction.float().numpy()
                if out is None:
                    out = np.zeros((len(split), *values.shape[1:]), np.float32)
                out[rows] = values
        return out if out is not None else np.zeros((0,), np.float32)

    def columns(self, raw: np.ndarray) -> dict[str, np.ndarray]:
        """What a user reads: the score; each emotion's probability; the class and each class's probability."""
        if self.task == "score":
            return {"score": raw.astype(np.float64)}
        if self.task == "emotions":
            probs = torch.softmax(torch.from_numpy(raw).reshape(len(raw), len(EMOTIONS), 2).double(), -1)[..., 1]
            return {f"p_{e}": probs[:, i].numpy() for i, e in enumerate(EMOTIONS)}
        names = self.record["class_names"]
        probs = torch.softmax(torch.from_numpy(raw).double(), -1).numpy()
        tags = np.array([names[k] for k in raw.argmax(-1)])
        return {"tag": tags, **{f"p_{c}": probs[:, i] for i, c in enumerate(names)}}

    def metrics(self, split: Split, raw: np.ndarray) -> dict[str, float] | None:
        """The dataset's metrics when every sample of `split` is labelled (unlabelled posts carry -1)."""
        if not len(split) or (self.task == "classes" and (np.asarray(split.labels) < 0).any()):
            return None
        return compute_metrics(self.record["metric_set"], raw, np.asarray(split.labels))

    def frame_dataset(self, frame: pd.DataFrame) -> MSADataset:
        """Request rows (the pyfunc's input: `text`, `audio` and `vision` frames per row, or `text` and `image`
        bytes for posts) as a dataset whose test split holds them."""
        n = len(frame)
        ids = frame["id"].astype(str).to_numpy() if "id" in frame else np.array([str(i) for i in range(n)])
        if self.task == "classes":
            images = [_image_stream(v) for v in frame["image"]]
            texts = np.array([clean(str(t)) for t in frame["text"]])
            split = posts_split(ids, texts, images, np.full(n, -1, np.int64), where="request")
        else:
            arrays: dict[str, Any] = {}
            for m in self.modalities:
                if m == "text" and self.trial.text.mode != "features":
                    arrays["raw_text"] = np.array([str(t) for t in frame["text"]])
                    continue
                arrays[m], arrays[f"{m}_lengths"] = _padded(frame[m], m)
            labels = np.zeros((n, len(EMOTIONS)), np.int64) if self.task == "emotions" else np.zeros(n, np.float32)
            split = Split(ids=ids, video_ids=ids, labels=labels, **arrays)
        empty = split.take(np.zeros(0, np.int64))
        return MSADataset(
            name=self.record["dataset"],
            splits={"train": empty, "valid": empty, "test": split},
            source="request",
            metric_set=self.record["metric_set"],
            class_names=tuple(self.record.get("class_names", ())),
        )

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Request rows in, one row of `columns` per request row out."""
        dataset = self.prepare(self.frame_dataset(frame), "request")
        return pd.DataFrame(self.columns(self.raw_predictions(dataset.splits["test"])))


def _image_stream(value: Any) -> io.BytesIO:
    if isinstance(value, str):  # base64 text, as JSON carries bytes
        value = base64.b64decode(value)
    return io.BytesIO(bytes(value))


def _padded(cells: pd.Series, modality: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-row sequences (steps x width; one vector is one step) as a zero-padded (N, L, D) array and lengths."""
    rows = []
    for i, cell in enumerate(cells):
        value = np.asarray([np.asarray(step, np.float32) for step in cell] if _nested(cell) else cell, np.float32)
        value = value[None] if value.ndim == 1 else value
        if value.ndim != 2 or not len(value):
            raise InputError("request", f"{modality} of row {i}", "not a list of feature vectors", "send steps x width")
        rows.append(value)
    widths = {r.shape[1] for r in rows}
    if len(widths) > 1:
        raise InputError("request", f"{modality} width", f"rows differ: {sorted(widths)}", "send one width per column")
    longest = max(len(r) for r in rows)
    out = np.zeros((len(rows), longest, widths.pop()), np.float32)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out, np.array([len(r) for r in rows], np.int64)


def _nested(cell: Any) -> bool:
    return len(cell) > 0 and np.ndim(cell[0]) >= 1 if hasattr(cell, "__len__") else False
