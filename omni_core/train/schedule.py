"""The learning-rate schedule and the optimizer step that every training loop of the package shares
(the recipe's stages, the encoder warm-ups and the audio projector's CTC warm-up)."""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from omni_core.config import StageConfig


def lr_factor(step: int, total_steps: int, warmup_ratio: float, min_lr_ratio: float) -> float:
    """Multiplier of the base lr for optimizer step `step` (0-based): linear warm-up, then cosine decay
    to `min_lr_ratio` at the last step.

    transformers' get_cosine_with_min_lr_schedule_with_warmup gives step 0 an lr of 0 (a wasted step,
    and a stage of 1-2 steps would not train); here warm-up step s uses (s + 1) / warmup.
    """
    warmup = math.ceil(warmup_ratio * total_steps)
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup - 1)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_scheduler(optimizer: torch.optim.Optimizer, stage: StageConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Warm-up + cosine LambdaLR over the stage's optimizer steps (one factor for every param group)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, stage.steps, stage.warmup_ratio, stage.min_lr_ratio))


def clip_and_step(params: list[nn.Parameter], optimizer: torch.optim.Optimizer, scheduler: Any,
                  max_grad_norm: float) -> float:
    """Clip the grads of `params` to `max_grad_norm` (0: no clipping), step the optimizer and the scheduler,
    clear the grads; returns the norm before clipping. The one-process optimizer step of every loop."""
    norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm if max_grad_norm > 0 else float("inf"))
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return float(norm)
