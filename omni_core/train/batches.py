"""The batches a stage trains and validates on, as a pure function of (seed, step, rank).

A stage draws from its mixture (`stages.<name>.mixture`: task -> weight) of `train.jsonl` through the
data's `MixtureSampler`, whose sample p depends only on (seed, p). Optimizer step s takes positions
[s * batch_size, (s + 1) * batch_size): a resume at step s needs only s, and a run on 1 or N processes
sees the same samples (process r takes its slices of each global batch). Validation uses a fixed,
task-balanced subset of `val.jsonl` over the same tasks, split evenly over processes.

With data sources besides the prepared data (`data.sources`, weighted per stage by `stages.<name>.sources`),
the same sampler draws `source:task` cells of a `SourceMixture` instead of tasks; a stage whose only source
with weight > 0 is the prepared data takes exactly the path it took before sources existed.
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler

from omni_core.config import PREPARED_SOURCE, Config, ConfigError, StageConfig
from omni_core.data.collate import TOKEN_KEYS, PackCollator, pad_collate
from omni_core.data.dataset import MixtureSampler, OmniDataset, SourceMixture
from omni_core.model.labels import IGNORE_INDEX

log = logging.getLogger(__name__)


def stage_source_weights(cfg: Config, stage: StageConfig) -> dict[str, float]:
    """Source -> weight > 0 in `stage`: `data.sources[].weight` (the prepared data: 1.0), then the stage's
    `stages.<name>.sources` over them; the prepared data first, then data.sources' order."""
    weights = {PREPARED_SOURCE: 1.0, **{s.name: s.weight for s in cfg.data.sources}}
    weights.update(stage.sources)
    return {name: w for name, w in weights.items() if w > 0}


def source_manifest(cfg: Config, name: str, split: str) -> tuple[Path | None, str]:
    """The manifest of source `name`'s `split` (None: the source has none) and the params key naming it."""
    if name == PREPARED_SOURCE:
        return Path(cfg.data.root) / f"{split}.jsonl", "data.root"
    i, src = next((i, s) for i, s in enumerate(cfg.data.sources) if s.name == name)
    path = getattr(src, split)
    return (Path(path) if path else None), f"data.sources[{i}].{split}"


def truncate(sample: dict[str, torch.Tensor], seq_len: int) -> dict[str, torch.Tensor]:
    if len(sample["input_ids"]) <= seq_len or any(k not in TOKEN_KEYS for k in sample):
        return sample
    return {k: v[:seq_len] for k, v in sample.items()}


class _StepBatches(Sampler[list[int]]):
    """Yields, from `start_step` on, this rank's micro-batches (lists of record indices)."""

    def __init__(self, owner: StageBatches, start_step: int):
        self.owner, self.start_step = owner, start_step

    def __iter__(self) -> Iterator[list[int]]:
        o = self.owner
        stream = iter(o.sampler(start=self.start_step * o.samples_per_step))
        while True:
            glob = [next(stream) for _ in range(o.samples_per_step)]
            for m in range(o.grad_accum):
                lo = (m * o.world_size + o.rank) * o.micro
                yield glob[lo:lo + o.micro]

    def __len__(self) -> int:         # endless in practice; the loop counts steps
        return 1 << 62


