"""Batching processor outputs: padding (``pad_collate``) or sequence packing (``PackCollator``).

Both follow docs/interfaces.md "Collation". Media keys (``pixel_values``, ``video_values``,
``audio_features``, ``audio_window_counts``, ``audio_token_counts``) are concatenated along dim 0 in
the order the samples appear in the batch (row-major), which is the order the model splices them.
"""
from __future__ import annotations

import math

import torch

from ..model.labels import IGNORE_INDEX

TOKEN_KEYS = ("input_ids", "labels", "attention_mask", "position_ids")


def _cat_media(samples: list[dict]) -> dict[str, torch.Tensor]:
    keys = sorted({k for s in samples for k, v in s.items() if k not in TOKEN_KEYS and torch.is_tensor(v)})
    return {k: torch.cat([s[k] for s in samples if k in s]) for k in keys}


def _check(samples: list[dict]) -> None:
    if not samples:
        raise ValueError("cannot collate an empty batch")
    for i, s in enumerate(samples):
        if "input_ids" not in s or "labels" not in s or s["input_ids"].shape != s["labels"].shape:
            raise ValueError(f"sample {i} needs 1-D input_ids and labels of the same length (processor output)")


def pad_collate(samples: list[dict], pad_token_id: int = 0, padding_side: str = "right") -> dict[str, torch.Tensor]:
    """(B, T) ``input_ids, labels, attention_mask, position_ids``, padded to the longest sample.

    Padding has ``attention_mask`` 0 and ``labels`` ``IGNORE_INDEX``; ``position_ids`` count real tokens from 0.
    ``padding_side="left"`` is for generation, where new tokens are appended on the right."""
    _check(samples)
    t = max(len(s["input_ids"]) for s in samples)
    b = len(samples)
    ids = torch.full((b, t), pad_token_id, dtype=torch.long)
    labels = torch.full((b, t), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((b, t), dtype=torch.long)
    pos = torch.zeros((b, t), dtype=torch.long)
    for i, s in enumerate(samples):
        n = len(s["input_ids"])
        sl = slice(0, n) if padding_side == "right" else slice(t - n, t)
        ids[i, sl], labels[i, sl], mask[i, sl] = s["input_ids"], s["labels"], 1
        pos[i, sl] = torch.arange(n)
    return {"input_ids": ids, "labels": labels, "attention_mask": mask, "position_ids": pos, **_cat_media(samples)}


def pack_rows(lengths: list[int], seq_len: int) -> list[list[int]]:
    """Sample indices per row, each row's total <= ``seq_len``, rows as even as possible.

    Longest first, each sample goes to the least-filled row it fits in (rows = ceil(total/seq_len) to
    start): rows end up nearly equal, so padding to the longest row wastes little. Within a row,
    samples keep their batch order."""
    too_long = [(i, n) for i, n in enumerate(lengths) if n > seq_len]
    if too_long:
        i, n = too_long[0]
        raise ValueError(f"sample {i} of the batch has {n} tokens, more than seq_len = {seq_len}; raise the stage's "
                         f"seq_len or shorten the sample (media are never truncated)")
    rows: list[list[int]] = [[] for _ in range(max(1, math.ceil(sum(lengths) / seq_len)))]
    load = [0] * len(rows)
    for i in sorted(range(len(lengths)), key=lambda j: (-lengths[j], j)):
        fits = [r for r in range(len(rows)) if load[r] + lengths[i] <= seq_len]
        if not fits:
            rows.append([])
            load.append(0)
            fits = [len(rows) - 1]
        r = min(fits, key=lambda k: (load[k], k))
        rows[r].append(i)
        load[r] += lengths[i]
    rows = [sorted(r) for r in rows if r]
    return sorted(rows, key=lambda r: r[0])


class PackCollator:
    """Pack a batch into rows of several samples (no ``attention_mask``; ``position_ids`` restart at 0
    for every sample, which is how the model keeps samples from attending to each other)."""

    def __init__(self, seq_len: int, pad_token_id: int = 0):
        self.seq_len = seq_len
        self.pad_token_id = pad_token_id

    def __call__(self, samples: list[dict]) -> dict[str, torch.Tensor]:
        _check(samples)
        rows = pack_rows([len(s["input_ids"]) for s in samples], self.seq_len)
        t = max(sum(len(samples[i]["input_ids"]) for i in r) for r in rows)
        ids = torch.full((len(rows), t), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), t), IGNORE_INDEX, dtype=torch.long)
        pos = torch.zeros((len(rows), t), dtype=torch.long)
        for r, row in enumerate(rows):
            at = 0
            for i in row:
                n = len(samples[i]["input_ids"])
                ids[r, at:at + n], labels[r, at:at + n] = samples[i]["input_ids"], samples[i]["labels"]
                pos[r, at:at + n] = torch.arange(n)
                at += n
            pos[r, at:] = torch.arange(t - at)       # padding: one segment of its own, never a label
        ordered = [samples[i] for row in rows for i in row]
        return {"input_ids": ids, "labels": labels, "position_ids": pos, **_cat_media(ordered)}


def non_pad_fraction(batch: dict[str, torch.Tensor], lengths: list[int]) -> float:
    """Share of the batch's token slots that hold real tokens (1.0 = no padding)."""
    return sum(lengths) / batch["input_ids"].numel()


def packing_report(cfg, stage: str, batches: int = 10, split: str = "train") -> dict:
    """Share of real tokens per batch on ``stage``'s mixture of the prepared data: packing vs padding
    (in mixture order, and length-grouped), on the same samples. Decodes ``batches * batch_size`` samples."""
    from pathlib import Path

    from ..model.tokenizer import load_tokenizer
    from ..processing import OmniProcessor
    from .dataset import LengthGroupedSampler, MixtureSampler, OmniDataset
    st, root = cfg.stage(stage), Path(cfg.data.root)
    proc = OmniProcessor(load_tokenizer(cfg.model.tokenizer.path or root / "tokenizer", cfg.model.trust_remote_code),
                         cfg.model)
    mixture = {t: w for t, w in st.mixture.items() if w > 0}
    ds = OmniDataset(root / f"{split}.jsonl", proc, tasks=sorted(mixture), on_bad_sample=cfg.data.on_bad_sample)
    order = list(MixtureSampler(ds.task_indices, mixture, seed=cfg.train.seed, num_samples=batches * st.batch_size))
    samples = {i: ds[i] for i in sorted(set(order))}
    lengths = {i: len(s["input_ids"]) for i, s in samples.items()}
    pad_id = proc.tokenizer.pad_token_id or 0
    grouped = list(LengthGroupedSampler(order, lengths, st.batch_size))
    out: dict = {"stage": stage, "batch_size": st.batch_size, "seq_len": st.seq_len, "batches": batches,
                 "sample_tokens_mean": round(sum(lengths[i] for i in order) / len(order), 1),
                 "sample_tokens_max": max(lengths.values())}
    for name, stream, collate in (("packing", order, PackCollator(st.seq_len, pad_id)),
                                  ("padding", order, lambda b: pad_collate(b, pad_id)),
                                  ("padding_length_grouped", grouped, lambda b: pad_collate(b, pad_id))):
        real = slots = rows = 0
        for k in range(batches):
            batch = [samples[i] for i in stream[k * st.batch_size:(k + 1) * st.batch_size]]
            x = collate(batch)
            real += sum(len(s["input_ids"]) for s in batch)
            slots, rows = slots + x["input_ids"].numel(), rows + x["input_ids"].shape[0]
        out[name] = {"non_pad_fraction": round(real / slots, 4), "rows_per_batch": round(rows / batches, 2)}
    return out
