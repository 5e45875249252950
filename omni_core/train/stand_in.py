"""Stand-in stages: what the paper's pretrained encoders bring, given to the tiny profile's random ones.

The paper never trains an encoder from scratch: SigLIP and Whisper arrive pretrained, and the
alignment stages only map their features into the LLM. The tiny profile has no pretrained encoders,
and `benchmarks/bench_media_reading.py` measured what that costs: the answer loss of a few hundred
steps leaves a random-init encoder at chance on what its input holds. So a stand-in stage first trains
one encoder with a head and an objective of its own, on train-split data only; the recipe then keeps
that encoder frozen, as the paper keeps SigLIP in stage 1a.

`stages.<name>.objective` picks the stand-in (`BUILDERS`): `digit_classification` or
`digit_word_classification` (the vision tower, `vision_stand_in.py`) or `speech_ctc` (the audio encoder,
`audio_stand_in.py`). Each builds a `StandIn`; this module runs it like every stage: it trains only its
encoder's lr, resumes from `checkpoints/<name>/state`, logs `train/loss` and the held-out metrics with
dvclive, and exports the whole model (the head is dropped) to `checkpoints/<name>/model`.
"""
from __future__ import annotations

import importlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from omni_core.config import STAND_INS, Config, ConfigError, StageConfig
from omni_core.train.stage_run import StageRun, prepare_process
from omni_core.train.stages import build_scheduler, clip_and_step, count_params, init_model, param_groups

log = logging.getLogger(__name__)

# objective -> "module:function" that builds its StandIn (config.STAND_INS names the encoder each trains)
BUILDERS = {"digit_classification": "omni_core.train.vision_stand_in:digit_stand_in",
            "digit_word_classification": "omni_core.train.vision_stand_in:digit_stand_in",
            "digit_word_shape_classification": "omni_core.train.vision_stand_in:digit_stand_in",
            "speech_ctc": "omni_core.train.audio_stand_in:speech_stand_in"}


@dataclass
class StandIn:
    """One stand-in objective, built around the model's encoder."""
    module: nn.Module                                   # encoder + head: what trains and what a state restores
    loss: Callable[[int], torch.Tensor]                 # the loss of optimizer step s: a pure function of s
    validate: Callable[[], dict[str, float]]            # held-out metrics, keys as dvclive logs them ("val/...")
    headline: str                                       # the metric the log line reports, e.g. "val/accuracy"
    chance: float                                       # that metric's chance level
    facts: dict[str, Any] = field(default_factory=dict)   # for the summary (train / val sizes, vocabulary, ...)


def build_stand_in(cfg: Config, stage: StageConfig, model: nn.Module, device: torch.device) -> StandIn:
    mod, fn = BUILDERS[stage.objective].split(":")
    return getattr(importlib.import_module(mod), fn)(cfg, stage, model, device)


def _summary_key(metric: str, when: str) -> str:
    return f"{metric.replace('/', '_')}_{when}"          # "val/accuracy" -> "val_accuracy_end"


def train_stand_in(cfg: Config, name: str, *, on_step: Callable[[int, dict], None] | None = None,
                   progress: bool = True) -> dict[str, Any]:
    """Train stand-in stage `name`; the counterpart of `loop.train_stage`, with the same checkpoints, logs,
    resume and `on_step(step, metrics)` hook."""
    stage = cfg.stage(name)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(f"stages.{name} (objective {stage.objective}) runs in one process; "
                          f"launch it with train.nproc = 1")
    prepare_process(cfg)
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    run = StageRun(cfg, name)

    torch.manual_seed(cfg.train.seed)
    model, processor = init_model(cfg, name, dtype=torch.float32)
    param_groups(model, stage, name)                  # freezes all but the encoder (the config checked it)
    task = build_stand_in(cfg, stage, model, device)
    task.module.to(device)
    params = list(task.module.parameters())
    optimizer = torch.optim.AdamW(params, lr=stage.lr[STAND_INS[stage.objective]], weight_decay=stage.weight_decay)
    scheduler = build_scheduler(optimizer, stage)

    step = run.start_step
    if run.state is not None:
        run.load(model=task.module, optimizer=optimizer, scheduler=scheduler)
        log.info("resuming %s from %s (step %d)", name, run.state_dir, step)
    run.open_log({"objective": stage.objective})
    summary = run.summary
    summary.update(rank=0, world_size=1, backend="torch", objective=stage.objective, **task.facts)

    def validate(s: int, when: str | None = None) -> None:
        was = task.module.training
        task.module.eval()
        with torch.no_grad():
            metrics = task.validate()
        task.module.train(was)
        run.log(s, metrics)
        if when:
            summary.update({_summary_key(k, when): v for k, v in metrics.items()})

    if step == 0:
        validate(0, "start")

    def save(finished: bool) -> None:
        run.save(step, step * stage.batch_size, finished, state_model=task.module, optimizer=optimizer,
                 scheduler=scheduler, export_model=model, processor=processor)

    from tqdm.auto import tqdm

    bar = tqdm(total=stage.steps, initial=step, desc=name, disable=not progress, dynamic_ncols=True)
    task.module.train()
    t_start = time.perf_counter()
    while step < stage.steps:
        loss = task.loss(step)
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
    run.close(tuple(k for k in summary if k.startswith("val_")) + ("train_loss",))
    end = summary.get(_summary_key(task.headline, "end"), float("nan"))
    log.info("%s: %s %.1f on held-out data (chance %.1f)", name, task.headline, end, task.chance)
    summary.update({_summary_key(task.headline, "chance"): task.chance, "model": model})
    return summary
