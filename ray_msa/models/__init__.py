"""Architectures by name. Adding one means a file here and a line in ARCHITECTURES."""

from __future__ import annotations

import inspect
from typing import Any

from ray_msa.errors import InputError
from ray_msa.models.awf import AdaptiveWeightFusion
from ray_msa.models.base import ModelOutput, MSAModel
from ray_msa.models.cenet import CENet
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
}


def build_model(arch: str, modalities: tuple[str, ...], feature_dims: dict[str, int], config: dict[str, Any], outputs: int = 1) -> MSAModel:
    """Instantiate architecture `arch` from a flat hyperparameter dict; `outputs` 8 for emotions."""
    if arch not in ARCHITECTURES:
        raise KeyError(f"unknown architecture '{arch}'; known: {sorted(ARCHITECTURES)}")
    check_outputs(arch, outputs)
    if outputs != 1:
        config = {**config, "outputs": outputs}
    return ARCHITECTURES[arch](modalities=modalities, feature_dims=feature_dims, **config)


def check_outputs(arch: str, outputs: int) -> None:
    """Only architectures whose head takes `outputs` can classify IEMOCAP's emotions."""
    def capable(name: str) -> bool:
        return "outputs" in inspect.signature(ARCHITECTURES[name]).parameters

    if outputs != 1 and not capable(arch):
        raise InputError("--arch", arch, "predicts one sentiment score and cannot classify emotions",
                         f"use one of {', '.join(sorted(n for n in ARCHITECTURES if capable(n)))}")


__all__ = ["ARCHITECTURES", "ModelOutput", "MSAModel", "build_model", "check_outputs"]
