"""Training data loading: a lazily decoding Dataset, a task-mixture sampler, a length-grouped sampler.

``OmniDataset`` checks every record when it is built (schema, paths and that files exist,
placeholders, duplicate ids; with ``on_bad_sample="skip"`` also decodes every media file) and decodes media only in
``__getitem__``, through the OmniProcessor, so DataLoader worker processes do the decoding.
``MixtureSampler`` draws tasks by the stage's weights; sample ``p`` of the stream depends only on
(seed, p), so a resumed run passes ``start=consumed`` and sees exactly the samples it would have.
"""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Literal

import av
import numpy as np
import soundfile as sf
import torch
from PIL import Image

from ..model.token_counts import SAMPLING_RATE, audio_num_tokens, image_tokens, video_frame_tokens, video_num_frames
from .manifest import ALL_TASKS, ManifestError, Sample, iter_manifest, media_parts, sample_text
from .validate import Problem, sample_problems

log = logging.getLogger(__name__)


class BadSampleError(ValueError):
    """A manifest record cannot be used; the message names file:line, the id and the reason."""


class OmniDataset(torch.utils.data.Dataset):
    """Records of one manifest (optionally only some tasks); ``ds[i]`` = processor output."""

    def __init__(self, manifest: str | Path, processor=None, tasks: Iterable[str] | None = None,
                 on_bad_sample: Literal["error", "skip"] = "error", known_tasks: Iterable[str] = ALL_TASKS):
        self.manifest = Path(manifest)
        self.base_dir = self.manifest.parent
        self.processor = processor
        self.on_bad_sample = on_bad_sample
        if on_bad_sample not in ("error", "skip"):
            raise ValueError(f"on_bad_sample = {on_bad_sample!r}; choose 'error' or 'skip' (data.on_bad_sample)")
        wanted = set(tasks) if tasks is not None else None
        self.records: list[Sample] = []
        self.lines: list[int] = []
        self.skipped: list[Problem] = []       # reported, never silent
        self.runtime_skips = 0
        seen: dict[str, int] = {}
        decoded: dict = {}
        for n, rec in iter_manifest(self.manifest, skip_bad_json=True):
            if isinstance(rec, ManifestError):
                reasons, sid = [str(rec)], None
            else:
                sid = rec.get("id")
                if wanted is not None and rec.get("task") not in wanted:
                    continue
                reasons = sample_problems(rec, self.base_dir, check_media=True if on_bad_sample == "skip" else "exists",
                                          known_tasks=known_tasks, _seen=decoded)
                if isinstance(sid, str) and sid in seen:
                    reasons.append(f"duplicate id {sid!r} (first at line {seen[sid]})")
            if reasons:
                problem = Problem(str(self.manifest), n, sid, "; ".join(reasons))
                if on_bad_sample == "error":
                    raise BadSampleError(f"{problem}\n(set data.on_bad_sample: skip to drop bad samples and "
                                         f"report them; `python -m omni_core.data validate {self.manifest}` lists all)")
                self.skipped.append(problem)
                continue
            if isinstance(sid, str):
                seen[sid] = n
            self.records.append(rec)
            self.lines.append(n)
        if self.skipped:
            log.warning("%s: skipped %d bad sample(s) (data.on_bad_sample = skip); first: %s", self.manifest,
                        len(self.skipped), self.skipped[0])
        if wanted is not None:
            missing = sorted(wanted - {r["task"] for r in self.records})
            if missing:
                raise ValueError(f"{self.manifest}: no samples for task(s) {', '.join(missing)}; rerun "
                                 f"`python -m omni_core.data prepare` or drop them from the stage's mixture")
        self.task_indices: dict[str, list[int]] = {}
        for i, r in enumerate(self.records):
            self.task_indices.setdefault(r["task"], []).append(i)

    def __len__(self) -> int:
        return len(self.records)

    def keep_only(self, indices: Iterable[int]) -> None:
        """Restrict `task_indices` (what the samplers draw from) to `indices`; `records` stay as they are, so an
        index names the same sample before and after (train/loss_filter.py)."""
        keep = set(indices)
        self.task_indices = {t: [i for i in ix if i in keep] for t, ix in self.task_indices.items()}

    def where(self, i: int) -> str:
        return f"{self.manifest}:{self.lines[i]}: {self.records[i].get('id')}"

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if self.processor is None:
            raise RuntimeError("OmniDataset was built without a processor; pass OmniProcessor to decode samples")
        for attempt in range(len(self.records)):
            j = (i + attempt) % len(self.records)
            try:
                return self.processor(self.records[j]["messages"], base_dir=self.base_dir)
            except ValueError as e:              # MediaError is a ValueError too
                if self.on_bad_sample == "error":
                    raise BadSampleError(f"{self.where(j)}: {e}") from e
                self.runtime_skips += 1          # counted per worker process and logged
                log.warning("skipping bad sample %s: %s", self.where(j), e)
        raise BadSampleError(f"{self.manifest}: every sample failed to process")

    def lengths(self) -> list[int]:
        """Token count estimate per record (text chars / 4 + media tokens from file headers), for
        length grouping; exact counts would need the full decode this is meant to avoid."""
        return [estimate_length(r, self.base_dir, self.processor) for r in self.records]


def estimate_length(rec: Sample, base_dir: Path, processor=None) -> int:
    """Text characters / 4, 8 per message (role and separators), plus :func:`estimate_media_tokens` per part."""
    n = len(sample_text(rec)) // 4 + 8 * len(rec.get("messages", []))
    for p in media_parts(rec):
        n += estimate_media_tokens(p, base_dir, processor)
    return n


