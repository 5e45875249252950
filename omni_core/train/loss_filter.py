"""The paper's loss-based SFT data filter: score every sample of a stage's mixture with the model the stage
starts from and keep those whose loss lies within mean +/- k standard deviations ("select data the model can
already handle": the lowest losses are what it knows already, the highest are noise or out of its reach).

`stages.<name>.loss_filter_k > 0` turns it on (0 = off). The band is taken per task, not over all samples:
tasks have very different loss scales (a one-word VQA answer vs a caption vs free prose), so one global band
would drop whole hard tasks and keep every sample of easy ones, and the mixture's weights would no longer say
what the stage trains on. Per task it trims each task's own tails and leaves the mixture as configured.

The kept ids go to `checkpoints/<stage>/state/loss_filter_kept.json`, next to the resumable states (and
removed with them when they are stale), so a resumed run trains on exactly the samples the interrupted one
chose without scoring again; the report goes to `<train.log_dir>/<stage>/loss_filter.json`.
"""
from __future__ import annotations

import functools
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from omni_core.config import Config, ConfigError, StageConfig
from omni_core.data.collate import pad_collate
from omni_core.model.labels import IGNORE_INDEX
from omni_core.train.batches import StageBatches, truncate
from omni_core.train.run_state import stage_dir, write_text_atomic

log = logging.getLogger(__name__)
KEPT_FILE = "loss_filter_kept.json"
REPORT_FILE = "loss_filter.json"
EXAMPLES = 5              # removed ids per task in the report, the farthest from the task's mean first


# ----------------------------------------------------------------------------------------------- band
def band_filter(losses: Sequence[float], tasks: Sequence[str], k: float) -> tuple[list[int], dict[str, dict]]:
    """Positions whose loss lies within [mean - k std, mean + k std] of its own task, and the band per task.

    Mean and (population) std are per task (module docstring). The band is inclusive, with a rounding
    tolerance, so a task whose losses are all equal (std 0) keeps every sample and a loss exactly at an edge
    stays. A NaN loss (a sample with no supervised token left) is outside every band and left out of the
    statistics. k >= 1 keeps at least one sample of every task (not all can lie more than one std away)."""
    if k <= 0:
        raise ValueError(f"band_filter needs k > 0, got {k} (k = 0 means: no filter)")
    if len(losses) != len(tasks):
        raise ValueError(f"{len(losses)} losses but {len(tasks)} task names: one of each per sample")
    by_task: dict[str, list[int]] = {}
    for i, t in enumerate(tasks):
        by_task.setdefault(t, []).append(i)
    kept: list[int] = []
    bands: dict[str, dict] = {}
    for task, idx in sorted(by_task.items()):
        vals = torch.tensor([losses[i] for i in idx], dtype=torch.float64)
        finite = vals[torch.isfinite(vals)]
        if len(finite) == 0:
            bands[task] = {"mean": None, "std": None, "low": None, "high": None}
            continue
        mean, std = float(finite.mean()), float(finite.std(correction=0))
        low, high = mean - k * std, mean + k * std
        tol = 1e-9 * (abs(mean) + std + 1e-12)
        kept += [i for i, v in zip(idx, vals.tolist()) if low - tol <= v <= high + tol]
        bands[task] = {"mean": mean, "std": std, "low": low, "high": high}
    return sorted(kept), bands


# -------------------------------------------------------------------------------------------- scoring
@torch.no_grad()
def score_losses(model: nn.Module, dataset: torch.utils.data.Dataset, indices: Sequence[int], *, batch_size: int,
                 device: torch.device, collate: Callable[[list[dict]], dict] = pad_collate, num_workers: int = 0,
                 autocast: AbstractContextManager | None = None, progress: bool = True,
                 desc: str = "loss filter") -> list[float]:
    """Mean token loss of each of `dataset[indices]` under `model` (eval mode, no grad), in `indices` order.

    `collate` must give one row per sample, in order (the project's `pad_collate`; not packing): the
    model's forward with labels returns the logits of the supervised positions row-major, so a token's
    sample is its row. A sample with no supervised token scores NaN."""
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    chunks = [list(indices[i:i + batch_size]) for i in range(0, len(indices), batch_size)]
    loader = DataLoader(dataset, batch_sampler=chunks, collate_fn=collate, num_workers=num_workers,
                        prefetch_factor=2 if num_workers else None)
    autocast = autocast or nullcontext()
    was_training = model.training
    model.train(False)
    out: list[float] = []
    try:
        with tqdm(total=len(indices), desc=desc, disable=not progress, dynamic_ncols=True) as bar:
            for batch in loader:
                labels = batch["labels"]
                targets = labels[:, 1:]
                supervised = targets != IGNORE_INDEX
                n = supervised.sum(1)
                if bool(supervised.any()):
                    inputs = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v
                              for k, v in batch.items() if not k.startswith("_")}
                    with autocast:
                        logits = model(**inputs).logits
                    per_token = F.cross_entropy(logits.float(), targets[supervised].to(device), reduction="none")
                    rows = supervised.nonzero(as_tuple=True)[0].to(device)
                    sums = torch.zeros(len(labels), dtype=torch.float64, device=device)
                    sums.index_add_(0, rows, per_token.double())
                    out += (sums.cpu() / n).tolist()          # 0 / 0 = NaN for a row without labels
                else:
                    out += [math.nan] * len(labels)
                bar.update(len(labels))
    finally:
        model.train(was_training)
    return out