class StageBatches:
    """Train and val batches of `stage` for process `rank` of `world_size`."""

    def __init__(self, cfg: Config, stage: StageConfig, processor, rank: int, world_size: int, micro: int):
        self.cfg, self.name, self.rank, self.world_size, self.micro = cfg, stage.name, rank, world_size, micro
        self.grad_accum, self.samples_per_step = stage.grad_accum, stage.batch_size
        self.root = Path(cfg.data.root)
        self.mixture = {t: w for t, w in stage.mixture.items() if w > 0}
        if not self.mixture:
            raise ConfigError(f"stages.{stage.name}.mixture has no task with weight > 0; name at least one task")
        self.explicit_sources = set(stage.sources)
        self.sources = stage_source_weights(cfg, stage)
        if not self.sources:
            raise ConfigError(f"stages.{stage.name}.sources gives every data source weight 0; give one a weight > 0")
        pad_id = (processor.tokenizer.pad_token_id or 0) if processor is not None else 0
        self.collator = (PackCollator(stage.seq_len, pad_token_id=pad_id) if stage.packing
                         else functools.partial(pad_collate, pad_token_id=pad_id))
        self.processor = processor
        self.train_set = self._dataset("train")
        self.val_samples, self.seq_len = stage.val_samples, stage.seq_len

    @property
    def mixes_sources(self) -> bool:
        """Whether this stage draws from other sources than the prepared data alone."""
        return list(self.sources) != [PREPARED_SOURCE]

    def _dataset(self, split: str) -> OmniDataset | SourceMixture:
        if not self.mixes_sources:                   # the prepared data alone: the path from before sources
            path = self.root / f"{split}.jsonl"
            if not path.exists():
                raise FileNotFoundError(f"{path} does not exist: prepare the data first "
                                        f"(python -m omni_core.data prepare) or fix data.root")
            return OmniDataset(path, self.processor, tasks=sorted(self.mixture),
                               on_bad_sample=self.cfg.data.on_bad_sample,
                               known_tasks=self.cfg.task_registry())      # the built-ins and params.yaml `tasks:`
        parts: dict[str, OmniDataset] = {}
        for name in self.sources:
            path, key = source_manifest(self.cfg, name, split)
            if path is None:                         # only val / test may be absent (load_config checks train)
                continue
            if not path.exists():
                if split != "train" and name == PREPARED_SOURCE:
                    continue                         # as before: no prepared val split, no validation on it
                fix = ("prepare the data first (python -m omni_core.data prepare) or fix data.root"
                       if name == PREPARED_SOURCE else f"fix {key} (relative to the working directory) or write the "
                       f"manifest (python -m omni_core.data import-llava ...)")
                raise ConfigError(f"source {name!r}: {path} does not exist ({key}); {fix}")
            ds = OmniDataset(path, self.processor, tasks=sorted(self.mixture), on_bad_sample=self.cfg.data.on_bad_sample,
                             known_tasks=self.cfg.task_registry(), require_tasks=False)
            if not ds.task_indices:
                if split == "train" and name in self.explicit_sources:
                    raise ConfigError(f"stages.{self.name}.sources.{name} = {self.sources[name]:g}, but {path} holds "
                                      f"none of the stage's tasks ({', '.join(sorted(self.mixture))}); set it to 0 "
                                      f"or add its tasks to stages.{self.name}.mixture")
                if split == "train":
                    log.warning("%s: source %r has none of the stage's tasks; it is not drawn", self.name, name)
                continue
            parts[name] = ds
        if split == "train":
            missing = sorted(set(self.mixture) - {t for d in parts.values() for t in d.task_indices})
            if missing:
                raise ValueError(f"stages.{self.name}.mixture: no source with weight > 0 has samples of "
                                 f"{', '.join(missing)} (sources: {', '.join(self.sources)}); drop the task or "
                                 f"add a source that has it")
        return SourceMixture(parts, {n: self.sources[n] for n in parts}, self.mixture)

    # -------------------------------------------------------------------------------------- train
    def sampler(self, start: int = 0, num_samples: int | None = None) -> MixtureSampler:
        """The stage's sample stream (data's MixtureSampler): position p depends only on (seed, p)."""
        ds = self.train_set
        if isinstance(ds, SourceMixture):
            return MixtureSampler(ds.cell_indices, ds.cell_weights, seed=self.cfg.train.seed, start=start,
                                  num_samples=num_samples)
        return MixtureSampler(ds.task_indices, self.mixture, seed=self.cfg.train.seed, start=start,
                              num_samples=num_samples)

    def global_batch(self, step: int) -> list[int]:
        """Record indices of optimizer step `step`'s global batch (all ranks, all micro-batches)."""
        B = self.samples_per_step
        return list(self.sampler(start=step * B, num_samples=B))

    def task_of(self, index: int) -> str:
        return self.train_set.task_of(index)

    def collate(self, samples: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
        """Collate, and count tokens (all real ones, and the supervised ones) for tokens/s.

        Text-only samples longer than `seq_len` are cut to it (plain LM practice); a sample with media
        is never cut (a media span must stay whole) and the collator names it."""
        samples = [truncate(s, self.seq_len) for s in samples]
        batch = dict(self.collator(samples))
        batch["_tokens"] = float(sum(s["input_ids"].numel() for s in samples))
        batch["_supervised"] = float(sum(int((s["labels"][1:] != IGNORE_INDEX).sum()) for s in samples))
        return batch

    def train_batches(self, start_step: int = 0) -> Iterator[dict[str, Any]]:
        """This rank's micro-batches from `start_step` on, endlessly (the loop counts steps)."""
        workers = self.cfg.data.num_workers
        loader = DataLoader(self.train_set, batch_sampler=_StepBatches(self, start_step), collate_fn=self.collate,
                            num_workers=workers, prefetch_factor=2 if workers else None)
        return iter(loader)

    # ---------------------------------------------------------------------------------------- val
    def val_batches(self) -> list[dict[str, Any]]:
        """A fixed, task-balanced subset of the val split (round-robin over tasks), this rank's share,
        in micro-batches. Every rank gets the same number of batches (collectives stay matched)."""
        if not self.mixes_sources and not (self.root / "val.jsonl").exists():
            return []
        val = self._dataset("val")
        if isinstance(val, SourceMixture):           # round-robin over source:task cells
            queues = [list(val.cell_indices[c]) for c in sorted(val.cell_indices)]
        else:
            queues = [list(val.task_indices[t]) for t in sorted(self.mixture)]
        picked: list[int] = []
        while any(queues) and len(picked) < self.val_samples:
            for q in queues:
                if q and len(picked) < self.val_samples:
                    picked.append(q.pop(0))
        per_rank = len(picked) // self.world_size
        mine = picked[self.rank::self.world_size][:per_rank]
        return [self.collate([val[i] for i in mine[lo:lo + self.micro]]) for lo in range(0, len(mine), self.micro)]
