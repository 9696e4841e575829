"""A trial's resolved configuration (typed, checked) and the run context that travels beside it.

`TrialConfig` is what a worker trains: the architecture, its `ModelConfig`, the `TrainConfig`
and the `TextConfig`. It is built by `SpaceFile.build` (search_space.py) from a space file,
flags and sampled values, and read back from a stored run by `from_dict`; it never holds run
ids, tracking URIs or the dataset.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ray_msa.config import ModelConfig, TextConfig, TrainConfig
from ray_msa.data.dataset import MSADataset
from ray_msa.models import get_spec
from ray_msa.models.spec import ModelSpec


@dataclass(frozen=True)
class TrialConfig:
    arch: str
    model: ModelConfig
    train: TrainConfig = field(default_factory=TrainConfig)
    text: TextConfig = field(default_factory=TextConfig)
    modalities: tuple[str, ...] = ()  # the modalities the model is given (an ablation's subset); () all

    def restrict(self, dataset: MSADataset) -> MSADataset:
        """The dataset as this trial sees it: only its modalities' arrays."""
        return dataset.only(self.modalities) if self.modalities else dataset

    @property
    def spec(self) -> ModelSpec:
        return get_spec(self.arch)

    def with_train(self, **changes: Any) -> TrialConfig:
        return replace(self, train=self.train.replace(**changes))

    def with_model(self, **changes: Any) -> TrialConfig:
        return replace(self, model=self.model.replace(**changes))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: {"arch", "model", "train", "text"[, "modalities"]}; `from_dict` reads it back."""
        out = {
            "arch": self.arch,
            "model": self.model.to_dict(),
            "train": self.train.to_dict(),
            "text": self.text.to_dict(),
        }
        if self.modalities:
            out["modalities"] = list(self.modalities)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrialConfig:
        spec = get_spec(data["arch"])
        return cls(
            data["arch"],
            spec.config.from_mapping(data.get("model", {})),
            TrainConfig.from_mapping(data.get("train", {})),
            TextConfig.from_mapping(data.get("text", {})),
            tuple(data.get("modalities", ())),
        )

    def params(self) -> dict[str, Any]:
        """Flat `section.key` parameters for MLflow."""
        out = {
            f"{section}.{k}": v
            for section, values in self.to_dict().items()
            if section not in ("arch", "modalities")
            for k, v in values.items()
        }
        if self.modalities:
            out["data.modalities"] = "+".join(self.modalities)
        return out


@dataclass(frozen=True)
class RunContext:
    """Where a run records itself and what it runs on; not part of the configuration."""

    tracking_uri: str | None = None
    study_run_id: str | None = None
    trial_run_id: str | None = None
    trial_name: str = "trial"
    dataset_ref: list | None = None  # [ObjectRef] of the dataset (a list, so Tune passes the ref itself)
    threads: int = 1  # torch threads per worker
