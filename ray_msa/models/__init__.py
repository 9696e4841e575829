"""Architectures by name. Adding one means a file here and a line in ARCHITECTURES."""

from __future__ import annotations

from typing import Any

from ray_msa.errors import InputError
from ray_msa.models.awf import AdaptiveWeightFusion
from ray_msa.models.base import ModelOutput, MSAModel
from ray_msa.models.cenet import CENet
from ray_msa.models.image_text import ImageTextClassifier
from ray_msa.models.lf_dnn import LateFusionDNN
from ray_msa.models.lf_lstm import LateFusionLSTM
from ray_msa.models.lmf import LowRankMultimodalFusion
from ray_msa.models.mtl import MultiTaskSequentialModel
from ray_msa.models.mult import MultimodalTransformer
from ray_msa.models.tfn import TensorFusionNetwork

ARCHITECTURES: dict[str, type[MSAModel]] = {
    "mtl": MultiTaskSequentialModel,
    "awf": AdaptiveWeightFusion,
    "cenet": CENet,
    "mult": MultimodalTransformer,
    "tfn": TensorFusionNetwork,
    "lmf": LowRankMultimodalFusion,
    "lf_dnn": LateFusionDNN,
    "lf_lstm": LateFusionLSTM,
    "image_text": ImageTextClassifier,
}
OUTPUTS = {"score": 1, "emotions": 8, "classes": 3}  # head width per task
TASK_WORDS = {
    "score": "a sentiment score",
    "emotions": "IEMOCAP's four emotions",
    "classes": "positive/neutral/negative classes",
}


def build_model(
    arch: str, modalities: tuple[str, ...], feature_dims: dict[str, int], config: dict[str, Any], task: str = "score"
) -> MSAModel:
    """Instantiate architecture `arch` from a flat hyperparameter dict, with the head `task` needs."""
    if arch not in ARCHITECTURES:
        raise KeyError(f"unknown architecture '{arch}'; known: {sorted(ARCHITECTURES)}")
    check_task(arch, task)
    if task != "score":
        config = {**config, "outputs": OUTPUTS[task]}
    return ARCHITECTURES[arch](modalities=modalities, feature_dims=feature_dims, **config)


def check_task(arch: str, task: str) -> None:
    """Refuse an architecture whose head cannot predict `task` (e.g. mtl for IEMOCAP's emotions)."""
    if task not in ARCHITECTURES[arch].tasks:
        able = sorted(n for n, cls in ARCHITECTURES.items() if task in cls.tasks)
        raise InputError("--arch", arch, f"cannot predict {TASK_WORDS[task]}", f"use one of {', '.join(able)}")


__all__ = ["ARCHITECTURES", "OUTPUTS", "ModelOutput", "MSAModel", "build_model", "check_task"]
