"""Training speed of our MulT, TFN, LMF and LF-DNN against MMSA 2.2.1's, side by side in one process.

Each pair trains on the same batches of MOSI-unaligned-shaped synthetic data (text 50 x 768, audio
375 x 5, vision 500 x 20; 1,510 training samples), with MMSA's own MOSI regression configuration read
from its installed `config_regression.json` (batch size, learning rate, widths, dropouts) and ours at
the nearest setting our config types express (printed). TFN, LMF and LF-DNN read audio and vision as
MMSA's loader gives them (`need_normalized`: one averaged vector per sample), so both get those; MulT
reads the sequences, MMSA's at their padded length (as its loader feeds them), ours trimmed to the
batch's longest. One thread count for both, one after the other, after one warm-up batch each.

    pip install --no-deps mmsa==2.2.1 easydict nvidia-ml-py   # the reference, for this script only
    python bench/vs_mmsa.py --batches 24
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ARCHS = ("mult", "tfn", "lmf", "lf_dnn")
MMSA_NAMES = {"mult": "MULT", "tfn": "TFN", "lmf": "LMF", "lf_dnn": "LF_DNN"}


@dataclass
class Pair:
    ours: torch.nn.Module
    theirs: torch.nn.Module
    ours_setting: dict[str, Any]
    batch_size: int
    lr: float
    averaged: bool  # audio and vision as one averaged vector per sample (MMSA's need_normalized)


def mmsa_config(arch: str) -> dict[str, Any]:
    """MMSA's MOSI regression configuration of `arch`, from the installed package."""
    import MMSA

    table = json.loads((Path(MMSA.__file__).parent / "config" / "config_regression.json").read_text())
    entry = table[arch]
    return {**entry["commonParams"], **entry["datasetParams"]["mosi"]}


def mult_setting(cfg: dict[str, Any]) -> dict[str, Any]:
    """MulT: the same network."""
    width, heads = cfg["dst_feature_dim_nheads"]
    return {
        "dim": width,
        "heads": heads,
        "layers": cfg["nlevels"],
        "kernel_text": cfg["conv1d_kernel_size_l"],
        "kernel_audio": cfg["conv1d_kernel_size_a"],
        "kernel_vision": cfg["conv1d_kernel_size_v"],
        "attn_dropout": cfg["attn_dropout"],
        "attn_dropout_audio": cfg["attn_dropout_a"],
        "attn_dropout_vision": cfg["attn_dropout_v"],
        "relu_dropout": cfg["relu_dropout"],
        "res_dropout": cfg["res_dropout"],
        "embed_dropout": cfg["embed_dropout"],
        "out_dropout": cfg["output_dropout"],
    }


def tfn_setting(cfg: dict[str, Any]) -> dict[str, Any]:
    """The fusion tensor dominates: MMSA's (text_out+1)(audio+1)(video+1) = 33 x 33 x 129; ours has one width for
    audio and vision, 64: 33 x 65 x 65, within 1% of its size; our text LSTM is text_out wide."""
    return {
        "text_hidden": cfg["text_out"],
        "av_hidden": 64,
        "post_fusion": cfg["post_fusion_dim"],
        "dropout": cfg["dropouts"][0],
    }


def lmf_setting(cfg: dict[str, Any]) -> dict[str, Any]:
    """MMSA fuses straight to the output (output_dim 1); its text LSTM is 128 wide, projected to 64."""
    text_hidden = cfg["hidden_dims"][0]
    return {
        "text_hidden": text_hidden // 2,
        "av_hidden": 64,
        "rank": cfg["rank"],
        "fusion_dim": 1,
        "dropout": cfg["dropouts"][0],
    }


def lf_dnn_setting(cfg: dict[str, Any]) -> dict[str, Any]:
    """MMSA reads text with an LSTM (128) projected to 256; ours pools text like audio and vision."""
    return {"hidden": 128, "post_fusion": cfg["post_fusion_dim"], "dropout": cfg["dropouts"][0]}


OUR_SETTING = {"mult": mult_setting, "tfn": tfn_setting, "lmf": lmf_setting, "lf_dnn": lf_dnn_setting}


def build_pair(arch: str, dims: dict[str, int]) -> Pair:
    """MMSA's model at its MOSI configuration and ours at the nearest one."""
    from easydict import EasyDict
    from MMSA.models import singleTask

    from ray_msa.models import build_model

    cfg = mmsa_config(arch)
    feature_dims = (dims["text"], dims["audio"], dims["vision"])
    args = EasyDict(cfg | {"feature_dims": feature_dims, "train_mode": "regression", "num_classes": 1})
    args.update(use_bert=False, use_finetune=False)  # MMSA's MOSI features, not BERT inside the model
    setting = OUR_SETTING[arch](cfg)
    theirs = getattr(singleTask, MMSA_NAMES[arch])(args)
    ours = build_model(arch, ("text", "audio", "vision"), dims, setting)
    averaged = bool(cfg.get("need_normalized"))  # MMSA's loader averages audio and vision over time
    return Pair(ours, theirs, setting, int(cfg["batch_size"]), float(cfg["learning_rate"]), averaged)


