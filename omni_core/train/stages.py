"""A stage of the recipe: which modules train at which learning rate, where it starts from, its schedule.

`cfg.stages[name].lr` maps module names (`omni_core.config.MODULES`) to learning rates. A module whose
lr is 0 or absent is frozen: `requires_grad=False` and left out of the optimizer, so it costs neither
gradient memory nor optimizer state (as in nanoVLM). With `train.lora_rank > 0` the LLM is wrapped by
peft and only its LoRA matrices train at the LLM's learning rate.
"""
from __future__ import annotations

import logging
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from omni_core.config import MODULES, Config, ConfigError, StageConfig

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------ freezing + groups
def stage_lrs(stage: StageConfig) -> dict[str, float]:
    """Module -> lr for the modules this stage trains (lr > 0), in the fixed order of MODULES."""
    return {m: float(stage.lr[m]) for m in MODULES if stage.lr.get(m, 0.0) > 0}


def _trainable_params(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """A module's parameters that should train; under peft LoRA, only the adapter matrices."""
    named = list(module.named_parameters())
    if any("lora_" in n for n, _ in named):
        return [(n, p) for n, p in named if "lora_" in n]
    return named


def param_groups(model: nn.Module, stage: StageConfig, stage_name: str = "?") -> list[dict[str, Any]]:
    """Freeze the model except the stage's modules and return torch optimizer param groups.

    One group per trained module (two when weight decay is on: biases and norms get none), each with
    its `lr` and a `name` for logging. Every frozen parameter gets `requires_grad=False`.
    """
    groups = model.module_groups()
    missing = [m for m in MODULES if m not in groups]
    if missing:
        raise ValueError(f"model.module_groups() lacks {missing}; it must name all of {list(MODULES)}")
    # parameters the model itself keeps fixed (e.g. Whisper's sinusoidal positions) never train
    if not hasattr(model, "_omni_fixed_params"):
        model._omni_fixed_params = {n for n, p in model.named_parameters() if not p.requires_grad}
    fixed = {id(p) for n, p in model.named_parameters() if n in model._omni_fixed_params}
    model.requires_grad_(False)
    out: list[dict[str, Any]] = []
    seen: dict[int, str] = {}
    for name, lr in stage_lrs(stage).items():
        decay, no_decay = [], []
        for pname, p in _trainable_params(groups[name]):
            if id(p) in fixed:
                continue
            if id(p) in seen:      # a weight shared by two modules would be stepped twice
                raise ValueError(f"stages.{stage_name}.lr: parameter {name}.{pname} is shared with "
                                 f"{seen[id(p)]}; train both at one lr or untie them")
            seen[id(p)] = name
            p.requires_grad_(True)
            (no_decay if stage.weight_decay > 0 and p.ndim < 2 else decay).append(p)
        for params, wd, suffix in ((decay, stage.weight_decay, ""), (no_decay, 0.0, "/no_decay")):
            if params:
                out.append({"name": name + suffix, "params": params, "lr": lr, "initial_lr": lr,
                            "weight_decay": wd})
    if not out:
        raise ConfigError(f"stages.{stage_name}.lr trains nothing (every module has lr 0 or is absent); "
                          f"give at least one of {list(MODULES)} an lr > 0")
    return out


def trainable_summary(cfg: Config, name: str):
    """What stage `name` trains, from the config alone (no model is built): a pandas DataFrame with one
    row per module -- learning rate, trains / frozen, and LoRA for the LLM when `train.lora_rank > 0`."""
    import pandas as pd

    stage, lrs = cfg.stage(name), stage_lrs(cfg.stage(name))
    rows = []
    for m in MODULES:
        how = "frozen" if m not in lrs else ("LoRA adapters" if m == "llm" and cfg.train.lora_rank > 0 else "trains")
        rows.append({"module": m, "lr": lrs.get(m, 0.0), "status": how})
    df = pd.DataFrame(rows).set_index("module")
    df.attrs.update(stage=name, init_from=stage.init_from, profile=cfg.profile)
    return df


def count_params(model: nn.Module) -> dict[str, dict[str, int]]:
    """Per-module parameter counts, total and trainable (for the log and the notebooks)."""
    return {name: {"total": sum(p.numel() for p in mod.parameters()),
                   "trainable": sum(p.numel() for p in mod.parameters() if p.requires_grad)}
            for name, mod in model.module_groups().items()}


def apply_lora(model: nn.Module, rank: int) -> nn.Module:
    """Wrap the LLM with peft LoRA adapters (rank r, alpha 2r, every linear layer but the LM head)."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules="all-linear")
    model.llm = get_peft_model(model.llm, lora)
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold LoRA adapters back into the LLM's weights (in place); a no-op without LoRA."""
    from peft import PeftModel

    if isinstance(model.llm, PeftModel):
        model.llm = model.llm.merge_and_unload()
    return model


# --------------------------------------------------------------------------------------------- schedule
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


# --------------------------------------------------------------------------------------- initialisation
def stage_dir(cfg: Config, name: str) -> Path:
    return Path(cfg.train.checkpoints_dir) / name


def resolve_attn(requested: str) -> str:
    """The attention implementation to load with: flash_attention_2 only where it is installed and a
    CUDA device exists, else sdpa (with a warning, so a full-profile config still runs on a laptop)."""
    if requested != "flash_attention_2":
        return requested
    import importlib.util

    if torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
        return requested
    log.warning("attn_implementation=flash_attention_2 needs the flash-attn package and a CUDA GPU; using sdpa")
    return "sdpa"


def resolve_init(cfg: Config, name: str) -> str | None:
    """The stage whose model `name` starts from: its `init_from`, passed through the stages the profile
    disables (small and full skip the stand-ins, so 1a starts from what they would have started from)."""
    init, seen = cfg.stage(name).init_from, [name]
    while init is not None and not cfg.stage(init).enabled:
        if init in seen:
            raise ConfigError(f"stages.{name}.init_from loops through disabled stages: {' -> '.join(seen + [init])}")
        seen.append(init)
        init = cfg.stage(init).init_from
    return init


def init_model(cfg: Config, name: str, dtype: torch.dtype | None = None):
    """Model and processor a stage starts from: `checkpoints/<init_from>/model`, or a fresh model.

    Returns (model, processor). The LLM gets LoRA adapters when `train.lora_rank > 0` and the stage
    trains it.
    """
    from omni_core.model import OmniForConditionalGeneration, build_model, load_tokenizer
    from omni_core.processing import OmniProcessor

    stage, init = cfg.stage(name), resolve_init(cfg, name)
    attn = resolve_attn(cfg.model.attn_implementation)
    dtype = dtype or getattr(torch, cfg.model.dtype)
    if init is not None:
        src = stage_dir(cfg, init) / "model"
        if not (src / "config.json").exists():
            raise FileNotFoundError(
                f"stages.{name} starts from {init!r} but {src} holds no model; train that stage "
                f"first: python -m omni_core.train --stage {init}")
        model = OmniForConditionalGeneration.from_pretrained(src, dtype=dtype, attn_implementation=attn)
        processor = OmniProcessor.from_pretrained(src)
    else:
        tok_dir = cfg.model.tokenizer.path or str(Path(cfg.data.root) / "tokenizer")
        processor = OmniProcessor(load_tokenizer(tok_dir, cfg.model.trust_remote_code), cfg.model)
        model = build_model(replace(cfg, model=replace(cfg.model, attn_implementation=attn)), processor.tokenizer)
        model = model.to(dtype)
    processor.images_as_video = stage.images_as_video
    if stage.init_video_projector:
        from transformers.integrations import is_deepspeed_zero3_enabled

        if is_deepspeed_zero3_enabled():      # weights partitioned at load: gather, copy, re-partition
            import deepspeed

            both = [*model.vision_projector.parameters(), *model.video_projector.parameters()]
            with deepspeed.zero.GatheredParameters(both, modifier_rank=0):
                model.init_video_projector_from_image()
        else:
            model.init_video_projector_from_image()
    if cfg.train.lora_rank > 0 and stage.lr.get("llm", 0.0) > 0:
        apply_lora(model, cfg.train.lora_rank)
    return model, processor
