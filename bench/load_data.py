"""Time and peak memory to convert a MOSEI-sized dataset to the HDF5 cache, and to load it
in W worker processes from the pickle (what MMSA/MulT workers do) versus from the cache.

The set is an MMSA `unaligned_50.pkl` of MOSEI's public shapes and sizes (train 16,326,
valid 1,871, test 4,659; text 50x768, audio 500x74, vision 500x35, float32: about 8.5 GB),
written by `ray_msa.data.synthetic_files`. Each worker is a fresh process, so its peak
RSS is its own.

- pickle: the worker unpickles the whole file (restricted unpickler) and holds it: a
  private copy of everything, in every worker.
- cache: the worker opens the HDF5 cache and has ids, labels and lengths in memory; it
  is then ready to train, reading (and decompressing) only the rows a batch asks for.
  To show what that costs, each cache worker also reads one batch of 32 samples, and
  one worker reads every sample once, in batches of 32.

    python bench/load_data.py                  # full MOSEI size (needs ~20 GB of disk)
    python bench/load_data.py --scale 0.25     # a quarter of every split
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

MOSEI_SIZES = (16326, 1871, 4659)


def available_bytes() -> int:
    with open("/proc/meminfo") as handle:
        fields = dict(line.split(":", 1) for line in handle)
    return int(fields["MemAvailable"].split()[0]) * 1024


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM: unlike ru_maxrss, not inherited from the parent across exec)."""
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("VmHWM")) / 1024


def load_pickle_worker(path: str, out: mp.Queue) -> None:
    from ray_msa.data.safe_pickle import load_pickle

    started = time.perf_counter()
    data = load_pickle(path)
    samples = sum(len(data[s]["regression_labels"]) for s in ("train", "valid", "test"))
    out.put(("pickle", time.perf_counter() - started, peak_rss_mb(), samples))


def load_cache_worker(path: str, out: mp.Queue, read_all: bool) -> None:
    from ray_msa.data.h5cache import read_cache

    started = time.perf_counter()
    dataset = read_cache(Path(path))
    train = dataset.splits["train"]
    rows = np.sort(np.random.default_rng(0).choice(len(train), 32, replace=False))
    batch = [np.asarray(getattr(train, m)[rows]) for m in ("text", "audio", "vision")]  # ready: one batch in hand
    ready = time.perf_counter() - started
    samples = sum(len(s) for s in dataset.splits.values())
    out.put(("cache", ready, peak_rss_mb(), samples))
    if read_all:
        started = time.perf_counter()
        for split in dataset.splits.values():
            for i in range(0, len(split), 32):
                batch = [getattr(split, m)[np.arange(i, min(i + 32, len(split)))] for m in ("text", "audio", "vision")]
        del batch
        out.put(("cache, every sample once", time.perf_counter() - started, peak_rss_mb(), samples))


def run_workers(target, args_list: list[tuple]) -> list[tuple]:
    """Start one fresh process per args tuple, all at once; collect what they report."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args[:1], queue, *args[1:])) for args in args_list]
    started = time.perf_counter()
    for p in procs:
        p.start()
    results = []
    expected = len(procs) + sum(1 for a in args_list if len(a) > 1 and a[1])
    while len(results) < expected:
        results.append(queue.get())
    for p in procs:
        p.join()
        if p.exitcode:
            raise RuntimeError(f"worker exited with {p.exitcode}")
    results.append(("wall for all workers", time.perf_counter() - started, 0.0, 0))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of MOSEI's split sizes (default 1)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--dir", type=Path, help="working directory (default: a temporary one, removed afterwards)")
    args = parser.parse_args()
    sizes = tuple(max(2, round(n * args.scale)) for n in MOSEI_SIZES)
    work = args.dir or Path(tempfile.mkdtemp(prefix="ray_msa_load_"))
    try:
        from ray_msa.data.synthetic_files import write_mmsa_pickle

        started = time.perf_counter()
        pkl = write_mmsa_pickle(work / "mosei", "mosei", "unaligned", sizes, seed=0, neg_inf_frames=100)
        print(
            f"generated {pkl} ({pkl.stat().st_size / 2**30:.2f} GiB, {sum(sizes)} samples = "
            f"{' + '.join(map(str, sizes))}) "
            f"in {time.perf_counter() - started:.0f}s"
        )
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        convert = ctx.Process(target=convert_worker, args=(str(work / "mosei"), str(work / "cache"), queue))
        convert.start()
        name, seconds, rss, cache = queue.get()
        convert.join()
        size = Path(cache).stat().st_size
        print(
            f"convert pickle -> HDF5 cache: {seconds:.1f}s, peak RSS {rss:,.0f} MB, cache {size / 2**30:.2f} GiB "
            f"({100 * size / pkl.stat().st_size:.0f}% of the pickle)"
        )
        needed, available = pkl.stat().st_size * 1.1 * args.workers, available_bytes()
        if needed < 0.9 * available:
            rows = run_workers(load_pickle_worker, [(str(pkl),)] * args.workers)
        else:  # every pickle worker holds a private copy: all at once would not fit in memory here
            print(
                f"{args.workers} pickle workers need ~{needed / 2**30:.0f} GiB but {available / 2**30:.0f} GiB "
                f"is available: running them one after another"
            )
            rows = [
                r
                for _ in range(args.workers)
                for r in run_workers(load_pickle_worker, [(str(pkl),)])
                if r[0] == "pickle"
            ]
        rows += run_workers(load_cache_worker, [(cache, i == 0) for i in range(args.workers)])
        print(f"\nloading with {args.workers} worker processes (each a fresh process):")
        print(f"{'source':<28} {'seconds':>9} {'peak RSS MB':>12}")
        for name, seconds, rss, _ in rows:
            print(f"{name:<28} {seconds:>9.2f} {rss:>12,.0f}")
        pickle_s = max(r[1] for r in rows if r[0] == "pickle")
        cache_s = max(r[1] for r in rows if r[0] == "cache")
        print(
            f"\nworker ready to train: pickle {pickle_s:.2f}s vs cache {cache_s:.2f}s = "
            f"{pickle_s / cache_s:.0f}x faster from the cache"
        )
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)


def convert_worker(source: str, cache_root: str, out: mp.Queue) -> None:
    from ray_msa.data.sources import load_dataset

    started = time.perf_counter()
    dataset = load_dataset("mosei", source, cache_root=Path(cache_root))
    seconds = time.perf_counter() - started
    cache = next((Path(cache_root) / "datasets").glob("*.h5"))
    print(f"  {dataset.summary()}; fingerprint {dataset.fingerprint()}")
    out.put(("convert", seconds, peak_rss_mb(), str(cache)))


if __name__ == "__main__":
    main()
