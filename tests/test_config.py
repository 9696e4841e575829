"""Typed configuration: every setting of a space file and the flags is checked when read, on the
driver, before any data is loaded or Ray starts; the one builder resolves file < sampled < flags;
a resolved configuration survives JSON and is what ablate and predict read back."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ray_msa.config import ConfigError, TextConfig, TrainConfig
from ray_msa.errors import InputError
from ray_msa.models import REGISTRY
from ray_msa.models.mtl import MTLConfig
from ray_msa.search_space import load_space, trial_config
from ray_msa.trial import TrialConfig
from ray_msa.tune import main as tune

ROOT = Path(__file__).resolve().parents[1]
GOOD_MTL = (
    "train: {max_epochs: 2, batch_size: 32}\nmodel: {hidden: 100}\nspace: {heads: {choice: [2, 4]}, lr: 1.0e-3}\n"
)

# (space file, the key the error must name, a word of the problem or fix)
BROKEN = {
    "misspelt key": ("model: {hidden: 100, dropuot: 0.3}\n", "model.dropuot", "did you mean 'dropout'"),
    "wrong type": ("train: {max_epochs: twelve}\n", "train.max_epochs", "whole number"),
    "fractional epochs": ("train: {max_epochs: 2.5}\n", "train.max_epochs", "whole number"),
    "heads do not divide the width": (
        "model: {hidden: 100}\nspace: {heads: {choice: [2, 3]}}\n",
        "space.heads",
        "3 heads do not divide the width 2 x hidden = 200",
    ),
    "negative rate": ("space: {lr: {uniform: [-0.1, 0.1]}}\n", "space.lr", "not positive"),
    "dropout of one": ("space: {dropout: {choice: [0.1, 1.0]}}\n", "space.dropout", "outside [0, 1)"),
    "model key under train": ("train: {hidden: 100}\n", "train.hidden", "move hidden under model:"),
    "training key under model": ("model: {lr: 0.001}\n", "model.lr", "move lr under train:"),
    "old flat layout": (
        "fixed: {max_epochs: 12, hidden: 100}\nspace: {lr: 1.0e-3}\n",
        "fixed",
        "split it into train: (max_epochs) and model: (hidden)",
    ),
    "unknown space setting": ("space: {heds: {choice: [2, 4]}}\n", "space.heds", "did you mean 'heads'"),
    "unknown schedule": ("train: {lr_schedule: step}\n", "train.lr_schedule", "constant, linear, cosine"),
    "bad start entry": ("start: {heads: 3}\n", "start[0].heads", "do not divide"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_space_file_exits_2_naming_file_and_key_before_ray(case, tmp_path, capsys, no_ray):
    text, key, words = BROKEN[case]
    space = tmp_path / "broken.yaml"
    space.write_text(text)
    with pytest.raises(SystemExit) as stopped:
        tune(["mosi", "--space", str(space), "--trials", "1", "--tracking-uri", f"sqlite:///{tmp_path / 'db'}"])
    err = capsys.readouterr().err.strip()
    assert stopped.value.code == 2
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"error: {space}: {key}: "), err
    assert words in err, err
    assert not (tmp_path / "db").exists()  # nothing written to MLflow


def test_the_command_line_exits_2_and_starts_no_ray_process(tmp_path):
    """The real command, in a fresh interpreter: Ray's temp folder stays empty."""
    space = tmp_path / "broken.yaml"
    space.write_text(BROKEN["misspelt key"][0])
    env = {**os.environ, "RAY_TMPDIR": str(tmp_path / "ray")}
    done = subprocess.run(
        [sys.executable, "-m", "ray_msa.tune", "mosi", "--space", str(space)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert f"{space}: model.dropuot: unknown setting" in done.stderr
    assert not (tmp_path / "ray").exists()


def test_a_bad_flag_value_names_the_flag(tmp_path, capsys, no_ray):
    with pytest.raises(SystemExit):
        tune(["mosi", "--folds", "1"])
    assert "error: --folds: 1: too small" in capsys.readouterr().err


def test_every_shipped_space_file_is_valid_and_starts_from_a_valid_trial():
    for arch, spec in REGISTRY.items():
        space = load_space(arch)
        assert space.path == ROOT / "ray_msa" / "spaces" / spec.space and space.path.is_file()
        trial = space.build(space.start_for())
        assert isinstance(trial.model, spec.config) and trial.arch == arch


def test_the_builder_takes_the_file_then_sampled_values_then_flags(tmp_path):
    path = tmp_path / "mtl.yaml"
    path.write_text("train: {max_epochs: 7, lr: 1.0e-3, seed: 3}\nmodel: {hidden: 50, ffn: 64}\nspace: {ffn: 128}\n")
    space = load_space("mtl", path)
    trial = space.build({"ffn": 256, "lr": 2.0e-3}, {"seed": 9, "max_epochs": 4}, TextConfig(model="some/lm"))
    assert trial.model == MTLConfig(hidden=50, ffn=256)
    assert (trial.train.lr, trial.train.seed, trial.train.max_epochs) == (2.0e-3, 9, 4)
    assert trial.text == TextConfig(mode="frozen", model="some/lm")
    with pytest.raises(InputError, match=r"mtl.yaml: flag lrr: .*did you mean 'lr'"):
        space.build(None, {"lrr": 0.1})


def test_yaml_one_point_one_exponents_are_read_as_numbers():
    assert TrainConfig.from_mapping({"lr": "1e-3"}).lr == 1e-3  # YAML 1.1 reads 1e-3 (no dot) as a string
    with pytest.raises(ConfigError, match="train.lr: expected a number"):
        TrainConfig.from_mapping({"lr": "fast"})
    with pytest.raises(InputError, match="model.balance: expected true or false"):
        trial_config("lf_dnn", {"balance": "yes"})


def test_a_resolved_configuration_survives_json():
    trial = trial_config(
        "image_text",
        {"encoder": "scratch", "heads": 8, "lr": 3e-4, "final_epochs": 2},
        TextConfig(model="/models/bert"),
    )
    again = TrialConfig.from_dict(json.loads(json.dumps(trial.to_dict())))
    assert again == trial and again.model.encoder == "scratch" and again.text.model == "/models/bert"
    assert trial.params()["model.heads"] == 8 and trial.params()["train.final_epochs"] == 2


def test_no_entry_point_names_an_architecture():
    """Architecture knowledge lives in the registry: nothing else compares an arch name."""
    # a comparison of an arch with a literal name or a literal collection of names
    pattern = re.compile(r"""\barch\w*\s*(==|!=|\bin\b)\s*[("'\[{]|[=!]=\s*["']image_text["']""")
    offenders = []
    for path in [*(ROOT / "ray_msa").rglob("*.py"), *(ROOT / "bench").rglob("*.py")]:
        if path == ROOT / "ray_msa" / "models" / "__init__.py":
            continue
        offenders += [
            f"{path.relative_to(ROOT)}:{i}"
            for i, line in enumerate(path.read_text().splitlines(), 1)
            if pattern.search(line)
        ]
    assert not offenders, offenders
    source = "\n".join(p.read_text() for p in (ROOT / "ray_msa").rglob("*.py"))
    assert not re.search(r"TRAIN_KEYS|FILE_NAMES", source)
