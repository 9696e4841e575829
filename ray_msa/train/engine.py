"""How one training step is executed: plain DDP, or a DeepSpeed engine.

The loop only calls `forward`, `backward`, `step`, `state_dict` and `load_state_dict`,
so the same loop runs either engine. DeepSpeed gets our torch optimizer (no extra
C++ optimizer build) and the repo's `deepspeed.json` (or `--deepspeed-config FILE`) with
its "auto" values filled from the trial: micro-batch per worker, gradient clipping, ZeRO
stage, and bf16/fp16 only on GPUs.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

from ray_msa.config import SCHEDULES, TrainConfig
from ray_msa.errors import InputError
from ray_msa.models.base import ModelOutput, MSAModel


def make_optimizer(model: MSAModel, train: TrainConfig) -> torch.optim.Optimizer:
    """AdamW (default), Adam or SGD with momentum over the model's parameter groups. Adam's update is
    PyTorch's fused kernel (one pass over all parameters on CPU and GPU): on CPU the default per-tensor
    loop took 8% of a default `mtl` step; the same rule, equal to it to float rounding."""
    groups = model.parameter_groups(train.lr)
    if train.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay)
    optimizer = torch.optim.AdamW if train.optimizer == "adamw" else torch.optim.Adam
    return optimizer(groups, lr=train.lr, weight_decay=train.weight_decay, fused=True)


def make_schedule(
    optimizer: torch.optim.Optimizer, schedule: str, warmup: float, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """Per-step learning-rate schedule over a fold's `total_steps` (max epochs x batches):
    linear warm-up for the first `warmup` fraction, then linear or cosine decay to zero
    (every parameter group scaled alike). Transformers trained from scratch or fine-tuned on
    a few thousand examples need the warm-up; the decay settles the epochs before early
    stopping picks the best one. `constant`: no scheduler."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown lr_schedule '{schedule}', expected one of {SCHEDULES}")
    if schedule == "constant":
        return None
    ramp = min(max(0, round(warmup * total_steps)), total_steps - 1)
    rest = max(1, total_steps - ramp)
    decay = LinearLR(optimizer, 1.0, 0.0, rest) if schedule == "linear" else CosineAnnealingLR(optimizer, rest)
    if ramp == 0:
        return decay
    return SequentialLR(optimizer, [LinearLR(optimizer, 1.0 / (ramp + 1), 1.0, ramp), decay], milestones=[ramp])


DEEPSPEED_CONFIG = Path(__file__).with_name("deepspeed.json")


