"""Typed settings: how a trial trains (`TrainConfig`), what text it reads (`TextConfig`), and
the base type of every architecture's hyperparameters (`ModelConfig`, one subclass beside each
model).

Every setting is checked when its dataclass is built: an unknown key (with the closest known
one as the fix), a wrong type, a value outside its domain. A space file, the flags and a stored
run are all read through `from_mapping`, so a misspelt `dropuot` stops the driver with one line
before Ray starts instead of failing inside every worker.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import numbers
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar

from ray_msa.metrics import ALL_METRICS

S = TypeVar("S", bound="Settings")
OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("constant", "linear", "cosine")
ENGINES = ("ddp", "deepspeed")
TEXT_MODES = ("frozen", "finetune", "features")


class ConfigError(ValueError):
    """A setting that cannot be used: `key` (dotted: `model.heads`), what is wrong, the fix."""

    def __init__(self, key: str, problem: str, fix: str) -> None:
        self.key, self.problem, self.fix = key, problem, fix
        super().__init__(f"{key}: {problem}. Fix: {fix}")


def closest(name: str, known: typing.Iterable[str]) -> str:
    """'did you mean ...' for a misspelt key, else the list of known ones."""
    known = sorted(known)
    match = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f"did you mean '{match[0]}'?" if match else f"use one of {', '.join(known)}"


def _coerce(key: str, value: Any, kind: Any) -> Any:
    """`value` as type `kind` (int, float, bool, str, a Literal, or X | None), or ConfigError."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(key, value, inner)
    if origin is Literal:
        if value not in args:
            raise ConfigError(key, f"{value!r} is not allowed", f"use one of {', '.join(map(str, args))}")
        return value
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(key, f"expected true or false, got {value!r}", "write true or false")
    if kind is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(key, f"expected a whole number, got {value!r}", "write an integer such as 4")
    if kind is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(key, f"expected a number, got {value!r}", "write a number such as 0.1 or 1.0e-3")
    if kind is str:
        if isinstance(value, str):
            return value
        raise ConfigError(key, f"expected text, got {value!r}", "write a name")
    raise TypeError(f"{key}: unsupported setting type {kind}")


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


@dataclass(frozen=True)
class Settings:
    """Base of the typed settings: built from a mapping with every key and value checked."""

    section: ClassVar[str] = "settings"  # how keys are named in errors: `<section>.<key>`

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_mapping(cls: type[S], values: Mapping[str, Any]) -> S:
        hints = _type_hints(cls)
        kwargs = {}
        for key, value in values.items():
            if key not in hints or key not in cls.keys():
                raise ConfigError(f"{cls.section}.{key}", "unknown setting", closest(key, cls.keys()))
            kwargs[key] = _coerce(f"{cls.section}.{key}", value, hints[key])
        return cls(**kwargs)

    def replace(self: S, **changes: Any) -> S:
        """A copy with `changes`, checked like a new one."""
        return type(self).from_mapping({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def require(self, ok: bool, key: str, problem: str, fix: str) -> None:
        if not ok:
            raise ConfigError(f"{self.section}.{key}", problem, fix)

    def at_least(self, minimum: float, *keys: str) -> None:
        for key in keys:
            value = getattr(self, key)
            self.require(value >= minimum, key, f"{value} is below {minimum}", f"use {minimum} or more")

    def positive(self, *keys: str) -> None:
        for key in keys:
            value = getattr(self, key)
            self.require(value > 0, key, f"{value} is not positive", "use a value above 0")

    def fraction(self, *keys: str) -> None:
        """Values in [0, 1): dropout rates, warm-up shares."""
        for key in keys:
            value = getattr(self, key)
            self.require(
                0.0 <= value < 1.0, key, f"{value} is outside [0, 1)", "use a value from 0 up to (not including) 1"
            )

    def divides(self, heads_key: str, width: int, width_name: str) -> None:
        heads = getattr(self, heads_key)
        self.require(
            heads >= 1 and width % heads == 0,
            heads_key,
            f"{heads} heads do not divide the width {width_name} = {width}",
            f"use a divisor of {width} "
            f"({', '.join(str(d) for d in range(1, width + 1) if width % d == 0 and d <= 16)})",
        )


@dataclass(frozen=True)
class TrainConfig(Settings):
    """How a trial trains and is judged; the same for every architecture."""

    section: ClassVar[str] = "train"
    max_epochs: int = 12  # per fold; each fold stops early on its validation metric
    patience: int = 3
    batch_size: int = 32
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    momentum: float = 0.9  # SGD only
    lr: float = 1e-3
    lr_schedule: Literal["constant", "linear", "cosine"] = "constant"
    warmup: float = 0.0  # share of the steps spent ramping the rate up (linear, cosine)
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # 0: no clipping
    zero_stage: int = 0  # DeepSpeed ZeRO stage
    checkpoint_every: int = 5  # epochs between Ray Train checkpoints
    metric: str | None = None  # validation metric; None: the dataset's default (MAE, Mean_F1, Acc)
    folds: int = 5
    seed: int = 0
    final: Literal["refit", "ensemble"] = "refit"  # retrained on train+valid, or the K fold models averaged
    final_epochs: int | None = None  # the refit's epochs, set from the best trial's folds
    engine: Literal["ddp", "deepspeed"] = "ddp"
    precision: Literal["fp32", "bf16"] = (
        "fp32"  # bf16: autocast in the DDP engine (DeepSpeed: bf16 on GPUs that have it)
    )
    deepspeed_config: str | None = None  # a DeepSpeed JSON whose "auto" values are filled per trial
    missing_rate: float = 0.0  # train with missing inputs: per sample r ~ U(0, missing_rate), half complete (LNLN)

    def __post_init__(self) -> None:
        self.at_least(1, "max_epochs", "patience", "batch_size", "checkpoint_every")
        self.at_least(2, "folds")
        self.positive("lr")
        self.at_least(0.0, "weight_decay", "grad_clip")
        self.fraction("warmup", "momentum")
        self.require(
            0.0 <= self.missing_rate < 1.0, "missing_rate", f"{self.missing_rate} is not a rate below 1", "use 0 to 0.9"
        )
        self.require(
            0 <= self.zero_stage <= 3, "zero_stage", f"{self.zero_stage} is not a ZeRO stage", "use 0, 1, 2 or 3"
        )
        self.require(
            self.metric is None or self.metric in ALL_METRICS,
            "metric",
            f"unknown metric {self.metric!r}",
            f"use one of {', '.join(ALL_METRICS)}",
        )
        if self.final_epochs is not None:
            self.at_least(1, "final_epochs")


@dataclass(frozen=True)
class TextConfig(Settings):
    """The text input: MiniLM (or `model`) frozen with cached states, fine-tuned inside the
    network, or the text features the source ships."""

    section: ClassVar[str] = "text"
    mode: Literal["frozen", "finetune", "features"] = "frozen"
    model: str = "minilm"

    @property
    def finetune(self) -> bool:
        return self.mode == "finetune"


@dataclass(frozen=True)
class ModelConfig(Settings):
    """Base of an architecture's hyperparameters; each model file defines its own subclass."""

    section: ClassVar[str] = "model"


def check_disjoint(model_configs: typing.Iterable[type[ModelConfig]]) -> None:
    """A search space names settings without their section, so no model setting may share a
    name with a training or text setting."""
    reserved = set(TrainConfig.keys())
    for config in model_configs:
        clash = reserved & set(config.keys())
        if clash:
            raise TypeError(f"{config.__name__} reuses training setting names {sorted(clash)}")
