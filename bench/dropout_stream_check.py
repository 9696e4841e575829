"""Does the dropout mask's random stream change results beyond seed noise? mtl's paper setting retrained on
train+valid for 5 epochs and tested once, per seed, with nn.Dropout's `bernoulli_` masks and with the models'
15-bit masks (everything else equal, fused Adam in both).

    python bench/dropout_stream_check.py 4        # seeds 0-3 of each; about 4 minutes on 2 cores
"""

import os
import sys

os.environ["HF_HUB_OFFLINE"] = "1"
import numpy as np
import torch
from torch import nn

from ray_msa.config import TextConfig
from ray_msa.data.sources import load_dataset
from ray_msa.models import layers
from ray_msa.search_space import load_space
from ray_msa.train.loop import WorkerContext, run_final_training

torch.set_num_threads(2)
space = load_space("mtl", None, "mosi")
ds = space.build(space.start_for()).spec.prepare_text(load_dataset("mosi", None), TextConfig())
ours = layers.Dropout.forward
out = {}
for name, forward in (("bernoulli_", nn.Dropout.forward), ("15-bit mask", ours)):
    layers.Dropout.forward = forward
    maes = []
    for seed in range(int(sys.argv[1])):
        trial = space.build(space.start_for(), {"seed": seed, "final_epochs": 5, "metric": "MAE"}, TextConfig(), ds)
        test, _, _ = run_final_training(trial, ds, WorkerContext())
        maes.append(test["MAE"])
    out[name] = maes
    print(
        name, " ".join(f"{m:.4f}" for m in maes), f"mean {np.mean(maes):.4f} std {np.std(maes, ddof=1):.4f}", flush=True
    )