def deepspeed_config(
    batch_size: int,
    world: int,
    grad_clip: float,
    zero_stage: int,
    device: torch.device,
    template: str | Path | None = None,
) -> dict[str, Any]:
    """The trial's DeepSpeed config: the template (the repo's `deepspeed.json`, or the user's
    file) with every "auto" filled in. Global batch = the trial's batch size, split into
    micro-batches over the workers; gradient clipping and ZeRO stage from the trial; bf16 on
    GPUs that support it, fp16 (dynamic loss scaling) on other GPUs, fp32 on CPU. Values the
    template sets explicitly are kept."""
    path = Path(template) if template else DEEPSPEED_CONFIG
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(
            path, "deepspeed config", f"cannot be read as JSON ({err})", "pass a valid DeepSpeed JSON file or none"
        ) from None
    micro = max(1, batch_size // world)
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    auto = {
        "train_micro_batch_size_per_gpu": micro,
        "train_batch_size": micro * world * int(config.get("gradient_accumulation_steps", 1)),
        "gradient_clipping": grad_clip,
        "zero_optimization.stage": zero_stage,
        "bf16.enabled": bf16,
        "fp16.enabled": device.type == "cuda" and not bf16,
    }
    for dotted, value in auto.items():
        *parents, key = dotted.split(".")
        node = config
        for name in parents:
            node = node.setdefault(name, {})
        if node.get(key, "auto") == "auto":
            node[key] = value
    # our optimizers are torch's own (SGD, Adam, AdamW); DeepSpeed's ZeRO names only some as tested
    config.setdefault("zero_allow_untested_optimizer", True)
    for section in ("bf16", "fp16"):  # DeepSpeed rejects a half-precision section on CPU
        if not config.get(section, {}).get("enabled", False):
            config.pop(section, None)
    return config


def as_float32(output: ModelOutput) -> ModelOutput:
    """Half-precision outputs as float32, so losses and metrics are computed in full precision."""
    if output.prediction.dtype == torch.float32:
        return output
    return ModelOutput(output.prediction.float(), {k: v.float() for k, v in output.extras.items()})


class Engine:
    """DDP (or a single process): backward, clip, optimizer step, schedule step."""

    def __init__(self, model: MSAModel, train: TrainConfig, device: torch.device, total_steps: int = 1) -> None:
        """`total_steps`: optimizer steps the learning-rate schedule spans (a fold's max epochs x batches)."""
        self.model = model.to(device)
        self.grad_clip = train.grad_clip
        self.autocast = train.precision == "bf16"  # DDP engine: bf16 autocast; DeepSpeed's comes from its config
        self.device_type = device.type
        self.optimizer = make_optimizer(self.model, train)
        self.scheduler = make_schedule(self.optimizer, train.lr_schedule, train.warmup, max(1, total_steps))
        self.wrapped = self.wrap(train, device)

    def wrap(self, train: TrainConfig, device: torch.device) -> nn.Module:
        """What the forward pass runs through: DDP over several processes, else the bare model."""
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            ids = [device.index] if device.type == "cuda" else None
            return nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        return self.model

    def forward(self, batch: dict[str, torch.Tensor]) -> ModelOutput:
        return self._run(self.wrapped, batch)

    def predict(self, batch: dict[str, torch.Tensor]) -> ModelOutput:
        """Inference on the bare model: no DDP collectives, so shards may differ in size."""
        return self._run(self.model, batch)

    def _run(self, module: nn.Module, batch: dict[str, torch.Tensor]) -> ModelOutput:
        if not self.autocast:
            return module(batch)
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            return as_float32(module(batch))

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def full_grad(self, param: nn.Parameter) -> torch.Tensor | None:
        """A parameter's whole gradient between backward and step (models that read gradients use this)."""
        return param.grad

    def step(self) -> None:
        if self.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scheduler is not None:
            self.scheduler.step()

    def train(self, mode: bool = True) -> None:
        self.wrapped.train(mode)

    def state_dict(self) -> dict[str, Any]:
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and "scheduler" in state:
            self.scheduler.load_state_dict(state["scheduler"])


class DeepSpeedEngine(Engine):
    """The same contract on a DeepSpeed engine (ZeRO 0-3; works on CPU with gloo)."""

    def wrap(self, train: TrainConfig, device: torch.device) -> nn.Module:
        """DeepSpeed takes over our optimizer and steps our schedule after each optimizer step."""
        import deepspeed  # heavy: only DeepSpeed trials load it

        if device.type == "cpu":
            _skip_shared_memory_all_reduce_build()
        world = dist.get_world_size() if dist.is_initialized() else 1
        config = deepspeed_config(
            train.batch_size, world, train.grad_clip, train.zero_stage, device, train.deepspeed_config
        )
        self.ds, self.optimizer, _, _ = deepspeed.initialize(
            model=self.model, optimizer=self.optimizer, lr_scheduler=self.scheduler, config=config
        )
        return self.ds

    def forward(self, batch: dict[str, torch.Tensor]) -> ModelOutput:
        return self._in_model_dtype(self.ds, batch)

    def predict(self, batch: dict[str, torch.Tensor]) -> ModelOutput:
        return self._in_model_dtype(self.ds.module, batch)

    def _in_model_dtype(self, module: nn.Module, batch: dict[str, torch.Tensor]) -> ModelOutput:
        """bf16/fp16 engines get inputs in their dtype; outputs come back as float32."""
        dtype = next((p.dtype for p in self.ds.module.parameters()), torch.float32)
        if dtype != torch.float32:
            batch = {k: v.to(dtype) if v.is_floating_point() else v for k, v in batch.items()}
        return as_float32(module(batch))

    def backward(self, loss: torch.Tensor) -> None:
        self.ds.backward(loss)

    def full_grad(self, param: nn.Parameter) -> torch.Tensor | None:
        """ZeRO >= 1 partitions gradients and leaves `.grad` None: gather this parameter's."""
        from deepspeed.utils import safe_get_full_grad  # heavy: only DeepSpeed trials load it

        return safe_get_full_grad(param)

    def step(self) -> None:
        self.ds.step()  # clips, steps and zeroes gradients per the config, then steps the schedule


def _skip_shared_memory_all_reduce_build() -> None:
    """On CPU, DeepSpeed's communication backend compiles a C++ shared-memory all-reduce when it first starts
    (once per machine, about a minute of both cores here), which only its tensor-parallel inference calls
    (`inference_all_reduce`); ZeRO training reduces through torch.distributed, so the engine goes without it."""
    # by its module's name: the attribute `deepspeed.comm.torch` is the torch package itself
    backend = importlib.import_module("deepspeed.comm.torch")
    if hasattr(backend, "build_shm_op"):  # a DeepSpeed without it builds nothing to skip
        backend.build_shm_op = lambda: None


def make_engine(model: MSAModel, train: TrainConfig, device: torch.device, total_steps: int = 1) -> Engine:
    """The trial's engine (`train.engine`) around `model`."""
    return (DeepSpeedEngine if train.engine == "deepspeed" else Engine)(model, train, device, total_steps)
