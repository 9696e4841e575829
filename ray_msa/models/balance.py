"""B-fusion: gradient-balanced modality weights omega (adaptive weight fusion).

Fusion input is `[w_T Z_T, w_A Z_A, w_V Z_V]` with omega initialised to 1. After each
backward pass of the task loss, g_i is the mean absolute gradient of that loss with
respect to modality i's last linear layer W_i; with g_bar the mean of the g_i and
r_i = max_k g_k / g_i, the balance loss is `L_w = sum_i |g_i - g_bar * r_i|`. omega takes
one SGD step on L_w with its own learning rate, treating `g_bar * r_i` as a constant
target and using dg_i/dw_i = g_i / w_i (g_i scales with w_i through the fusion input),
so the dominant modality's weight falls and the others' rise. The step is divided by the
mean slope so its size does not depend on the scale of the gradients (they are ~1e-4).
omega is a buffer: the task loss never updates it.

Gradients are read through `grad(param)`, which the engine supplies: DeepSpeed ZeRO >= 1
partitions them and leaves `.grad` None, so its engine gathers the full gradient instead.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

GradReader = Callable[[nn.Parameter], "torch.Tensor | None"]


def dot_grad(param: nn.Parameter) -> torch.Tensor | None:
    return param.grad


SHORT = {"text": "T", "audio": "A", "vision": "V"}


@torch.no_grad()
def measure(layers: dict[str, nn.Module], modalities: tuple[str, ...], grad: GradReader = dot_grad) -> torch.Tensor:
    """g_i: the mean absolute task-loss gradient on each modality's last layer W_i."""
    values = []
    for m in modalities:
        g = grad(layers[m].weight)
        if g is None:
            raise RuntimeError(
                f"B-fusion: no gradient on the {m} layer W_{SHORT[m]} after backward (an engine that partitions "
                "gradients must pass its own grad reader)"
            )
        values.append(g.abs().mean())
    return torch.stack(values).float().clamp(min=1e-12)


def gradients(
    layers: dict[str, nn.Module], modalities: tuple[str, ...], grad: GradReader = dot_grad
) -> dict[str, float]:
    """The g_i as logged metrics, whether or not omega is balanced (the gradient curves per modality)."""
    g = measure(layers, modalities, grad)
    return {f"grad_{SHORT[m]}": float(g[i]) for i, m in enumerate(modalities)}


class GradientBalancer(nn.Module):
    def __init__(self, modalities: tuple[str, ...], lr: float = 0.05, floor: float = 0.05) -> None:
        super().__init__()
        self.modalities, self.lr, self.floor = modalities, lr, floor
        self.register_buffer("omega", torch.ones(len(modalities)))

    def weigh(self, z: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        return [self.omega[i] * z[m] for i, m in enumerate(self.modalities)]

    @torch.no_grad()
    def step(self, layers: dict[str, nn.Module], grad: GradReader = dot_grad) -> dict[str, float]:
        """One SGD step on L_w from the gradients now on each W_i; returns omega and g_i."""
        g = measure(layers, self.modalities, grad)
        out = {f"grad_{SHORT[m]}": float(g[i]) for i, m in enumerate(self.modalities)}
        if len(self.modalities) < 2:
            return out
        target = g.mean() * (g.max() / g)
        slope = g / self.omega  # dg_i / dw_i
        self.omega.sub_(self.lr * torch.sign(g - target) * slope / slope.mean()).clamp_(min=self.floor)
        out.update({f"omega_{SHORT[m]}": float(self.omega[i]) for i, m in enumerate(self.modalities)})
        out["balance_loss"] = float((g - target).abs().sum())
        return out
