"""Where a default trial's time goes: one trial of an architecture's start configuration (K-fold CV on the
bundled MOSI, as a study's trial trains it, without Ray) sampled by py-spy, grouped into the loop's parts.

    python bench/profile_trial.py                     # mtl, 5 folds, 2 epochs
    python bench/profile_trial.py --arch mult --epochs 1

py-spy (installed with Ray) samples the Python thread 50 times a second; torch's own worker threads are not
counted, so the shares are of the trial's wall time.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

RATE = 50
# (part, frame names that must all be on the stack), first match wins
PARTS = [
    ("imports", ["_find_and_load"]),
    ("train: dropout masks", ["train_epoch", "ropout"]),
    ("train: forward", ["train_epoch", "Engine.forward"]),
    ("train: backward", ["train_epoch", "Engine.backward"]),
    ("train: optimizer step + clipping", ["train_epoch", "Engine.step"]),
    ("train: batches from arrays", ["train_epoch", "batches ("]),
    ("train: other (losses, logging hooks)", ["train_epoch"]),
    ("validation", ["predict_with_extras"]),
    ("fold set-up (model, optimizer)", ["new_engine"]),
    ("best weights kept (deepcopy)", ["deepcopy"]),
    ("data and text preparation", ["prepare_text"]),
]


def trial(arch: str, folds: int, epochs: int) -> None:
    """The measured process: one CV trial, as a study's trial trains it."""
    import torch

    from ray_msa.config import TextConfig
    from ray_msa.data.sources import load_dataset
    from ray_msa.models import get_spec
    from ray_msa.search_space import load_space
    from ray_msa.train.loop import WorkerContext, cross_validate

    torch.set_num_threads(2)  # a default trial's threads on 2 cores
    spec = get_spec(arch)
    text = TextConfig(mode=spec.text_mode("frozen"))
    space = load_space(arch, None, "mosi")
    dataset = spec.prepare_text(load_dataset("mosi", None), text)
    config = space.build(space.start_for(), {"folds": folds, "max_epochs": epochs, "patience": 99}, text, dataset)
    started = time.perf_counter()
    cross_validate(config, dataset, lambda metrics, state: None, WorkerContext())
    print(f"{arch}: {folds} folds x {epochs} epochs in {time.perf_counter() - started:.1f} s")


def parts(profile: Path) -> tuple[int, Counter]:
    """Samples in total and per part of a py-spy raw (collapsed stacks) profile."""
    total, found = 0, Counter()
    for line in profile.read_text().splitlines():
        stack, count = line.rsplit(" ", 1)
        total += int(count)
        name = next((p for p, needles in PARTS if all(n in stack for n in needles)), "other")
        found[name] += int(count)
    return total, found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="mtl")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--measured", action="store_true", help=argparse.SUPPRESS)  # the process py-spy runs
    args = parser.parse_args()
    if args.measured:
        trial(args.arch, args.folds, args.epochs)
        return
    with tempfile.TemporaryDirectory() as tmp:
        profile = Path(tmp) / "profile.txt"
        command = [sys.executable, __file__, "--measured", "--arch", args.arch, "--folds", str(args.folds)]
        spy = ["py-spy", "record", "-r", str(RATE), "-f", "raw", "-o", str(profile), "--"]
        done = subprocess.run([*spy, *command, "--epochs", str(args.epochs)], capture_output=True, text=True)
        print(done.stdout.strip())
        if done.returncode != 0:
            sys.exit(done.stderr[-2000:])
        total, found = parts(profile)
    print(f"{total / RATE:.1f} s sampled\n\n| part | seconds | share |\n|---|---|---|")
    for name, count in found.most_common():
        print(f"| {name} | {count / RATE:.1f} | {100 * count / total:.1f}% |")


if __name__ == "__main__":
    main()
