"""The batches a stage trains and validates on, as a pure function of (seed, step, rank).

A stage draws from its mixture (`stages.<name>.mixture`: task -> weight) of `train.jsonl` through the
data's `MixtureSampler`, whose sample p depends only on (seed, p). Optimizer step s takes positions
[s * batch_size, (s + 1) * batch_size): a resume at step s needs only s, and a run on 1 or N processes
sees the same samples (process r takes its slices of each global batch). Validation uses a fixed,
task-balanced subset of `val.jsonl` over the same tasks, split evenly over processes.
"""
from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler

from omni_core.config import Config, ConfigError, StageConfig
from omni_core.data.collate import TOKEN_KEYS, PackCollator, pad_collate
from omni_core.data.dataset import MixtureSampler, OmniDataset
from omni_core.model.labels import IGNORE_INDEX


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
        pad_id = (processor.tokenizer.pad_token_id or 0) if processor is not None else 0
        self.collator = (PackCollator(stage.seq_len, pad_token_id=pad_id) if stage.packing
                         else functools.partial(pad_collate, pad_token_id=pad_id))
        self.processor = processor
        self.train_set = self._dataset("train")
        self.val_samples, self.seq_len = stage.val_samples, stage.seq_len

    def _dataset(self, split: str) -> OmniDataset:
        path = self.root / f"{split}.jsonl"
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist: prepare the data first "
                                    f"(python -m omni_core.data prepare) or fix data.root")
        return OmniDataset(path, self.processor, tasks=sorted(self.mixture), on_bad_sample=self.cfg.data.on_bad_sample)

    # -------------------------------------------------------------------------------------- train
    def sampler(self, start: int = 0, num_samples: int | None = None) -> MixtureSampler:
        """The stage's sample stream (data's MixtureSampler): position p depends only on (seed, p)."""
        return MixtureSampler(self.train_set.task_indices, self.mixture, seed=self.cfg.train.seed, start=start,
                              num_samples=num_samples)

    def global_batch(self, step: int) -> list[int]:
        """Record indices of optimizer step `step`'s global batch (all ranks, all micro-batches)."""
        B = self.samples_per_step
        return list(self.sampler(start=step * B, num_samples=B))

    def task_of(self, index: int) -> str:
        return self.train_set.records[index]["task"]

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
        if not (self.root / "val.jsonl").exists():
            return []
        val = self._dataset("val")
        queues = [list(val.task_indices[t]) for t in sorted(self.mixture)]
        picked: list[int] = []
        while any(queues) and len(picked) < self.val_samples:
            for q in queues:
                if q and len(picked) < self.val_samples:
                    picked.append(q.pop(0))
        per_rank = len(picked) // self.world_size
        mine = picked[self.rank::self.world_size][:per_rank]
        return [self.collate([val[i] for i in mine[lo:lo + self.micro]]) for lo in range(0, len(mine), self.micro)]
