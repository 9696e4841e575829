"""What the registry knows about an architecture (as torchtitan's ModelSpec bundles a model
with what builds it): the class and its config type, the shipped search space, the tasks its
head can predict, the text input it reads, and its named ablation variants. Entry points ask
the spec; none of them names an architecture."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ray_msa.config import ModelConfig, TextConfig
from ray_msa.data.dataset import MSADataset
from ray_msa.data.text import prepare_text
from ray_msa.errors import InputError
from ray_msa.models.base import MSAModel

TASK_WORDS = {
    "score": "a sentiment score",
    "emotions": "IEMOCAP's four emotions",
    "classes": "positive/neutral/negative classes",
}


def text_as_configured(dataset: MSADataset, text: TextConfig) -> MSADataset:
    """Token ids (finetune), cached frozen LM states (frozen) or the source's features."""
    return prepare_text(dataset, text.mode, text.model)


def head_width(dataset: MSADataset) -> int:
    """Outputs the head needs for this dataset: one score, two logits per emotion, or one per class."""
    if dataset.task == "classes":
        return len(dataset.class_names)
    if dataset.task == "emotions":
        return 2 * int(dataset.splits["train"].labels.shape[-1])
    return 1


@dataclass(frozen=True)
class ModelSpec:
    name: str
    model: type[MSAModel]
    config: type[ModelConfig]
    space: str  # the shipped search space: ray_msa/spaces/<space>
    tasks: tuple[str, ...] = ("score", "emotions")
    default_for: tuple[str, ...] = ()  # tasks for which it is the architecture without --arch
    text_modes: tuple[str, ...] = ("frozen", "finetune", "features")  # --text values it accepts; the first is its own
    prepare_text: Callable[[MSADataset, TextConfig], MSADataset] = text_as_configured  # the text input it reads
    variants: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # ablation name -> model settings
    needs: tuple[str, ...] = ()  # modalities it cannot do without (an ablation's subsets keep them)
    modality_subsets: bool = True  # ablate over modality subsets (false where its variants already are)

    def build(
        self,
        modalities: tuple[str, ...],
        feature_dims: dict[str, int],
        config: ModelConfig | Mapping[str, Any] | None = None,
        text: TextConfig = TextConfig(),
        outputs: int = 1,
    ) -> MSAModel:
        """The network; `config` a typed config or a mapping of its settings (checked)."""
        if not isinstance(config, ModelConfig):
            config = self.config.from_mapping(config or {})
        return self.model(modalities, feature_dims, config, text, outputs)

    def for_dataset(self, dataset: MSADataset, config: ModelConfig, text: TextConfig) -> MSAModel:
        """The network for `dataset`: its modalities, feature widths and head width."""
        if dataset.task not in self.tasks:
            raise InputError(
                "--arch", self.name, f"cannot predict {TASK_WORDS[dataset.task]}", "use an architecture that can"
            )
        return self.build(dataset.modalities, dataset.feature_dims(), config, text, head_width(dataset))

    def text_mode(self, requested: str) -> str:
        return requested if requested in self.text_modes else self.text_modes[0]
