"""Training throughput of an architecture under each engine and worker count, on Ray Train.

Prints samples/s (training only, after a warm-up epoch), peak resident memory per worker,
and Ray's own overhead: seconds from `fit()` to the first training step (worker group
start, process group, data fetch) and from the last step to `fit()` returning.

    python bench/train_throughput.py --arch mtl                 # bundled MOSI, frozen MiniLM text
    python bench/train_throughput.py --arch mtl --data synthetic  # MOSI-unaligned shapes

Against MMSA 2.2.1's models: bench/vs_mmsa.py.
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
