"""Read `tune_spaces/<arch>.yaml` into fixed settings and a Ray Tune search space
(`tune_spaces/mvsa.yaml` for the image+text classifier, which only MVSA-style data uses)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from ray import tune

from ray_msa.errors import InputError
from ray_msa.train.engine import SCHEDULES

SPACES_DIR = Path(__file__).resolve().parent.parent / "tune_spaces"
DISTRIBUTIONS = {
    "uniform": lambda a: tune.uniform(*a),
    "loguniform": lambda a: tune.loguniform(*a),
    "choice": lambda a: tune.choice(list(a)),
    "randint": lambda a: tune.randint(*a),
}
FILE_NAMES = {"image_text": "mvsa"}


def space_path(arch: str, explicit: str | Path | None = None) -> Path:
    if explicit:
        return Path(explicit)
    arch = FILE_NAMES.get(arch, arch)
    for base in (Path.cwd() / "tune_spaces", SPACES_DIR):
        if (base / f"{arch}.yaml").is_file():
            return base / f"{arch}.yaml"
    return SPACES_DIR / f"{arch}.yaml"


def load_space(arch: str, explicit: str | Path | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(fixed settings, Tune search space) for an architecture."""
    path = space_path(arch, explicit)
    if not path.is_file():
        raise InputError(path, "search space", "file not found", f"write tune_spaces/{arch}.yaml or pass --space FILE")
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise InputError(path, "yaml", f"not valid YAML ({str(err).splitlines()[0]})", "fix the syntax") from None
    if (
        not isinstance(spec, dict)
        or not isinstance(spec.get("space", {}), dict)
        or not isinstance(spec.get("fixed", {}), dict)
    ):
        raise InputError(path, "top level", "expected mappings 'fixed' and 'space'", "see tune_spaces/mtl.yaml")
    space = {}
    for name, value in (spec.get("space") or {}).items():
        if isinstance(value, dict):
            if len(value) != 1 or next(iter(value)) not in DISTRIBUTIONS:
                raise InputError(
                    path, f"space.{name}", f"unknown distribution {value}", f"use one of {sorted(DISTRIBUTIONS)}"
                )
            kind, args = next(iter(value.items()))
            try:
                space[name] = DISTRIBUTIONS[kind](args)
            except (TypeError, ValueError) as err:
                raise InputError(
                    path, f"space.{name}", f"bad arguments {args!r} ({err})", "give [low, high] or a list of values"
                ) from None
        else:
            space[name] = value
    fixed = dict(spec.get("fixed") or {})
    if fixed.get("lr_schedule", "constant") not in SCHEDULES:
        raise InputError(
            path, "fixed.lr_schedule", f"unknown schedule {fixed['lr_schedule']!r}", f"use one of {list(SCHEDULES)}"
        )
    return fixed, space


def load_start(arch: str, explicit: str | Path | None = None) -> list[dict[str, Any]]:
    """The optional `start:` of the space file, a mapping or a list of them: the first
    configurations the search evaluates (cheap, known-good ones, so ASHA has a yardstick
    from the first trials; one per encoder where encoders want different rates)."""
    path = space_path(arch, explicit)
    spec = yaml.safe_load(path.read_text()) or {} if path.is_file() else {}
    start = spec.get("start") if isinstance(spec, dict) else None
    starts = [start] if isinstance(start, dict) else start or []
    if not isinstance(starts, list) or not all(isinstance(s, dict) for s in starts):
        raise InputError(
            path,
            "start",
            "expected a mapping of hyperparameter values, or a list of them",
            "write start: {name: value, ...} or remove it",
        )
    return starts
