"""Search-space files (`ray_msa/spaces/<arch>.yaml`, or `--space FILE`) and the one builder of
trial configurations.

A file has up to five sections: `train` (TrainConfig settings every trial shares), `model`
(the architecture's fixed hyperparameters), `study` (settings of the study itself, such as
`time_budget_min`), `space` (what Optuna samples: `{choice: [...]}`, `{uniform: [lo, hi]}`,
`{loguniform: [lo, hi]}`, `{randint: [lo, hi)}` or a plain value) and `start` (configurations
the search evaluates first). A space entry names a training or model setting without its
section. `load_space` checks all of it when the file is read, including every combination of
the sampled choices and the ends of every range, so no trial can fail on its configuration
inside a Ray worker; `SpaceFile.build` turns the file, flags and sampled values into a
`TrialConfig` for tune, ablate, the bench scripts and the tests alike.
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from ray_msa.config import ConfigError, Settings, TextConfig, TrainConfig, closest
from ray_msa.data.dataset import MSADataset
from ray_msa.errors import InputError
from ray_msa.metrics import DEFAULT_METRIC, METRIC_SETS
from ray_msa.models import get_spec
from ray_msa.trial import TrialConfig

SPACES_DIR = Path(__file__).resolve().parent / "spaces"
SECTIONS = ("train", "model", "study", "space", "start", "datasets")
OVERRIDABLE = ("train", "model", "study", "space", "start")  # what a `datasets: {name: ...}` entry may set
DISTRIBUTIONS = ("choice", "uniform", "loguniform", "randint")
MAX_COMBINATIONS = 4096  # sampled choices checked together; beyond this, one setting at a time


@dataclass(frozen=True)
class StudyDefaults(Settings):
    """Settings of a whole study that a space file may give (flags override them)."""

    section: ClassVar[str] = "study"
    time_budget_min: float | None = None  # stop tuning after this long, then retrain the best trial

    def __post_init__(self) -> None:
        if self.time_budget_min is not None:
            self.positive("time_budget_min")


def default_space_path(arch: str) -> Path:
    return SPACES_DIR / get_spec(arch).space


def _representatives(name: str, entry: Any) -> list[Any]:
    """Values that stand for a space entry when the file is checked: every choice, both ends of a range."""
    if not isinstance(entry, dict):
        return [entry]
    kind, args = next(iter(entry.items()))
    if kind == "choice":
        return list(args)
    low, high = args
    return [low, high - 1] if kind == "randint" else [low, high]


def _check_distribution(path: Path, name: str, entry: Any) -> None:
    if not isinstance(entry, dict):
        return
    if len(entry) != 1 or next(iter(entry)) not in DISTRIBUTIONS:
        raise InputError(
            path, f"space.{name}", f"unknown distribution {entry}", f"use one of {', '.join(DISTRIBUTIONS)}"
        )
    kind, args = next(iter(entry.items()))
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise InputError(
                path, f"space.{name}", f"choice needs a list of values, got {args!r}", "write {choice: [a, b]}"
            )
        return
    numeric = isinstance(args, list) and len(args) == 2 and all(isinstance(a, numbers.Real) for a in args)
    if not numeric or not args[0] < args[1] or (kind == "loguniform" and args[0] <= 0):
        positive = " above 0" if kind == "loguniform" else ""
        raise InputError(
            path, f"space.{name}", f"bad {kind} bounds {args!r}", f"give [low, high] with low < high{positive}"
        )
    if kind == "randint" and not all(isinstance(a, numbers.Integral) for a in args):
        raise InputError(
            path, f"space.{name}", f"randint needs whole bounds, got {args!r}", "give [low, high) as integers"
        )


@dataclass(frozen=True)
class SpaceFile:
    path: Path
    arch: str
    train: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    study: StudyDefaults = field(default_factory=StudyDefaults)
    space: dict[str, Any] = field(default_factory=dict)  # name -> {distribution: args} or a fixed value
    start: list[dict[str, Any]] = field(default_factory=list)

    def section_of(self, key: str) -> str | None:
        if key in TrainConfig.keys():
            return "train"
        if key in get_spec(self.arch).config.keys():
            return "model"
        return None

    def build(
        self,
        sampled: Mapping[str, Any] | None = None,
        flags: Mapping[str, Any] | None = None,
        text: TextConfig = TextConfig(),
        dataset: MSADataset | None = None,
    ) -> TrialConfig:
        """The trial configuration: the file's train/model sections, then `sampled` values (a
        Tune trial's config, a start entry), then `flags` (training settings from the command
        line). With `dataset`, an unset metric becomes the dataset's default, and a metric the
        dataset does not report is refused."""
        sections: dict[str, dict[str, Any]] = {"train": dict(self.train), "model": dict(self.model)}
        for source, values in (("space", sampled or {}), ("flag", flags or {})):
            for key, value in values.items():
                section = self.section_of(key)
                if section is None:
                    known = (*TrainConfig.keys(), *get_spec(self.arch).config.keys())
                    raise InputError(
                        self.path,
                        f"{source} {key}",
                        "not a setting of training or of this architecture",
                        closest(key, known),
                    )
                sections[section][key] = value
        if dataset is not None:
            metric = sections["train"].setdefault("metric", None) or DEFAULT_METRIC[dataset.metric_set]
            if metric not in METRIC_SETS[dataset.metric_set]:
                where = "--metric" if "metric" in (flags or {}) else self.path
                known = ", ".join(METRIC_SETS[dataset.metric_set])
                raise InputError(where, "metric", f"{metric} is not a metric of {dataset.name}", f"use one of {known}")
            sections["train"]["metric"] = metric
        try:
            train = TrainConfig.from_mapping(sections["train"])
            model = get_spec(self.arch).config.from_mapping(sections["model"])
        except ConfigError as err:
            raise InputError(self.path, err.key, err.problem, err.fix) from None
        return TrialConfig(self.arch, model, train, text)

    def tune_space(self) -> dict[str, Any]:
        """The `space` section as Ray Tune distributions, in file order (Optuna samples in that order)."""
        from ray import tune  # heavy: only a study needs Tune, not checking a file

        make = {
            "uniform": lambda a: tune.uniform(*a),
            "loguniform": lambda a: tune.loguniform(*a),
            "choice": lambda a: tune.choice(list(a)),
            "randint": lambda a: tune.randint(*a),
        }
        out = {}
        for name, entry in self.space.items():
            out[name] = make[next(iter(entry))](next(iter(entry.values()))) if isinstance(entry, dict) else entry
        return out

    def optuna_distributions(self) -> dict[str, Any]:
        """The sampled settings as Optuna distributions (what TPE sampled from), for Optuna's plots."""
        import optuna  # only a study's plots need it

        make = {
            "uniform": lambda a: optuna.distributions.FloatDistribution(*a),
            "loguniform": lambda a: optuna.distributions.FloatDistribution(*a, log=True),
            "choice": lambda a: optuna.distributions.CategoricalDistribution(list(a)),
            "randint": lambda a: optuna.distributions.IntDistribution(a[0], a[1] - 1),  # Tune's high is exclusive
        }
        return {n: make[next(iter(e))](next(iter(e.values()))) for n, e in self.space.items() if isinstance(e, dict)}

    def start_for(self, **match: Any) -> dict[str, Any]:
        """The first start configuration whose entries match `match` (e.g. encoder='scratch'), else the first."""
        found = [s for s in self.start if all(s.get(k) == v for k, v in match.items())]
        return dict((found or self.start or [{}])[0])

    def check(self) -> None:
        """Every combination of sampled choices, with every range at its low and then at its high
        end, builds a valid trial (e.g. heads that divide every sampled width)."""
        ranges = [n for n, e in self.space.items() if isinstance(e, dict) and next(iter(e)) != "choice"]
        choices = [n for n in self.space if n not in ranges]
        options = [_representatives(n, self.space[n]) for n in choices]
        ends = [{n: _representatives(n, self.space[n])[end] for n in ranges} for end in (0, -1)]
        if 2 * math.prod(len(o) for o in options) <= MAX_COMBINATIONS:
            combinations = ({**dict(zip(choices, values)), **e} for values in itertools.product(*options) for e in ends)
        else:  # one setting at a time, the others at their first value
            first = {**{n: o[0] for n, o in zip(choices, options)}, **ends[0]}
            combinations = ({**first, n: v} for n in self.space for v in _representatives(n, self.space[n]))
        for combination in combinations:
            try:
                self.build(combination)
            except InputError as err:
                key = err.field.split(".", 1)[-1]
                if key in self.space:
                    raise InputError(self.path, f"space.{key}", err.problem, err.fix) from None
                raise
        for i, entry in enumerate(self.start):
            try:
                self.build(entry)
            except InputError as err:
                raise InputError(self.path, f"start[{i}].{err.field.split('.', 1)[-1]}", err.problem, err.fix) from None


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InputError(path, "search space", "file not found", "pass --space FILE with an existing file")
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise InputError(path, "yaml", f"not valid YAML ({str(err).splitlines()[0]})", "fix the syntax") from None
    if not isinstance(spec, dict):
        raise InputError(
            path, "top level", "expected a mapping with train, model, space", "see ray_msa/spaces/mtl.yaml"
        )
    return spec


