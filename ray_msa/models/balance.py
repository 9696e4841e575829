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
"""

from __future__ import annotations

import torch
from torch import nn

SHORT = {"text": "T", "audio": "A", "vision": "V"}


class GradientBalancer(nn.Module):
    def __init__(self, modalities: tuple[str, ...], lr: float = 0.05, floor: float = 0.05) -> None:
        super().__init__()
        self.modalities, self.lr, self.floor = modalities, lr, floor
        self.register_buffer("omega", torch.ones(len(modalities)))

    def weigh(self, z: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        return [self.omega[i] * z[m] for i, m in enumerate(self.modalities)]

    @torch.no_grad()
    def step(self, layers: dict[str, nn.Linear]) -> dict[str, float]:
        """One SGD step on L_w from the gradients now on each W_i; returns omega and g_i."""
        grads = [layers[m].weight.grad for m in self.modalities]
        if any(g is None for g in grads) or len(self.modalities) < 2:
            return {}
        g = torch.stack([grad.abs().mean() for grad in grads]).clamp(min=1e-12)
        target = g.mean() * (g.max() / g)
        slope = g / self.omega  # dg_i / dw_i
        self.omega.sub_(self.lr * torch.sign(g - target) * slope / slope.mean()).clamp_(min=self.floor)
        out = {f"omega_{SHORT[m]}": float(self.omega[i]) for i, m in enumerate(self.modalities)}
        out.update({f"grad_{SHORT[m]}": float(g[i]) for i, m in enumerate(self.modalities)})
        out["balance_loss"] = float((g - target).abs().sum())
        return out