def estimate_media_tokens(part: dict, base_dir: Path, processor=None) -> int:
    """Tokens of one media part, start and end tokens included, counted by `omni_core.model.token_counts` from the
    file's header (size, duration) without decoding it: the processor's count where the header tells the truth
    (audio other than WAV / FLAC is taken as 10 s). 32 without a processor."""
    cfg = getattr(processor, "model_cfg", None)
    if cfg is None:
        return 32
    path = base_dir / part["path"]
    if part["type"] == "image":
        with Image.open(path) as im:
            w, h = im.size
        as_video = getattr(processor, "images_as_video", False)
        return (video_frame_tokens if as_video else image_tokens)(w, h, cfg.vision) + 2
    if part["type"] == "audio":
        secs = sf.info(str(path)).duration if path.suffix.lower() in (".wav", ".flac") else 10.0
        return audio_num_tokens(int(secs * SAMPLING_RATE), cfg.audio.downsample) + 2
    with av.open(str(path)) as c:                                   # a video
        s = c.streams.video[0]
        secs = float(s.duration * s.time_base) if s.duration else (c.duration or 0) / 1e6
        w, h = s.codec_context.width, s.codec_context.height
    frames = video_num_frames(secs, cfg.vision.video_fps, cfg.vision.video_max_frames)
    n = frames * video_frame_tokens(w, h, cfg.vision) + 2
    if part.get("audio") is True:            # the clip's own sound track, spliced after the frames
        n += audio_num_tokens(int(secs * SAMPLING_RATE), cfg.audio.downsample) + 2
    return n


class MixtureSampler(torch.utils.data.Sampler):
    """Endless (or ``num_samples`` long) index stream mixing tasks by ``weights``.

    Task of position p: block ``p // block`` of draws from ``rng(seed, block)``. Item: the k-th draw of
    a task takes element ``k % n`` of that task's permutation for epoch ``k // n``. Both depend only
    on (seed, p), so ``start`` resumes exactly and workers / restarts change nothing."""

    def __init__(self, task_indices: dict[str, Sequence[int]], weights: dict[str, float], seed: int = 0,
                 start: int = 0, num_samples: int | None = None, block: int = 1024):
        unknown = sorted(t for t, w in weights.items() if w > 0 and not task_indices.get(t))
        if unknown:
            raise ValueError(f"mixture weights name task(s) with no samples: {', '.join(unknown)}; have "
                             f"{', '.join(sorted(task_indices))}")
        self.tasks = sorted(t for t, w in weights.items() if w > 0)
        if not self.tasks:
            raise ValueError(f"mixture {weights} has no task with weight > 0")
        w = np.array([weights[t] for t in self.tasks], dtype=np.float64)
        self.probs = w / w.sum()
        self.items = {t: np.asarray(task_indices[t]) for t in self.tasks}
        self.seed, self.start, self.num_samples, self.block = seed, start, num_samples, block
        self.position = start

    def _block(self, b: int) -> np.ndarray:
        return np.random.default_rng([self.seed, b, 0x6d6978]).choice(len(self.tasks), self.block, p=self.probs)

    def __iter__(self) -> Iterator[int]:
        p = self.start
        b = p // self.block
        counts = np.zeros(len(self.tasks), np.int64)
        for k in range(b):                       # draws of each task before the resume block
            counts += np.bincount(self._block(k), minlength=len(self.tasks))
        draws = self._block(b)
        counts += np.bincount(draws[:p % self.block], minlength=len(self.tasks))
        perms: dict[tuple[int, int], np.ndarray] = {}
        end = None if self.num_samples is None else self.start + self.num_samples
        while end is None or p < end:
            if p // self.block != b:
                b = p // self.block
                draws = self._block(b)
            t = int(draws[p % self.block])
            items = self.items[self.tasks[t]]
            epoch, k = divmod(int(counts[t]), len(items))
            if (t, epoch) not in perms:
                perms = {key: v for key, v in perms.items() if key[0] != t}
                perms[t, epoch] = np.random.default_rng([self.seed, t, epoch, 0x70]).permutation(len(items))
            counts[t] += 1
            p += 1
            self.position = p
            yield int(items[perms[t, epoch][k]])

    def __len__(self) -> int:
        if self.num_samples is None:
            raise TypeError("an endless MixtureSampler has no length; pass num_samples")
        return self.num_samples

    def state_dict(self) -> dict:
        return {"position": self.position, "seed": self.seed}


class LengthGroupedSampler(torch.utils.data.Sampler):
    """Reorders an index stream in chunks of ``batch_size * group`` by length (longest first), so
    padded batches hold samples of similar length. Deterministic given the wrapped stream."""

    def __init__(self, indices: Iterable[int], lengths: Sequence[int], batch_size: int, group: int = 16):
        self.indices, self.lengths, self.chunk = indices, lengths, batch_size * group

    def __iter__(self) -> Iterator[int]:
        buf: list[int] = []
        for i in self.indices:
            buf.append(i)
            if len(buf) == self.chunk:
                yield from sorted(buf, key=lambda j: -self.lengths[j])
                buf = []
        yield from sorted(buf, key=lambda j: -self.lengths[j])

    def __len__(self) -> int:
        return len(self.indices)  # type: ignore[arg-type]


def task_counts(dataset: OmniDataset, indices: Iterable[int]) -> Counter:
    return Counter(dataset.records[i]["task"] for i in indices)
