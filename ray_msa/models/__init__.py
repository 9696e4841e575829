"""The architectures by name. Adding one means a file here (a model and its config type), a
`ModelSpec` line in REGISTRY and a search space in ray_msa/spaces/; the loop does not change."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ray_msa.config import ModelConfig, TextConfig, check_disjoint
from ray_msa.data.dataset import MSADataset
from ray_msa.data.text import prepare_post_text
from ray_msa.errors import InputError
from ray_msa.models.awf import AdaptiveWeightFusion, AWFConfig
from ray_msa.models.base import ModelOutput, MSAModel
from ray_msa.models.cenet import CENet, CENetConfig
from ray_msa.models.image_text import TEXT_TOP_LAYERS, ImageTextClassifier, ImageTextConfig
from ray_msa.models.lf_dnn import LateFusionConfig, LateFusionDNN
from ray_msa.models.lf_lstm import LateFusionLSTM
from ray_msa.models.lmf import LMFConfig, LowRankMultimodalFusion
from ray_msa.models.mtl import MTLConfig, MultiTaskSequentialModel
from ray_msa.models.mult import MulTConfig, MultimodalTransformer
from ray_msa.models.spec import TASK_WORDS, ModelSpec, head_width
from ray_msa.models.tfn import TensorFusionNetwork, TFNConfig


def _post_text(dataset: MSADataset, text: TextConfig) -> MSADataset:
    """image_text reads token ids and the LM's states below the top layers it holds, whatever --text says."""
    return prepare_post_text(dataset, text.model, TEXT_TOP_LAYERS)


B_FUSION_SWITCH = {"bfusion_on": {"balance": True}, "bfusion_off": {"balance": False}}
REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "mtl",
            MultiTaskSequentialModel,
            MTLConfig,
            "mtl.yaml",
            tasks=("score",),
            default_for=("score",),
            variants={  # paper Table 5: each switches one part of the full model off
                "no_polarity": {"polarity_task": False},
                "no_intensity": {"intensity_task": False},
                "no_aux_tasks": {"polarity_task": False, "intensity_task": False},
                "no_cross_shared": {"cross_shared": False},
                "no_unimodal_shared": {"unimodal_shared": False},
                "no_cnn": {"cnn": False},
                "no_bigru": {"bigru": False},
                "no_unimodal_attention": {"unimodal_attention": False},
                "no_cross_attention": {"cross_attention": False},
            },
        ),
        ModelSpec(
            "awf",
            AdaptiveWeightFusion,
            AWFConfig,
            "awf.yaml",
            variants={  # paper 001 Tables 8-10
                "no_bfusion": {"bfusion": False},
                "no_afusion": {"afusion": False},
                "afusion_frozen": {"afusion_frozen": True},
            },
        ),
        ModelSpec(
            "cenet",
            CENet,
            CENetConfig,
            "cenet.yaml",
            text_modes=("finetune",),
            variants={"no_ce": {"ce_module": False}},
            needs=("text",),
        ),
        ModelSpec("mult", MultimodalTransformer, MulTConfig, "mult.yaml", default_for=("emotions",)),  # MulT: IEMOCAP
        ModelSpec("tfn", TensorFusionNetwork, TFNConfig, "tfn.yaml"),
        ModelSpec("lmf", LowRankMultimodalFusion, LMFConfig, "lmf.yaml"),
        *(  # paper 001 Table 3: B-fusion added to existing models
            ModelSpec(name, model, LateFusionConfig, f"{name}.yaml", variants=B_FUSION_SWITCH)
            for name, model in (("lf_dnn", LateFusionDNN), ("lf_lstm", LateFusionLSTM))
        ),
        ModelSpec(
            "image_text",
            ImageTextClassifier,
            ImageTextConfig,
            "image_text.yaml",
            tasks=("classes",),
            default_for=("classes",),
            text_modes=("frozen",),
            prepare_text=_post_text,
            variants={"image+text": {"use": "image+text"}, "image": {"use": "image"}, "text": {"use": "text"}},
            modality_subsets=False,
        ),
    )
}
check_disjoint(spec.config for spec in REGISTRY.values())


def get_spec(arch: str) -> ModelSpec:
    """The spec of `arch`, or the one-line error that lists the known ones."""
    if arch not in REGISTRY:
        raise InputError("--arch", arch, "unknown architecture", f"use one of {', '.join(sorted(REGISTRY))}")
    return REGISTRY[arch]


def build_model(
    arch: str,
    modalities: tuple[str, ...],
    feature_dims: dict[str, int],
    config: ModelConfig | Mapping[str, Any] | None = None,
    text: TextConfig = TextConfig(),
    outputs: int = 1,
) -> MSAModel:
    """Architecture `arch` with a typed config (or a mapping of its settings) and `outputs` head units."""
    return get_spec(arch).build(modalities, feature_dims, config, text, outputs)


def check_task(arch: str, task: str) -> None:
    """Refuse an architecture whose head cannot predict `task` (e.g. mtl for IEMOCAP's emotions)."""
    if task not in get_spec(arch).tasks:
        able = sorted(n for n, spec in REGISTRY.items() if task in spec.tasks)
        raise InputError("--arch", arch, f"cannot predict {TASK_WORDS[task]}", f"use one of {', '.join(able)}")


def default_arch(task: str) -> str:
    """The architecture a dataset's task gets without --arch."""
    return next(n for n, spec in REGISTRY.items() if task in spec.default_for)


__all__ = ["REGISTRY", "ModelOutput", "ModelSpec", "MSAModel", "build_model", "check_task", "get_spec", "head_width"]