# ---------------------------------------------------------------------------------------------- report
def build_report(name: str, k: float, ids: Sequence[str], tasks: Sequence[str], losses: Sequence[float],
                 kept: Sequence[int], bands: dict[str, dict]) -> dict[str, Any]:
    """Per task: samples before/after, the band, and the removed ids farthest from the mean (with losses)."""
    keep = set(kept)
    per_task: dict[str, dict] = {}
    for task, band in bands.items():
        idx = [i for i, t in enumerate(tasks) if t == task]
        removed = [i for i in idx if i not in keep]
        mean = band["mean"] if band["mean"] is not None else 0.0
        far = sorted(removed, key=lambda i: -abs(losses[i] - mean) if math.isfinite(losses[i]) else -math.inf)
        per_task[task] = {"before": len(idx), "after": len(idx) - len(removed), **band,
                          "removed_examples": [{"id": ids[i], "loss": losses[i] if math.isfinite(losses[i]) else None}
                                               for i in far[:EXAMPLES]]}
    return {"stage": name, "k": k, "before": len(ids), "after": len(keep), "per_task": per_task}


def summary_line(report: dict[str, Any]) -> str:
    """One line for the log: what the filter kept, overall and per task."""
    share = lambda a, b: f"{100 * a / max(b, 1):.0f} %"  # noqa: E731
    tasks = ", ".join(f"{t} {share(r['after'], r['before'])}" for t, r in report["per_task"].items())
    return (f"{report['stage']}: loss filter (k = {report['k']:g}) keeps {report['after']} of {report['before']} "
            f"samples ({share(report['after'], report['before'])}; {tasks})")


# ------------------------------------------------------------------------------------------------ hook
def filter_stage_data(cfg: Config, stage: StageConfig, data: StageBatches, model: nn.Module, device: torch.device, *,
                      resumed: bool, main: bool = True, barrier: Callable[[], None] = lambda: None,
                      autocast: AbstractContextManager | None = None, progress: bool = True) -> dict[str, Any]:
    """Restrict `data`'s train set to the samples within the band (`OmniDataset.keep_only`), before any
    batch is drawn. `model` must still hold the stage's starting weights, unless `resumed` finds the kept
    ids that the interrupted run stored. Every process scores every sample (ZeRO-3 needs all ranks in the
    same forwards); the main one writes the kept ids and all read them back, so every rank trains on one set.
    Returns the report (kept/removed counts per task, the bands)."""
    name, k = stage.name, stage.loss_filter_k
    ds = data.train_set
    kept_file = stage_dir(cfg, name) / "state" / KEPT_FILE
    report_file = Path(cfg.train.log_dir) / name / REPORT_FILE
    stored = json.loads(kept_file.read_text()) if resumed and kept_file.exists() else None
    if stored is None or stored.get("k") != k:
        order = [i for t in sorted(ds.task_indices) for i in ds.task_indices[t]]   # task by task: similar lengths
        pad_id = (data.processor.tokenizer.pad_token_id or 0) if data.processor is not None else 0
        collate = functools.partial(_collate_truncated, seq_len=data.seq_len, pad_id=pad_id)
        t0 = time.perf_counter()
        scores = score_losses(model, ds, order, batch_size=data.micro, device=device, collate=collate,
                              num_workers=cfg.data.num_workers, autocast=autocast, progress=progress and main,
                              desc=f"{name} loss filter")
        ids, tasks = [ds.records[i]["id"] for i in order], [ds.records[i]["task"] for i in order]
        kept, bands = band_filter(scores, tasks, k)
        report = {**build_report(name, k, ids, tasks, scores, kept, bands),
                  "scored_with": cfg.starts_from(stage) or "a fresh model built from the config",
                  "score_s": round(time.perf_counter() - t0, 2), "kept_ids": str(kept_file)}
        if main:
            kept_file.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(kept_file, json.dumps({"stage": name, "k": k, "kept": [ids[i] for i in kept]}) + "\n")
            report_file.parent.mkdir(parents=True, exist_ok=True)
            report_file.write_text(json.dumps(report, indent=1) + "\n")
        barrier()
        stored = json.loads(kept_file.read_text())
    else:
        report = json.loads(report_file.read_text()) if report_file.exists() else {"stage": name, "k": k}
    index = {r["id"]: i for i, r in enumerate(ds.records)}
    unknown = [s for s in stored["kept"] if s not in index]
    if unknown:
        raise ValueError(f"{kept_file} keeps {len(unknown)} id(s) not in {ds.manifest} (first: {unknown[0]!r}); "
                         f"delete {kept_file.parent} to train the stage anew")
    ds.keep_only(index[s] for s in stored["kept"])
    emptied = sorted(t for t in data.mixture if not ds.task_indices.get(t))
    if emptied:
        raise ConfigError(f"stages.{name}.loss_filter_k = {k:g} removes every sample of {', '.join(emptied)}; "
                          f"use k >= 1 (it always keeps some) or 0 (no filter)")
    if main:
        line = (summary_line(report) if "per_task" in report
                else f"{name}: loss filter (k = {k:g}) keeps {len(stored['kept'])} samples")
        log.info("%s; report: %s", line, report_file)
    return report


def _collate_truncated(samples: list[dict], seq_len: int, pad_id: int) -> dict:
    """The samples as training sees them (text-only ones cut to `seq_len`), padded one per row."""
    return pad_collate([truncate(s, seq_len) for s in samples], pad_token_id=pad_id)