def _sorted_keys(path: Path, arch: str, spec: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The train and model sections, each key checked to belong where it stands."""
    train_keys, model_keys = set(TrainConfig.keys()), set(get_spec(arch).config.keys())
    if "fixed" in spec:  # the layout before train/model sections
        fixed = spec["fixed"] if isinstance(spec["fixed"], dict) else {}
        to_train = [k for k in fixed if k in train_keys]
        to_model = [k for k in fixed if k not in train_keys and k != "time_budget_min"]
        moves = [
            f"train: ({', '.join(to_train)})" if to_train else "",
            f"model: ({', '.join(to_model)})" if to_model else "",
        ]
        budget = "; time_budget_min goes under study:" if "time_budget_min" in fixed else ""
        raise InputError(
            path,
            "fixed",
            "the old flat layout: 'fixed' mixes training and model settings",
            f"split it into {' and '.join(m for m in moves if m) or 'train: and model:'}{budget}",
        )
    unknown = [k for k in spec if k not in SECTIONS]
    if unknown:
        raise InputError(path, unknown[0], "not a section of a space file", closest(unknown[0], SECTIONS))
    sections = {}
    for name, own, other, other_name in (
        ("train", train_keys, model_keys, "model"),
        ("model", model_keys, train_keys, "train"),
    ):
        values = spec.get(name) or {}
        if not isinstance(values, dict):
            raise InputError(
                path, name, f"expected a mapping of settings, got {values!r}", f"write {name}: {{key: value}}"
            )
        for key in values:
            if key in other:
                where = f"a {other_name} setting" + (f" of {arch}" if other_name == "model" else "")
                raise InputError(path, f"{name}.{key}", f"{where}, not a {name} one", f"move {key} under {other_name}:")
            if key not in own:
                raise InputError(path, f"{name}.{key}", "unknown setting", closest(key, own))
        sections[name] = dict(values)
    return sections["train"], sections["model"]


def for_dataset(path: Path, spec: dict[str, Any], dataset: str | None) -> dict[str, Any]:
    """The file as `dataset` sees it: its `datasets: {name: {section: ...}}` entry merged over
    the rest (settings replace settings; a `start` replaces the start list)."""
    overrides = spec.get("datasets") or {}
    if not isinstance(overrides, dict) or not all(isinstance(v, dict) for v in overrides.values()):
        raise InputError(path, "datasets", "expected {dataset: {train: ..., model: ..., start: ...}}", "fix the layout")
    for name, entry in overrides.items():
        wrong = [k for k in entry if k not in OVERRIDABLE]
        if wrong:
            raise InputError(path, f"datasets.{name}.{wrong[0]}", "not a section", closest(wrong[0], OVERRIDABLE))
    merged = {k: v for k, v in spec.items() if k != "datasets"}
    for section, values in (overrides.get(dataset) or {}).items():
        if section == "start" or not isinstance(values, dict):
            merged[section] = values
        else:
            merged[section] = {**(merged.get(section) or {}), **values}
    return merged


def load_space(arch: str, explicit: str | Path | None = None, dataset: str | None = None) -> SpaceFile:
    """The architecture's search space (the shipped one unless `explicit`) as `dataset` sees
    it, checked in full; every dataset's entry is checked too, so none fails later."""
    path = Path(explicit) if explicit else default_space_path(arch)
    raw = _read_yaml(path)
    entries = raw.get("datasets") if isinstance(raw.get("datasets"), dict) else {}
    for other in entries:
        if other != dataset:
            _load(path, arch, for_dataset(path, raw, other), f"datasets.{other}")
    return _load(path, arch, for_dataset(path, raw, dataset), f"datasets.{dataset}" if dataset in entries else None)


def _load(path: Path, arch: str, spec: dict[str, Any], entry: str | None) -> SpaceFile:
    try:
        return _check_loaded(path, arch, spec)
    except InputError as err:
        if entry is None or err.field.startswith("datasets"):
            raise
        raise InputError(err.source, f"{err.field} (with {entry})", err.problem, err.fix) from None


def _check_loaded(path: Path, arch: str, spec: dict[str, Any]) -> SpaceFile:
    train, model = _sorted_keys(path, arch, spec)
    try:
        study = StudyDefaults.from_mapping(spec.get("study") or {})
    except ConfigError as err:
        raise InputError(path, err.key, err.problem, err.fix) from None
    space = spec.get("space") or {}
    if not isinstance(space, dict):
        raise InputError(path, "space", "expected a mapping of setting -> distribution", "see ray_msa/spaces/mtl.yaml")
    start = spec.get("start")
    starts = [start] if isinstance(start, dict) else start or []
    if not isinstance(starts, list) or not all(isinstance(s, dict) for s in starts):
        raise InputError(
            path,
            "start",
            "expected a mapping of hyperparameter values, or a list of them",
            "write start: {name: value, ...} or remove it",
        )
    space_file = SpaceFile(path, arch, train, model, study, dict(space), [dict(s) for s in starts])
    for name, entry in space.items():
        if space_file.section_of(name) is None:
            known = (*TrainConfig.keys(), *get_spec(arch).config.keys())
            raise InputError(
                path, f"space.{name}", "not a setting of training or of this architecture", closest(name, known)
            )
        _check_distribution(path, name, entry)
    space_file.check()
    return space_file


def trial_config(arch: str, values: Mapping[str, Any] | None = None, text: TextConfig = TextConfig()) -> TrialConfig:
    """A trial configuration from settings named without their section (no space file: tests,
    notebooks); the same builder and checks as a study's trials."""
    return SpaceFile(Path(f"<{arch} settings>"), arch).build(values, None, text)