def averaged_frames(values: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """(N, L, D) sequences -> (N, 1, D) means over each one's real frames."""
    mask = np.arange(values.shape[1])[None, :, None] < lengths[:, None, None]
    return ((values * mask).sum(1) / np.maximum(lengths, 1)[:, None])[:, None].astype(np.float32)


def time_training(step, batches: list) -> float:
    """Training samples per second of `step` over `batches[1:]`, after `batches[0]` as warm-up."""
    step(batches[0])
    started = time.perf_counter()
    for batch in batches[1:]:
        step(batch)
    return sum(len(b["labels"]) for b in batches[1:]) / (time.perf_counter() - started)


def compare(arch: str, pool, n_batches: int) -> tuple[float, float, Pair]:
    """(MMSA samples/s, ours samples/s, the pair) on the same `n_batches` + 1 shuffled batches."""
    from ray_msa.data.dataset import Split
    from ray_msa.train.batches import batches, length_bucketed, sequence_lengths

    dims = {"text": pool.text.shape[-1], "audio": pool.audio.shape[-1], "vision": pool.vision.shape[-1]}
    pair = build_pair(arch, dims)
    if pair.averaged:  # what MMSA's loader hands TFN, LMF and LF-DNN: one vector per sample
        arrays = pool.arrays()
        for m in ("audio", "vision"):
            arrays[m] = averaged_frames(arrays[m], arrays[f"{m}_lengths"])
            arrays[f"{m}_lengths"] = np.ones(len(pool), np.int64)
        pool = Split(**arrays)
    rng = np.random.default_rng(0)
    groups = length_bucketed(rng.permutation(len(pool)), sequence_lengths(pool), pair.batch_size, rng)
    groups = groups[: n_batches + 1]
    ours_batches = list(batches(pool, groups))
    full = [  # MMSA's loader: every sequence at its padded length
        {"labels": torch.from_numpy(pool.labels[rows]).float()}
        | {m: torch.from_numpy(getattr(pool, m)[rows]).float() for m in ("text", "audio", "vision")}
        for rows in groups
    ]
    ours_optimizer = torch.optim.Adam(pair.ours.parameters(), lr=pair.lr)
    their_optimizer = torch.optim.Adam(pair.theirs.parameters(), lr=pair.lr)

    def ours_step(batch: dict[str, torch.Tensor]) -> None:
        pair.ours.loss(pair.ours(batch), batch)[0].backward()
        ours_optimizer.step()
        ours_optimizer.zero_grad()

    def theirs_step(batch: dict[str, torch.Tensor]) -> None:
        out = pair.theirs(batch["text"], batch["audio"], batch["vision"])["M"].reshape(-1)
        torch.nn.functional.l1_loss(out, batch["labels"]).backward()  # MMSA's regression loss
        their_optimizer.step()
        their_optimizer.zero_grad()

    pair.ours.train()
    pair.theirs.train()
    return time_training(theirs_step, full), time_training(ours_step, ours_batches), pair


def parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", default=",".join(ARCHS), help=f"some of {', '.join(ARCHS)}")
    parser.add_argument("--batches", type=int, default=24, help="timed batches per model (after one warm-up)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    from ray_msa.data.folds import development_pool
    from ray_msa.data.synthetic import MOSI_UNALIGNED, make_synthetic

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    pool = development_pool(make_synthetic(sizes=(1281, 229, 685), shapes=MOSI_UNALIGNED, seed=0))
    rows = []
    for arch in args.archs.split(","):
        mmsa, ours, pair = compare(arch, pool, args.batches)
        rows.append((arch, pair, mmsa, ours))
        print(f"{arch}: ours at {pair.ours_setting}", flush=True)
    print(
        f"\nMMSA 2.2.1 vs ray_msa, training samples/s on MOSI-unaligned shapes, MMSA's MOSI configurations, "
        f"{args.batches} batches each, {args.threads} threads, one process"
    )
    print(f"{'arch':<8} {'batch':>5} {'MMSA params':>12} {'our params':>11} {'MMSA':>9} {'ours':>9} {'ratio':>7}")
    for arch, pair, mmsa, ours in rows:
        print(
            f"{arch:<8} {pair.batch_size:>5} {parameters(pair.theirs):>12,} {parameters(pair.ours):>11,} "
            f"{mmsa:>9.1f} {ours:>9.1f} {ours / mmsa:>6.1f}x"
        )


if __name__ == "__main__":
    main()
