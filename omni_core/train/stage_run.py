"""The bookkeeping every stage shares besides its optimizer steps: resume or start over, dvclive logs,
resumable states and the final HF export. `loop.train_stage` (the language-model stages) and
`stand_in.train_stand_in` (the encoders' stand-in pre-training, stages 0_vision and 0_audio) each drive one
`StageRun`.
"""
from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from omni_core.config import Config
from omni_core.train import checkpoint as ckpt
from omni_core.train.stages import stage_dir


def prepare_process(cfg: Config) -> None:
    """Per-process settings of a training run: CPU threads, and no per-file load/save bars from transformers
    (they would bury the training bar)."""
    from transformers.utils import logging as hf_logging

    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    hf_logging.disable_progress_bar()


def truncate_logs(metrics_dir: Path, step: int) -> None:
    """Drop dvclive rows logged after `step` by a run that died before its next checkpoint (the resumed
    run logs those steps again)."""
    for tsv in metrics_dir.rglob("*.tsv"):
        header, *rows = tsv.read_text().splitlines()
        col = header.split("\t").index("step")
        tsv.write_text("\n".join([header] + [r for r in rows if int(r.split("\t")[col]) <= step]) + "\n")


SKIPPED_FILE = "skipped.json"


def skip_stage(cfg: Config, name: str) -> dict[str, Any]:
    """Stand in for a stage the profile disables: its outs are a record, not a model.

    `checkpoints/<name>/model/skipped.json` names the checkpoint the next stage starts from instead
    (`stages.resolve_init`) with the digest of its weights, so DVC reruns the stages below when those change;
    `state/` exists empty and `logs/<name>` loses any dvclive log of an earlier, enabled run (figures and
    `dvc plots` would show it as this profile's)."""
    from omni_core.train.stages import resolve_init

    out = stage_dir(cfg, name)
    init = resolve_init(cfg, name)
    record = {"stage": name, "profile": cfg.profile, "skipped": True,
              "next_stage_starts_from": init or "a fresh model built from the config",
              "init_weights_digest": ckpt.init_digest(cfg, init)}
    with ckpt.atomic_dir(out / "model") as tmp:
        (tmp / SKIPPED_FILE).write_text(json.dumps(record, indent=1) + "\n")
    shutil.rmtree(out / "state", ignore_errors=True)
    (out / "state").mkdir(parents=True)
    logs = Path(cfg.train.log_dir) / name
    shutil.rmtree(logs / "plots", ignore_errors=True)
    for f in ("metrics.json", "params.yaml"):
        (logs / f).unlink(missing_ok=True)
    return record


class StageRun:
    """One run of stage `name`: finds a state to resume (or removes a stale one), logs with dvclive on the
    main rank, and saves states and the export. `summary` collects the stage's metrics; its floats are
    stored in every state, so a resumed run reports the `val_loss_start` of the run it continues."""

    def __init__(self, cfg: Config, name: str, *, world_size: int = 1, deepspeed: bool = False,
                 main: bool = True, rank: int = 0, barrier: Callable[[], None] = lambda: None):
        self.cfg, self.name, self.main, self.rank, self.barrier = cfg, name, main, rank, barrier
        self.world_size = world_size
        self.out_dir = stage_dir(cfg, name)
        self.fp, self.inputs = ckpt.fingerprint(cfg, name), ckpt.stage_inputs(cfg, name)
        self.state_dir = ckpt.latest_state(self.out_dir) if cfg.train.resume == "auto" else None
        self.state = (ckpt.check_resumable(self.state_dir, self.fp, world_size, deepspeed, self.inputs)
                      if self.state_dir else None)
        if self.state is None and main and (self.out_dir / "state").exists():
            shutil.rmtree(self.out_dir / "state")          # a state of another run must not mix with this one
        barrier()
        self.summary: dict[str, Any] = {"stage": name}
        if self.state is not None:
            self.summary.update(self.state.metrics)
        self.live = None

    @property
    def start_step(self) -> int:
        return self.state.step if self.state is not None else 0

    @property
    def trains_anew(self) -> bool:
        """False when the state found is a finished run of the same inputs: nothing is left to train."""
        return self.state is None or not self.state.finished

    def load(self, **objects: Any) -> None:
        """Restore the state's weights, optimizer, scheduler (and engine) into `objects` (`ckpt.load_state`)."""
        ckpt.load_state(self.state_dir, rank=self.rank, **objects)

    def open_log(self, params: dict[str, Any]) -> None:
        if not self.main:
            return
        from dvclive import Live

        self.live = Live(dir=str(Path(self.cfg.train.log_dir) / self.name), resume=self.state is not None,
                         save_dvc_exp=False, dvcyaml=None)
        if self.state is not None:
            truncate_logs(Path(self.live.plots_dir) / "metrics", self.state.step)
        self.live.log_params({"stage": self.name, **params})

    def log(self, step: int, metrics: dict[str, float | None]) -> None:
        if self.live is None:
            return
        self.live.step = step
        for k, v in metrics.items():
            if v is not None and math.isfinite(v):
                self.live.log_metric(k, v)

    def save(self, step: int, samples_seen: int, finished: bool, *, state_model: nn.Module, optimizer: Any,
             scheduler: Any, export_model: nn.Module, processor: Any, engine: Any = None) -> None:
        """Write the resumable state of `state_model` (+ optimizer, scheduler); once `finished`, also export
        `export_model`. The periodic states alone can resume a run, so the HF copy is written once: it cost
        ~0.2 s per save at tiny scale, and a ZeRO-3 gather plus a second full write at 7B."""
        info = {"stage": self.name, "step": step, "config_hash": ckpt.config_hash(self.fp), "finished": finished}
        st = ckpt.TrainerState(stage=self.name, step=step, samples_seen=samples_seen, config_hash=info["config_hash"],
                               world_size=self.world_size, finished=finished, fingerprint=self.fp, inputs=self.inputs,
                               metrics={k: v for k, v in self.summary.items() if isinstance(v, float)})
        ckpt.save_state(self.out_dir, st, model=state_model, optimizer=optimizer, scheduler=scheduler, engine=engine,
                        rank=self.rank, barrier=self.barrier)
        if finished:
            ckpt.export_model(export_model, processor, self.out_dir / "model", engine=engine, rank=self.rank,
                              barrier=self.barrier, info=info)

    def end_step(self, step: int, metrics: dict[str, float], save: Callable[[bool], None],
                 on_step: Callable[[int, dict], None] | None) -> None:
        """After optimizer step `step`: a resumable state every `save_every` steps (the last step's is the
        final save), then the caller's `on_step` hook."""
        stage = self.cfg.stage(self.name)
        if step % stage.save_every == 0 and step < stage.steps:
            save(False)
        if on_step is not None:
            on_step(step, metrics)

    def needs_final_save(self) -> bool:
        return self.trains_anew or not (self.out_dir / "model" / "config.json").exists()

    def close(self, summary_keys: tuple[str, ...]) -> None:
        """Write the float entries of `summary` named in `summary_keys` to dvclive's summary and end it."""
        if self.live is None:
            return
        for k in summary_keys:
            if isinstance(self.summary.get(k), float):
                self.live.summary[k] = self.summary[k]
        self.live.end()
