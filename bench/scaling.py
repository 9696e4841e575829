"""How a study's cost grows with the data: training samples/s and peak memory of one worker, for each
architecture on MOSI-shaped and MOSEI-shaped synthetic data at 1x, 4x and 16x the samples.

16x is the dataset's real train+valid size (MOSI 1,510 samples; MOSEI 18,197), 1x a sixteenth of it. The
data is written once per shape to an HDF5 cache and read as a study reads it (lazily, the batches' rows
only); each measurement is its own process (so its peak resident memory is its own): the architecture's
space start, the one training loop's `train_epoch` over `--batches` batches of the scale's samples after
one warm-up batch, frozen-LM-sized text features (`--text features`; `cenet` fine-tunes MiniLM on the
synthetic transcripts, as it must). The last column is what one 5-fold epoch of a trial would take.

    python bench/scaling.py                          # every architecture, both shapes, 1x 4x 16x
    python bench/scaling.py --archs lf_dnn,mult --shapes mosi
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ARCHS = ("lf_dnn", "lf_lstm", "tfn", "lmf", "awf", "mtl", "mult", "cenet")
SHAPES = {  # the public unaligned files' (length, width) per modality, and their train+valid size
    "mosi": ({"text": (50, 768), "audio": (375, 5), "vision": (500, 20)}, 1510),
    "mosei": ({"text": (50, 768), "audio": (500, 74), "vision": (500, 35)}, 18197),
}
SCALES = (1, 4, 16)
CHUNK = 1024  # samples generated at a time (the generator draws float64)


def cached_dataset(shape: str, root: Path) -> Path:
    """The full-size synthetic dataset of `shape` as an HDF5 cache file (written once)."""
    from ray_msa.data.dataset import Split
    from ray_msa.data.h5cache import write_cache
    from ray_msa.data.synthetic import make_synthetic

    path = root / f"{shape}.h5"
    if path.is_file():
        return path
    shapes, total = SHAPES[shape]
    parts = []
    for k, start in enumerate(range(0, total, CHUNK)):
        chunk = make_synthetic(sizes=(min(CHUNK, total - start), 0, 0), shapes=shapes, seed=k, name=shape)
        part = chunk.splits["train"]
        for name in ("text", "audio", "vision"):
            setattr(part, name, getattr(part, name).astype(np.float32))
        parts.append(part)
    whole = chunk.with_splits(train=Split.concat(parts))
    write_cache(whole, path, {"kind": "synthetic", "path": shape, "files": f"{total} samples"})
    return path


def peak_resident_mb() -> float:
    """This process's own peak resident memory (VmHWM). Not getrusage's ru_maxrss: a child inherits its
    parent's high-water mark at fork, so every measurement would start at the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux


def measure(arch: str, path: Path, samples: int, batches: int) -> dict[str, float]:
    """One worker's training samples/s and peak resident MB (this process) on the first `samples` samples."""
    import torch

    from ray_msa.config import TextConfig
    from ray_msa.data.h5cache import read_cache
    from ray_msa.models import get_spec
    from ray_msa.search_space import load_space
    from ray_msa.train.loop import WorkerContext, new_engine, train_epoch

    torch.set_num_threads(os.cpu_count() or 1)
    space = load_space(arch)
    dataset = read_cache(path)
    text = TextConfig(mode=get_spec(arch).text_mode("features"))  # cenet reads token ids only: it fine-tunes
    trial = space.build(space.start_for(), {"metric": "MAE"}, text)
    pool = dataset.splits["train"].take(np.arange(samples))
    dataset = trial.spec.prepare_text(dataset.with_splits(train=pool), trial.text)
    pool = dataset.splits["train"]
    batch = trial.train.batch_size
    ctx = WorkerContext()
    index = np.arange(len(pool))
    engine = new_engine(trial, dataset, pool, index, 0, ctx)
    rng = np.random.default_rng(0)
    warm_up = rng.choice(index, min(len(index), batch), replace=False)
    train_epoch(engine, pool, warm_up, batch, [0, 0, 0], ctx)
    timed = rng.choice(index, min(len(index), batches * batch), replace=False)
    started = time.perf_counter()
    train_epoch(engine, pool, timed, batch, [0, 0, 1], ctx)
    seconds = time.perf_counter() - started
    return {
        "samples_per_s": len(timed) / seconds,
        "peak_mb": peak_resident_mb(),
        "batch": batch,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", default=",".join(ARCHS))
    parser.add_argument("--shapes", default="mosi,mosei")
    parser.add_argument("--batches", type=int, default=4, help="timed batches per measurement (after one warm-up)")
    parser.add_argument("--root", type=Path, default=Path("bench_scaling_data"), help="where the HDF5 files go")
    parser.add_argument("--one", nargs=3, metavar=("ARCH", "FILE", "SAMPLES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # a child: one measurement, printed as JSON
        arch, path, samples = args.one
        print(json.dumps(measure(arch, Path(path), int(samples), args.batches)))
        return
    args.root.mkdir(parents=True, exist_ok=True)
    rows = []
    for shape in args.shapes.split(","):
        started = time.perf_counter()
        path = cached_dataset(shape, args.root)
        print(f"{shape}: {path} ({path.stat().st_size / 2**30:.1f} GiB, {time.perf_counter() - started:.0f} s)")
        total = SHAPES[shape][1]
        for arch in args.archs.split(","):
            for scale in SCALES:
                samples = total * scale // 16
                command = [sys.executable, __file__, "--one", arch, str(path), str(samples)]
                done = subprocess.run(command + ["--batches", str(args.batches)], capture_output=True, text=True)
                if done.returncode != 0:
                    print(f"{arch} {shape} {scale}x failed: {done.stderr[-800:]}", flush=True)
                    continue
                result = json.loads(done.stdout.strip().splitlines()[-1])
                rows.append((shape, arch, scale, samples, result))
                print(f"{shape} {arch} {scale}x: {result}", flush=True)
    print(f"\none worker, {os.cpu_count()} threads, {args.batches} timed batches per row (the space's batch size)")
    head = f"{'shape':<6} {'arch':<8} {'scale':>5} {'samples':>8} {'samples/s':>10} {'peak MB':>8}"
    print(f"{head} {'5-fold epoch s':>15}")
    for shape, arch, scale, samples, r in rows:
        epoch = samples / r["samples_per_s"] * 4  # five folds, each training on four fifths
        print(
            f"{shape:<6} {arch:<8} {scale:>4}x {samples:>8} {r['samples_per_s']:>10.1f} {r['peak_mb']:>8.0f} "
            f"{epoch:>15.0f}"
        )


if __name__ == "__main__":
    main()
