"""GPU proof of the training engines: the project's own loop, outside Ray, on one GPU.

For `mtl` and `mult` on MOSEI-shaped synthetic data (MMSA unaligned_50.pkl shapes: text
50x768, audio 500x74, vision 500x35; 14,400 + 1,600 samples, trained as train+valid = 16,000)
it trains the same model from the same seed with the DDP engine in fp32 and in bf16 autocast,
and with the DeepSpeed engine at ZeRO stage 0 and 2 (its config template turns bf16 on by
itself on a GPU that has it; one more row forces fp32 at ZeRO 2, the only tight engine check a
GPU allows). It prints one row each: samples/s after a warm-up, peak GPU memory, mean GPU
utilisation (NVML) while timed, and the last epoch's mean training loss, and checks that every
row's loss agrees with fp32 DDP within the tolerances below; a row that does not, or that
fails, ends the script with exit code 1 naming it. With $OUT set, the table is also written
there as gpu_check.json and gpu_check.md.

    bash bench/gpu_check.sh                       # on the GPU machine: installs the carried wheels, runs this
    python bench/gpu_check.py --cpu-dry-run       # every row and check on CPU, tiny sizes (under a minute)

Needs: Python >= 3.10, torch (with CUDA for the GPU run), DeepSpeed and its dependencies
(bench/gpu_wheels.sh fetches them as wheels for a machine without network), ray_msa from this
checkout. Neither Ray nor MLflow: the loop imports neither (tests/test_gpu_check.py checks).

Agreement (the last epoch's mean training loss, relative to fp32 DDP's, same seed, data, order):
- fp32 rows: on CPU 1e-4. The engines do the same arithmetic; only DeepSpeed's gradient-norm
  clipping sums in another order, which moves the loss by ~1e-6 over the dry run's steps.
  On a GPU 1e-3: there, besides that, cuDNN's RNN and the attention backward add with atomics
  (not bit-reproducible even run to run), and the difference grows over ~500 steps.
- bf16 rows (DDP autocast, DeepSpeed's bf16 weights with fp32 master copies): 3e-2, the size of
  bf16 rounding (8-bit mantissa, ~4e-3 per operation) carried through a training trajectory.

Sizing for one H200 (the whole script well under 8 minutes; budget ~30 s per row): start-up
with the data is ~40 s (numpy draws 1.5e9 normal floats: 36 s for 16k samples on this 2-core
machine, faster there; train+valid concatenated ~10 s). Each row: two warm-up epochs of
`warmup_batches` batches (the second timed), then `epochs` timed epoch(s) over the first N
samples of one fixed permutation. N comes from the fp32 DDP row of each architecture: the
rate of its timed warm-up times `target_s` (12 s), whole batches, at least 16 batches, at
most all 16,000; every row of that architecture then trains on the same N (the losses are
comparable) and a row slower by up to 2x stays under 30 s. Per-step estimate (CPU profile
of one full-length batch of 32): mult (d 30, 5 heads, 4 layers) ~4,500 kernels per step,
mtl ~2,500 plus its three BiGRUs over up to 500 frames; at ~10 us a launch both are
launch-bound at ~25-45 ms a step (~700-1,300 samples/s; their 3-6 GFLOP per step are
~0.1 ms at H200 rates), so N is ~8-16k: one timed epoch of 8-16k samples. Expected total:
40 s + 10 rows x (~3 s init + ~1 s warm-up + ~12-18 s timed) ~ 4-4.5 minutes.

Test hook (hidden from --help): `--perturb-row ARCH/ROW` multiplies that row's learning rate by
1.5, so its loss must leave the tolerance; tests/test_gpu_check.py checks that it is caught.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ARCHS = ("mtl", "mult")
BUDGET_S = 480  # the limit for the whole GPU run
TOLERANCE = {"cpu-fp32": 1e-4, "cuda-fp32": 1e-3, "half": 3e-2}  # relative, see the docstring


@dataclass(frozen=True)
class Plan:
    """Sizes of one run: the data, the batches, the models."""

    shapes: dict[str, tuple[int, int]]
    sizes: tuple[int, int, int]  # train, valid, test (test is never read)
    batch_size: int
    warmup_batches: int  # per warm-up epoch (two of them, the second timed for sizing)
    epochs: int  # timed epochs; the last one's mean loss is compared
    target_s: float | None  # timed seconds the fp32 DDP row aims at; None: the whole pool
    stats_samples: int  # samples the audio/vision normalisation statistics are computed on
    models: dict[str, dict[str, Any]] = field(default_factory=dict)  # arch -> model/training settings


# MOSEI unaligned; realistic models: mtl as its space file sets it (hidden 100, heads 4, ffn 256, lr 1e-3),
# mult as MulT's MOSEI code (d 30, 5 heads, 4 crossmodal layers).
GPU_PLAN = Plan(
    shapes={"text": (50, 768), "audio": (500, 74), "vision": (500, 35)},
    sizes=(14_400, 1_600, 64),
    batch_size=32,
    warmup_batches=8,
    epochs=1,
    target_s=12.0,
    stats_samples=2048,
    models={"mtl": {}, "mult": {"dim": 30, "heads": 5, "layers": 4}},
)
# tiny: every row and check on two CPU cores in seconds
CPU_PLAN = Plan(
    shapes={"text": (12, 32), "audio": (30, 12), "vision": (30, 10)},
    sizes=(96, 16, 16),
    batch_size=16,
    warmup_batches=2,
    epochs=1,
    target_s=None,
    stats_samples=112,
    models={"mtl": {"hidden": 16, "heads": 2, "ffn": 32}, "mult": {"dim": 8, "heads": 2, "layers": 2}},
)


@dataclass(frozen=True)
class RowSpec:
    name: str
    engine: str
    precision: str  # fp32 | bf16 (DDP autocast) | auto (DeepSpeed's template) | fp32 forced in DeepSpeed
    zero_stage: int | None = None
    gpu_only: bool = False  # where DeepSpeed's "auto" is already fp32 (CPU) this row would repeat ds-z2


ROWS = (
    RowSpec("ddp-fp32", "ddp", "fp32"),
    RowSpec("ddp-bf16", "ddp", "bf16"),
    RowSpec("ds-z0", "deepspeed", "auto", 0),
    RowSpec("ds-z2", "deepspeed", "auto", 2),
    RowSpec("ds-z2-fp32", "deepspeed", "fp32", 2, gpu_only=True),
)


@dataclass
class Row:
    arch: str
    row: str
    engine: str
    precision: str = "?"
    zero_stage: int | None = None
    samples_per_s: float | None = None
    peak_gpu_mib: float | None = None  # None on CPU
    gpu_util_pct: float | None = None  # None on CPU or without NVML/nvidia-smi
    loss: float | None = None  # mean training loss of the last timed epoch
    timed_samples: int = 0
    timed_s: float | None = None
    rel_diff: float | None = None  # |loss - fp32 DDP's| / fp32 DDP's
    tolerance: float | None = None
    ok: bool = False
    error: str | None = None

    @property
    def id(self) -> str:
        return f"{self.arch}/{self.row}"


def say(message: str) -> None:
    print(message, flush=True)


def fail(message: str, code: int = 2) -> None:
    say(f"\n!!! GPU CHECK FAILED: {message}\n")
    raise SystemExit(code)


def check_environment(cpu: bool) -> dict[str, Any]:
    """Print and check what the run needs; stop at once, saying what is missing."""
    from importlib import metadata

    info: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform()}
    say(f"python      {info['python']} ({sys.executable})")
    try:
        import torch
    except ImportError:
        fail("needs torch (on the GPU machine: its python3 has a CUDA build)")
    info.update(torch=torch.__version__, cuda=torch.version.cuda, cuda_available=torch.cuda.is_available())
    say(f"torch       {torch.__version__}, CUDA build {torch.version.cuda}, CUDA available: {info['cuda_available']}")
    if not cpu:
        if not torch.cuda.is_available():
            fail("no GPU visible to torch: needs a CUDA build of torch and a GPU (or run --cpu-dry-run)")
        props = torch.cuda.get_device_properties(0)
        info.update(
            gpu=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            capability=f"{props.major}.{props.minor}",
            bf16=torch.cuda.is_bf16_supported(),
            cudnn=torch.backends.cudnn.version(),
        )
        say(
            f"gpu         {props.name}, {info['gpu_memory_gib']} GiB, compute capability {info['capability']}, "
            f"bf16 {info['bf16']}, cuDNN {info['cudnn']}"
        )
    # the project's loop before DeepSpeed (which itself loads MLflow where it is installed): the device has
    # neither Ray nor MLflow, so a loop that imports them would fail there
    import ray_msa.data.folds
    import ray_msa.data.synthetic
    import ray_msa.search_space
    import ray_msa.train.loop  # noqa: F401

    loaded = sorted(name for name in ("ray", "mlflow") if name in sys.modules)
    if loaded:
        fail(f"the training loop imported {', '.join(loaded)}, which the GPU machine does not have")
    try:
        import deepspeed
    except ImportError as err:
        fail(
            f"DeepSpeed does not import ({err}). Needs deepspeed and hjson, pydantic, pydantic-core, annotated-types, "
            "typing-inspection: run `bash bench/gpu_wheels.sh` where pip reaches PyPI, carry .whl/, and start this "
            "through `bash bench/gpu_check.sh`"
        )
    import logging

    deepspeed.utils.logger.setLevel(logging.WARNING)  # its per-engine INFO lines would bury the table
    info["deepspeed"] = deepspeed.__version__
    versions = {}
    for name in ("pydantic", "pydantic-core", "hjson", "nvidia-ml-py"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    info.update(versions)
    say(f"deepspeed   {deepspeed.__version__}; " + ", ".join(f"{k} {v or 'missing'}" for k, v in versions.items()))
    import ray_msa

    say(f"ray_msa     {Path(ray_msa.__file__).parent}")
    return info


class Utilisation:
    """Mean GPU utilisation while training runs: NVML through torch.cuda.utilization (nvidia-ml-py),
    else nvidia-smi, read every `period` seconds by a background thread."""

    def __init__(self, device_index: int, period: float = 0.2) -> None:
        self.index, self.period = device_index, period
        self.samples: list[float] = []
        self.source = self._probe()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _probe(self) -> str | None:
        for source in ("nvml", "nvidia-smi"):
            self.source = source
            if self._read() is not None:
                return source
        return None

    def _read(self) -> float | None:
        try:
            if self.source == "nvml":
                import torch

                return float(torch.cuda.utilization(self.index))
            if self.source == "nvidia-smi" and shutil.which("nvidia-smi"):
                query = ["nvidia-smi", "-i", str(self.index), "--query-gpu=utilization.gpu"]
                query.append("--format=csv,noheader,nounits")
                out = subprocess.run(query, capture_output=True, text=True, timeout=5)
                return float(out.stdout.strip().splitlines()[0])
        except Exception:
            return None
        return None

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            value = self._read()
            if value is not None:
                self.samples.append(value)

    def start(self) -> None:
        self.samples, self._stop = [], threading.Event()
        if self.source is not None:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()

    def stop(self) -> float | None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        return sum(self.samples) / len(self.samples) if self.samples else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_process_group(cuda: bool) -> None:
    """DeepSpeed needs torch.distributed even for one process: world size 1, NCCL on a GPU, gloo on CPU.
    LOCAL_RANK 0 is where DeepSpeed places the engine (cuda:0)."""
    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
    os.environ["LOCAL_WORLD_SIZE"] = "1"
    if cuda:
        torch.cuda.set_device(0)
    dist.init_process_group("nccl" if cuda else "gloo", rank=0, world_size=1)


def fp32_deepspeed_template(directory: Path) -> Path:
    """The repo's DeepSpeed template with half precision off: explicit values win over "auto"."""
    from ray_msa.train.engine import DEEPSPEED_CONFIG

    config = json.loads(DEEPSPEED_CONFIG.read_text())
    config["bf16"] = {"enabled": False}
    config["fp16"] = {"enabled": False}
    path = directory / "deepspeed_fp32.json"
    path.write_text(json.dumps(config))
    return path


def sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_row(
    arch: str,
    spec: RowSpec,
    plan: Plan,
    dataset: Any,
    pool: Any,
    order: Any,
    timed_n: int | None,
    device: Any,
    sampler: Utilisation | None,
    template: Path,
    perturb: set[str],
) -> tuple[Row, int]:
    """Train one row: fresh engine, two warm-up epochs, the timed epochs; returns the row and
    the timed sample count (chosen here from the warm-up rate when `timed_n` is None)."""
    import torch

    from ray_msa.config import TextConfig
    from ray_msa.search_space import load_space
    from ray_msa.train.loop import WorkerContext, new_engine, train_epoch

    row = Row(arch, spec.name, spec.engine, zero_stage=spec.zero_stage)
    space = load_space(arch)
    flags: dict[str, Any] = {
        "engine": spec.engine,
        "batch_size": plan.batch_size,
        "max_epochs": 2 + plan.epochs,
        "precision": "bf16" if spec.precision == "bf16" else "fp32",
        "zero_stage": spec.zero_stage or 0,
        "seed": 0,
    }
    if spec.engine == "deepspeed" and spec.precision == "fp32":
        flags["deepspeed_config"] = str(template)
    trial = space.build({**space.start_for(), **plan.models[arch]}, flags, TextConfig(mode="features"))
    if row.id in perturb:
        trial = trial.with_train(lr=trial.train.lr * 1.5)
        say(f"  (test hook: {row.id} trains at 1.5x the learning rate, {trial.train.lr:g})")
    ctx = WorkerContext(device=device)
    batch = plan.batch_size
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    engine = new_engine(trial, dataset, pool, order[: plan.stats_samples], 0, ctx)
    try:
        dtype = next(engine.model.parameters()).dtype
        if spec.engine == "ddp":
            row.precision = "bf16-autocast" if trial.train.precision == "bf16" else "fp32"
        else:
            row.precision = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")
        warm = order[: plan.warmup_batches * batch]
        train_epoch(engine, pool, warm, batch, [0, 0, 0], ctx)  # allocator, kernels, DeepSpeed buckets
        sync(device)
        started = time.perf_counter()
        train_epoch(engine, pool, warm, batch, [0, 0, 1], ctx)
        sync(device)
        rate = len(warm) / (time.perf_counter() - started)
        if timed_n is None:
            wanted = len(order) if plan.target_s is None else plan.target_s * rate / plan.epochs
            timed_n = int(min(len(order), max(16 * batch, wanted // batch * batch)))
        timed = order[:timed_n]
        if sampler is not None:
            sampler.start()
        sync(device)
        started = time.perf_counter()
        for epoch in range(plan.epochs):
            fit = train_epoch(engine, pool, timed, batch, [0, 0, 2 + epoch], ctx)
        sync(device)
        row.timed_s = time.perf_counter() - started
        row.gpu_util_pct = sampler.stop() if sampler is not None else None
        row.timed_samples = plan.epochs * len(timed)
        row.samples_per_s = row.timed_samples / row.timed_s
        row.loss = float(fit["train_loss"])
        if device.type == "cuda":
            row.peak_gpu_mib = torch.cuda.max_memory_allocated(device) / 2**20
    finally:
        if sampler is not None:
            sampler.stop()
        if hasattr(engine, "ds"):
            engine.ds.destroy()
        del engine
        gc.collect()
    return row, timed_n


def judge(rows: list[Row], cpu: bool) -> list[str]:
    """Fill each row's agreement with its architecture's fp32 DDP row; the failures, one line each."""
    failures = []
    reference = {r.arch: r for r in rows if r.row == "ddp-fp32" and r.loss is not None}
    for r in rows:
        if r.error is not None:
            failures.append(f"{r.id} ({r.engine}, {r.precision}) did not run: {r.error}")
            continue
        if r.loss is None or not math.isfinite(r.loss):
            failures.append(f"{r.id} ({r.engine}, {r.precision}): training loss {r.loss} is not finite")
            continue
        ref = reference.get(r.arch)
        if ref is None:
            failures.append(f"{r.id}: no fp32 DDP row of {r.arch} to compare with")
            continue
        r.tolerance = TOLERANCE["half"] if r.precision != "fp32" else TOLERANCE["cpu-fp32" if cpu else "cuda-fp32"]
        r.rel_diff = abs(r.loss - ref.loss) / max(abs(ref.loss), 1e-12)
        r.ok = r.rel_diff <= r.tolerance
        if not r.ok:
            zero = f" ZeRO {r.zero_stage}" if r.zero_stage is not None else ""
            failures.append(
                f"{r.id} ({r.engine}{zero}, {r.precision}): loss {r.loss:.6f} vs fp32 DDP {ref.loss:.6f}, "
                f"relative difference {r.rel_diff:.2e} > tolerance {r.tolerance:.0e}"
            )
    return failures


COLUMNS = (
    ("arch", "arch", "{}"),
    ("row", "row", "{}"),
    ("engine", "engine", "{}"),
    ("precision", "precision", "{}"),
    ("ZeRO", "zero_stage", "{}"),
    ("samples/s", "samples_per_s", "{:.0f}"),
    ("peak GPU MiB", "peak_gpu_mib", "{:.0f}"),
    ("GPU util %", "gpu_util_pct", "{:.0f}"),
    ("last-epoch loss", "loss", "{:.6f}"),
    ("rel. diff vs fp32 DDP", "rel_diff", "{:.1e}"),
    ("tolerance", "tolerance", "{:.0e}"),
    ("agrees", "ok", "{}"),
)


def cells(r: Row) -> list[str]:
    out = []
    for _, key, fmt in COLUMNS:
        value = getattr(r, key)
        if key == "ok":
            value = "yes" if r.ok else ("ERROR" if r.error else "NO")
        out.append("-" if value is None else fmt.format(value))
    return out


def table(rows: list[Row]) -> str:
    head = [c[0] for c in COLUMNS]
    body = [cells(r) for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    lines = [
        "  ".join(x.rjust(w) if i > 4 else x.ljust(w) for i, (x, w) in enumerate(zip(line, widths)))
        for line in [head, *body]
    ]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def markdown(rows: list[Row], header: str, verdict: str) -> str:
    head = [c[0] for c in COLUMNS]
    lines = [f"# GPU check\n\n{header}\n", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cells(r)) + " |" for r in rows]
    return "\n".join(lines) + f"\n\n{verdict}\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-dry-run", action="store_true", help="the same rows and checks on CPU, tiny sizes")
    parser.add_argument("--arch", choices=ARCHS, action="append", help="only this architecture (repeatable)")
    parser.add_argument("--perturb-row", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    cpu = args.cpu_dry_run
    if cpu:  # before torch and DeepSpeed load: no GPU, and DeepSpeed's CPU accelerator
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        os.environ["DS_ACCELERATOR"] = "cpu"
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    wall = time.perf_counter()
    plan = CPU_PLAN if cpu else GPU_PLAN
    say(f"GPU check ({'CPU dry run' if cpu else 'GPU run'})")
    info = check_environment(cpu)

    import numpy as np
    import torch
    import torch.distributed as dist

    from ray_msa.data.folds import development_pool
    from ray_msa.data.synthetic import make_synthetic
    from ray_msa.data.synthetic_files import MMSA_SHAPES

    if not cpu:
        assert plan.shapes == MMSA_SHAPES[("mosei", "unaligned")], "GPU plan must keep MOSEI's unaligned shapes"
    if cpu:  # tiny models gain nothing from threads, and on a busy machine idle-spinning threads cost 50x
        torch.set_num_threads(1)
    device = torch.device("cpu") if cpu else torch.device("cuda", 0)
    started = time.perf_counter()
    dataset = make_synthetic(sizes=plan.sizes, shapes=dict(plan.shapes), seed=0, name="mosei")
    pool = development_pool(dataset)
    order = np.random.default_rng(0).permutation(len(pool))
    say(
        f"data        {len(pool)} training samples (train+valid), shapes {plan.shapes}, "
        f"made in {time.perf_counter() - started:.1f}s"
    )
    sampler = None if cpu else Utilisation(0)
    if sampler is not None:
        say(f"utilisation from {sampler.source or 'nothing (no NVML, no nvidia-smi): column left empty'}")
    archs = tuple(args.arch or ARCHS)
    specs = [s for s in ROWS if not (s.gpu_only and cpu)]
    perturb = set(args.perturb_row)
    unknown = perturb - {f"{a}/{s.name}" for a in archs for s in specs}
    if unknown:
        fail(f"--perturb-row {sorted(unknown)} names no row of this run")
    rows: list[Row] = []
    init_process_group(not cpu)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            template = fp32_deepspeed_template(Path(tmp))
            for arch in archs:
                timed_n = None
                for spec in specs:
                    say(f"-- {arch}/{spec.name} ...")
                    if spec.name != "ddp-fp32" and timed_n is None:
                        rows.append(Row(arch, spec.name, spec.engine, error="its fp32 DDP reference did not run"))
                        continue
                    try:
                        row, timed_n = run_row(
                            arch, spec, plan, dataset, pool, order, timed_n, device, sampler, template, perturb
                        )
                    except Exception as err:  # one broken row must not cost the others
                        import traceback

                        traceback.print_exc()
                        row = Row(arch, spec.name, spec.engine, zero_stage=spec.zero_stage)
                        row.error = f"{type(err).__name__}: {err}".splitlines()[0][:300]
                    rows.append(row)
                    timed = f"{row.timed_s or 0:.1f}s timed, {row.timed_samples} samples"
                    say(f"   {'  '.join(cells(row)[2:9])}  ({timed})")
    finally:
        dist.destroy_process_group()

    failures = judge(rows, cpu)
    wall_s = time.perf_counter() - wall
    header = (
        f"{'CPU dry run' if cpu else info.get('gpu', 'GPU')}; torch {info['torch']}, deepspeed {info['deepspeed']}; "
        f"{len(pool)} samples {plan.shapes}, batch {plan.batch_size}, {plan.epochs} timed epoch(s) after 2 warm-up "
        f"epochs of {plan.warmup_batches} batches; wall {wall_s:.0f}s"
    )
    say(f"\n{header}\n{table(rows)}")
    if failures:
        verdict = "AGREEMENT FAILED:\n" + "\n".join(f"  {f}" for f in failures)
    else:
        verdict = f"AGREEMENT OK: all {len(rows)} rows within tolerance of fp32 DDP ({TOLERANCE})"
    if not cpu and wall_s > BUDGET_S:
        say(f"\n!!! WARNING: the run took {wall_s:.0f}s, over the {BUDGET_S}s budget")
    out = os.environ.get("OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        report = {
            "environment": info,
            "plan": {**asdict(plan), "device": device.type},
            "tolerance": TOLERANCE,
            "rows": [{**asdict(r), "id": r.id} for r in rows],
            "verdict": "failed" if failures else "ok",
            "failures": failures,
            "wall_s": wall_s,
        }
        (Path(out) / "gpu_check.json").write_text(json.dumps(report, indent=2))
        (Path(out) / "gpu_check.md").write_text(markdown(rows, header, verdict))
        say(f"\nwritten: {out}/gpu_check.json, {out}/gpu_check.md")
    if failures:
        say(f"\n!!! GPU CHECK FAILED: {verdict}\n")
        return 1
    say(f"\n{verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
