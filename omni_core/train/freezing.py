"""Freezing as data: which modules a stage trains, at which learning rate.

`stages.<name>.lr` maps module names (`omni_core.config.MODULES`) to learning rates. A module whose lr is
0 or absent is frozen: `requires_grad=False` and left out of the optimizer, so it costs neither gradient
memory nor optimizer state (as in nanoVLM). With `train.lora_rank > 0` the LLM is wrapped by peft
(`model_init.apply_lora`) and only its LoRA matrices train, at the LLM's learning rate.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from omni_core.config import MODULES, Config, ConfigError, StageConfig


def stage_lrs(stage: StageConfig) -> dict[str, float]:
    """Module -> lr for the modules this stage trains (lr > 0), in the fixed order of MODULES."""
    return {m: float(stage.lr[m]) for m in MODULES if stage.lr.get(m, 0.0) > 0}


def _trainable_params(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """A module's parameters that should train; under peft LoRA, only the adapter matrices."""
    named = list(module.named_parameters())
    if any("lora_" in n for n, _ in named):
        return [(n, p) for n, p in named if "lora_" in n]
    return named


def param_groups(model: nn.Module, stage: StageConfig) -> list[dict[str, Any]]:
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
                raise ValueError(f"stages.{stage.name}.lr: parameter {name}.{pname} is shared with "
                                 f"{seen[id(p)]}; train both at one lr or untie them")
            seen[id(p)] = name
            p.requires_grad_(True)
            (no_decay if stage.weight_decay > 0 and p.ndim < 2 else decay).append(p)
        for params, wd, suffix in ((decay, stage.weight_decay, ""), (no_decay, 0.0, "/no_decay")):
            if params:
                out.append({"name": name + suffix, "params": params, "lr": lr, "initial_lr": lr,
                            "weight_decay": wd})
    if not out:
        raise ConfigError(f"stages.{stage.name}.lr trains nothing (every module has lr 0 or is absent); "
                          f"give at least one of {list(MODULES)} an lr > 0")
    return out


def trainable_summary(cfg: Config, stage: StageConfig):
    """What `stage` trains, from the config alone (no model is built): a pandas DataFrame with one
    row per module -- learning rate, trains / frozen, and LoRA for the LLM when `train.lora_rank > 0`."""
    import pandas as pd

    lrs = stage_lrs(stage)
    rows = []
    for m in MODULES:
        how = "frozen" if m not in lrs else ("LoRA adapters" if m == "llm" and cfg.train.lora_rank > 0 else "trains")
        rows.append({"module": m, "lr": lrs.get(m, 0.0), "status": how})
    df = pd.DataFrame(rows).set_index("module")
    df.attrs.update(stage=stage.name, init_from=stage.init_from, profile=cfg.profile)
    return df


def count_params(model: nn.Module) -> dict[str, dict[str, int]]:
    """Per-module parameter counts, total and trainable (for the log and the notebooks)."""
    return {name: {"total": sum(p.numel() for p in mod.parameters()),
                   "trainable": sum(p.numel() for p in mod.parameters() if p.requires_grad)}
            for name, mod in model.module_groups().items()}
