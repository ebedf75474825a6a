"""Optimisation pieces the loop composes: the learning rate as a pure function of the step, AdamW over the
model's trainable parameters, and an exponential moving average of the weights.

The LR depends on nothing but (step, config), as in nanoGPT: a resumed run needs no scheduler state.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from songcorpus.schemas.training import OptimConfig


def learning_rate(step: int, total_steps: int, cfg: OptimConfig) -> float:
    """Linear warmup over ``warmup_steps`` to ``lr``, then cosine to ``lr * min_lr_ratio`` at ``total_steps``."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, total_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + 0.5 * (cfg.lr - floor) * (1 + math.cos(math.pi * progress))


def make_optimizer(params: list[nn.Parameter], cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW; biases and norm gains (1-d tensors) get no weight decay, as nanoGPT and torchtitan do."""
    decay = [p for p in params if p.ndim >= 2]
    flat = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": flat, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=cfg.betas, foreach=False)


def ema_decay(step: int, decay: float) -> float:
    """The EMA's decay at optimiser step ``step`` (0-based): ``min(decay, (1 + step) / (10 + step))``, the
    warm-up of TensorFlow's ``ExponentialMovingAverage(num_updates=...)``. A fixed 0.999 keeps 0.999**n of the
    random initial weights after n steps (92% after 84, 37% after 1,000), so a short run's EMA, which is what
    ``generate`` and ``evaluate`` load, would be close to its untrained model. A pure function of the step, like
    the LR: a resumed run needs no extra state."""
    return min(decay, (1 + step) / (10 + step))


class EMA:
    """Shadow copies of every parameter and buffer, updated after each optimiser step (:func:`ema_decay`)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        decay = ema_decay(step, self.decay)
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].mul_(decay).add_(v.detach(), alpha=1 - decay)
            else:
                self.shadow[k].copy_(v)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = set(self.shadow) ^ set(state)
        if missing:
            raise KeyError(f"EMA state does not match the model: {sorted(missing)[:5]}")
        self.shadow = {k: v.clone() for k, v in state.items()}
