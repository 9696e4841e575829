"""Training throughput of an architecture under each engine and worker count, on Ray Train.

Prints samples/s (training only, after a warm-up epoch), peak resident memory per worker,
and Ray's own overhead: seconds from `fit()` to the first training step (worker group
start, process group, data fetch) and from the last step to `fit()` returning.

    python bench/train_throughput.py --arch mtl                 # bundled MOSI, frozen MiniLM text
    python bench/train_throughput.py --arch mtl --data synthetic  # MOSI-unaligned shapes
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def bench_worker(config: dict) -> None:
    import ray
    import ray.train
    import torch

    from ray_msa.data.folds import development_pool
    from ray_msa.train.loop import new_engine, train_epoch
    from ray_msa.train.workers import from_loop_config, quiet_ray_train, ray_context

    quiet_ray_train()
    started = time.time()
    trial, run = from_loop_config(config)
    torch.set_num_threads(run.threads)
    dataset = ray.get(run.dataset_ref[0])
    ctx = ray_context()
    pool = development_pool(dataset)
    index = np.arange(len(pool))
    engine = new_engine(trial, dataset, pool, index, 0, ctx)
    batch_size, epochs = trial.train.batch_size, trial.train.max_epochs
    train_epoch(engine, pool, index, batch_size, [0, 0, 0], ctx)  # warm-up (DeepSpeed, allocator)
    t0 = time.perf_counter()
    for epoch in range(epochs):
        train_epoch(engine, pool, index, batch_size, [0, 0, epoch + 1], ctx)
    seconds = time.perf_counter() - t0
    metrics = {
        "samples_per_s": epochs * len(index) / seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "loop_started": started,
        "loop_ended": time.time(),
    }
    with tempfile.TemporaryDirectory() as tmp:  # Train V2 keeps metrics with a checkpoint only
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp) if ctx.is_chief else None)


MMSA_MULT_MOSI = dict(
    dim=50,
    heads=10,
    layers=4,
    kernel_text=5,
    kernel_audio=5,
    kernel_vision=5,
    attn_dropout=0.3,
    attn_dropout_audio=0.2,
    attn_dropout_vision=0.0,
    relu_dropout=0.0,
    res_dropout=0.0,
    embed_dropout=0.2,
    out_dropout=0.5,
)


def time_steps(step, batches: list, repeats: int = 1) -> float:
    """Training samples per second of `step` over `batches` (after one warm-up batch)."""
    step(batches[0])
    t0 = time.perf_counter()
    for _ in range(repeats):
        for batch in batches:
            step(batch)
    return repeats * sum(len(b["labels"]) for b in batches) / (time.perf_counter() - t0)


def versus_mmsa_mult(dataset, n_batches: int, threads: int) -> None:
    """Our mult and MMSA 2.2.1's MULT with MMSA's MOSI regression config, same samples,
    batch 16, one process with the same threads, one after the other."""
    import torch
    from easydict import EasyDict
    from MMSA.models.singleTask.MULT import MULT

    from ray_msa.data.folds import development_pool
    from ray_msa.models import build_model
    from ray_msa.train.batches import batches, length_bucketed, sequence_lengths

    torch.set_num_threads(threads)
    pool = development_pool(dataset)
    rng = np.random.default_rng(0)
    # the batches an epoch of our loop would draw (shuffled, length-bucketed), first n+1 of them
    groups = length_bucketed(rng.permutation(len(pool)), sequence_lengths(pool), 16, rng)[: n_batches + 1]
    ours = build_model("mult", dataset.modalities, dataset.feature_dims(), MMSA_MULT_MOSI)
    ours_batches = list(batches(pool, groups))
    full_batches = list(batches(pool, groups))
    optimizer = torch.optim.Adam(ours.parameters(), lr=2e-3)

    def ours_step(b):
        loss = ours.loss(ours(b), b)[0]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    args = EasyDict(
        use_bert=False,
        use_finetune=False,
        dst_feature_dim_nheads=(50, 10),
        feature_dims=tuple(pool.text.shape[-1:] + pool.audio.shape[-1:] + pool.vision.shape[-1:]),
        nlevels=4,
        attn_dropout=0.3,
        attn_dropout_a=0.2,
        attn_dropout_v=0.0,
        relu_dropout=0.0,
        embed_dropout=0.2,
        res_dropout=0.0,
        output_dropout=0.5,
        text_dropout=0.5,
        attn_mask=True,
        train_mode="regression",
        conv1d_kernel_size_l=5,
        conv1d_kernel_size_a=5,
        conv1d_kernel_size_v=5,
    )
    theirs = MULT(args)
    their_optimizer = torch.optim.Adam(theirs.parameters(), lr=2e-3)

    def theirs_step(b):
        out = theirs(b["text_full"], b["audio_full"], b["vision_full"])["M"].squeeze(-1)
        loss = torch.nn.functional.l1_loss(out, b["labels"])
        loss.backward()
        their_optimizer.step()
        their_optimizer.zero_grad()

    for b, rows in zip(full_batches, groups):  # the same samples, at the full padded length MMSA feeds
        for m in ("text", "audio", "vision"):
            b[f"{m}_full"] = torch.from_numpy(getattr(pool, m)[rows]).float()
    theirs.train()
    ours.train()
    mmsa = time_steps(theirs_step, full_batches[: n_batches + 1])
    mine = time_steps(ours_step, ours_batches[: n_batches + 1], repeats=3)
    print(
        f"\nmult vs MMSA 2.2.1 MULT (MOSI regression config: 50-d, 10 heads, 4 levels, kernels 5, batch 16; "
        f"{threads} threads, one process)"
    )
    print(f"MMSA MULT   {mmsa:8.2f} samples/s")
    print(f"ray_msa mult {mine:8.2f} samples/s  ({mine / mmsa:.1f}x)")


def load(name: str, text: str):
    from ray_msa.data import load_dataset
    from ray_msa.data.synthetic import MOSI_UNALIGNED, make_synthetic
    from ray_msa.data.text import prepare_text

    if name == "synthetic":
        return make_synthetic(sizes=(1281, 229, 685), shapes=MOSI_UNALIGNED, seed=0)
    return prepare_text(load_dataset(name), text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="mtl")
    parser.add_argument("--data", default="mosi", help="mosi (bundled) or synthetic (MOSI-unaligned shapes)")
    parser.add_argument("--text", default="frozen", choices=("frozen", "finetune"))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--engines", default="ddp,deepspeed")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--vs-mmsa",
        type=int,
        default=0,
        metavar="BATCHES",
        help="also time MMSA 2.2.1's MULT against our mult on this many batches (needs: pip install --no-deps "
        "mmsa==2.2.1 easydict)",
    )
    args = parser.parse_args()

    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from ray_msa.config import TextConfig
    from ray_msa.search_space import load_space
    from ray_msa.study import default_storage, plan_resources
    from ray_msa.train.workers import loop_config
    from ray_msa.trial import RunContext

    space = load_space(args.arch)
    dataset = load(args.data, args.text)
    if args.vs_mmsa:
        versus_mmsa_mult(dataset, args.vs_mmsa, threads=os.cpu_count() or 1)
    engines = [e for e in args.engines.split(",") if e]
    if not engines:
        return
    ray.init(log_to_driver=True, logging_level="WARNING")
    dataset_ref = [ray.put(dataset)]
    total = ray.cluster_resources()["CPU"]
    rows = []
    for engine in engines:
        for workers in map(int, args.workers.split(",")):
            per_worker, threads, _ = plan_resources(total, workers, None)
            # the space's start configuration, else every sampled setting at its default (mtl: 4 heads, lr 1e-3, ...)
            trial = space.build(
                space.start_for(),
                {"engine": engine, "batch_size": args.batch_size, "max_epochs": args.epochs},
                TextConfig(mode=args.text),
            )
            config = loop_config(trial, RunContext(trial_name="bench", dataset_ref=dataset_ref, threads=threads))
            fit_started = time.time()
            result = TorchTrainer(
                bench_worker,
                train_loop_config=config,
                scaling_config=ScalingConfig(num_workers=workers, resources_per_worker={"CPU": per_worker}),
                run_config=RunConfig(name=f"bench-{engine}-{workers}", storage_path=default_storage()),
            ).fit()
            fit_ended = time.time()
            m = result.metrics
            rows.append(
                (
                    engine,
                    workers,
                    threads,
                    m["samples_per_s"],
                    m["peak_rss_mb"],
                    m["loop_started"] - fit_started,
                    fit_ended - m["loop_ended"],
                )
            )
    print(
        f"\n{args.arch} on {args.data} ({len(dataset.splits['train']) + len(dataset.splits['valid'])} training "
        f"samples/epoch, batch {args.batch_size}, {total:g} CPUs)"
    )
    print(
        f"{'engine':<10} {'workers':>7} {'threads':>7} {'samples/s':>10} {'peak RSS/worker MB':>19} "
        f"{'ray start s':>11} {'ray stop s':>10}"
    )
    for engine, workers, threads, sps, rss, start, stop in rows:
        print(f"{engine:<10} {workers:>7} {threads:>7} {sps:>10.1f} {rss:>19.0f} {start:>11.1f} {stop:>10.1f}")


if __name__ == "__main__":
    main()
