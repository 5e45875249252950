"""An encoder's warm-up, run as a stage of its own: what the paper's pretrained encoders bring, given to
the tiny profile's random ones.

The paper never trains an encoder from scratch: SigLIP and Whisper arrive pretrained, and the
alignment stages only map their features into the LLM. The tiny profile has no pretrained encoders,
and `benchmarks/bench_media_reading.py` measured what that costs: the answer loss of a few hundred
steps leaves a random-init encoder at chance on what its input holds. So a warm-up stage first trains
one encoder with a head and an objective of its own, on train-split data only (a stand-in for its
pretraining); the recipe then keeps that encoder frozen, as the paper keeps SigLIP in stage 1a.

`stages.<name>.objective` picks the warm-up: `config.ENCODER_OBJECTIVES` names the encoder each objective
trains, and `BUILDERS` the module that builds its `EncoderObjective`: `vision_encoder.py`
(`digit_classification`, `digit_word_classification`, `digit_word_shape_classification`) or
`audio_encoder.py` (`speech_ctc`). `train_encoder` runs it like every stage: it trains only its encoder's
lr, resumes from `checkpoints/<name>/state`, logs `train/loss` and the held-out metrics with dvclive, and
exports the whole model (the head is dropped) to `checkpoints/<name>/model`.
"""
from __future__ import annotations

import importlib
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from omni_core.config import ENCODER_OBJECTIVES, Config, ConfigError, StageConfig
from omni_core.train.freezing import count_params, param_groups
from omni_core.train.model_init import init_model
from omni_core.train.process import prepare_process
from omni_core.train.run_state import StageRun
from omni_core.train.schedule import build_scheduler, clip_and_step
from omni_core.train.warmup.objective import EncoderObjective

log = logging.getLogger(__name__)

# the encoder a warm-up trains (config.ENCODER_OBJECTIVES) -> "module:function" that builds its EncoderObjective
BUILDERS = {"vision_encoder": "omni_core.train.warmup.vision_encoder:vision_encoder_objective",
            "audio_encoder": "omni_core.train.warmup.audio_encoder:audio_encoder_objective"}


def build_objective(cfg: Config, stage: StageConfig, model: nn.Module, device: torch.device) -> EncoderObjective:
    mod, fn = BUILDERS[ENCODER_OBJECTIVES[stage.objective]].split(":")
    return getattr(importlib.import_module(mod), fn)(cfg, stage, model, device)


def _summary_key(metric: str, when: str) -> str:
    return f"{metric.replace('/', '_')}_{when}"          # "val/accuracy" -> "val_accuracy_end"


def train_encoder(cfg: Config, stage: StageConfig, *, on_step: Callable[[int, dict], None] | None = None,
                  progress: bool = True) -> dict[str, Any]:
    """Train the encoder warm-up `stage`; the counterpart of `loop.train_stage`, with the same checkpoints,
    logs, resume and `on_step(step, metrics)` hook."""
    name = stage.name
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(f"stages.{name} (objective {stage.objective}) runs in one process; "
                          f"launch it with train.nproc = 1")
    prepare_process(cfg)
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    run = StageRun(cfg, stage)

    torch.manual_seed(cfg.train.seed)
    model, processor = init_model(cfg, stage, dtype=torch.float32)
    param_groups(model, stage)                        # freezes all but the encoder (the config checked it)
    objective = build_objective(cfg, stage, model, device)
    objective.module.to(device)
    params = list(objective.module.parameters())
    optimizer = torch.optim.AdamW(params, lr=stage.lr[ENCODER_OBJECTIVES[stage.objective]], weight_decay=stage.weight_decay)
    scheduler = build_scheduler(optimizer, stage)

    step = run.start_step
    if run.state is not None:
        run.load(model=objective.module, optimizer=optimizer, scheduler=scheduler)
        log.info("resuming %s from %s (step %d)", name, run.state_dir, step)
    run.open_log({"objective": stage.objective})
    summary = run.summary
    summary.update(rank=0, world_size=1, backend="torch", objective=stage.objective, **objective.facts)

    def validate(s: int, when: str | None = None) -> None:
        was = objective.module.training
        objective.module.eval()
        with torch.no_grad():
            metrics = objective.validate()
        objective.module.train(was)
        run.log(s, metrics)
        if when:
            summary.update({_summary_key(k, when): v for k, v in metrics.items()})

    if step == 0:
        validate(0, "start")

    def save(finished: bool) -> None:
        run.save(step, step * stage.batch_size, finished, state_model=objective.module, optimizer=optimizer,
                 scheduler=scheduler, final_model=model, processor=processor)

    from tqdm.auto import tqdm

    bar = tqdm(total=stage.steps, initial=step, desc=name, disable=not progress, dynamic_ncols=True)
    objective.module.train()
    t_start = time.perf_counter()
    while step < stage.steps:
        loss = objective.loss(step)
        loss.backward()
        lr = optimizer.param_groups[0]["lr"]
        grad_norm = clip_and_step(params, optimizer, scheduler, stage.max_grad_norm)
        step += 1
        summary["train_loss"] = float(loss.detach())
        metrics = {"train/loss": summary["train_loss"], "train/lr": lr, "train/grad_norm": grad_norm}
        run.log(step, metrics)
        if step % stage.eval_every == 0 and step < stage.steps:
            validate(step)
        bar.set_postfix(loss=f"{summary['train_loss']:.3f}", lr=f"{lr:.1e}")
        bar.update(1)
        run.end_step(step, metrics, save, on_step)
    bar.close()
    summary["wall_s"] = time.perf_counter() - t_start
    if run.trains_anew:
        validate(step, "end")
    summary.update(steps=step, params=count_params(model))
    if run.needs_final_save():
        save(finished=True)
    run.close(tuple(k for k in summary if k.startswith("val_")) + ("train_loss", "wall_s"))
    end = summary.get(_summary_key(objective.headline, "end"), float("nan"))
    log.info("%s: %s %.1f on held-out data (chance %.1f)", name, objective.headline, end, objective.chance)
    summary.update({_summary_key(objective.headline, "chance"): objective.chance, "model": model})
    return summary
