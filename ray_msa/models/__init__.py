"""Architectures by name. Adding one means a file here and a line in ARCHITECTURES."""

from __future__ import annotations

from typing import Any

from ray_msa.models.base import ModelOutput, MSAModel
from ray_msa.models.mtl import MultiTaskSequentialModel

ARCHITECTURES: dict[str, type[MSAModel]] = {
    "mtl": MultiTaskSequentialModel,
}


def build_model(arch: str, modalities: tuple[str, ...], feature_dims: dict[str, int], config: dict[str, Any]) -> MSAModel:
    """Instantiate architecture `arch` from a flat hyperparameter dict."""
    if arch not in ARCHITECTURES:
        raise KeyError(f"unknown architecture '{arch}'; known: {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[arch](modalities=modalities, feature_dims=feature_dims, **config)


__all__ = ["ARCHITECTURES", "ModelOutput", "MSAModel", "build_model"]
