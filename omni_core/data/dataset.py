"""Training data loading: a lazily decoding Dataset, a task-mixture sampler, a length-grouped sampler.

``OmniDataset`` checks every record when it is built (schema, paths and that files exist,
placeholders, duplicate ids; with ``on_bad_sample="skip"`` also decodes every media file) and decodes media only in
``__getitem__``, through the OmniProcessor, so DataLoader worker processes do the decoding.
``MixtureSampler`` draws tasks by the stage's weights; sample ``p`` of the stream depends only on
(seed, p), so a resumed run passes ``start=consumed`` and sees exactly the samples it would have.
``SourceMixture`` joins several sources' datasets (``data.sources``) so that the same sampler weights
``source:task`` cells: datasets as well as tasks.
"""
from __future__ import annotations

import logging
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Literal

import av
import numpy as np
import soundfile as sf
import torch
from PIL import Image

from ..model.token_counts import SAMPLING_RATE, audio_num_tokens, image_tokens, video_frame_tokens, video_num_frames
from ..task_registry import TaskSpec
from .index import LazyRecords, ManifestIndex
from .manifest import ManifestError, Sample, media_parts, sample_text
from .validate import Problem, sample_problems

log = logging.getLogger(__name__)


class BadSampleError(ValueError):
    """A manifest record cannot be used; the message names file:line, the id and the reason."""


class OmniDataset(torch.utils.data.Dataset):
    """Records of one manifest (optionally only some tasks); ``ds[i]`` = processor output.

    The manifest is indexed lazily (``index.ManifestIndex``: byte offsets, tasks), each wanted record is checked
    once here and dropped again, and ``records`` decodes a record on access: the dataset holds arrays, not
    dicts. Lines of other tasks are not decoded, so a bad line of a task outside ``tasks`` is left to the stage
    (or ``validate``) that reads it; a line whose task cannot be read without decoding is always checked.
    ``known_tasks``: ``Config.task_registry()`` (None: the active registry, as ``validate.sample_problems``)."""

    def __init__(self, manifest: str | Path, processor=None, tasks: Iterable[str] | None = None,
                 on_bad_sample: Literal["error", "skip"] = "error",
                 known_tasks: Mapping[str, TaskSpec] | Iterable[str] | None = None,
                 index: ManifestIndex | None = None, require_tasks: bool = True):
        self.manifest = Path(manifest)
        self.base_dir = self.manifest.parent
        self.processor = processor
        self.on_bad_sample = on_bad_sample
        if on_bad_sample not in ("error", "skip"):
            raise ValueError(f"on_bad_sample = {on_bad_sample!r}; choose 'error' or 'skip' (data.on_bad_sample)")
        wanted = set(tasks) if tasks is not None else None
        self.index = index if index is not None else ManifestIndex.build(self.manifest)
        self.skipped: list[Problem] = []       # reported, never silent
        self.runtime_skips = 0
        seen: dict[str, int] = {}
        decoded: dict = {}
        kept, kept_tasks, names = array("q"), array("h"), {}
        for r in self.index.rows(wanted).tolist():
            n = int(self.index.lines[r])
            rec = self.index.parse(r)
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
            kept.append(r)
            kept_tasks.append(names.setdefault(rec["task"], len(names)))
        if self.skipped:
            log.warning("%s: skipped %d bad sample(s) (data.on_bad_sample = skip); first: %s", self.manifest,
                        len(self.skipped), self.skipped[0])
        if wanted is not None and require_tasks:
            missing = sorted(wanted - set(names))
            if missing:
                raise ValueError(f"{self.manifest}: no samples for task(s) {', '.join(missing)}; rerun "
                                 f"`python -m omni_core.data prepare` or drop them from the stage's mixture")
        rows = np.frombuffer(kept, np.int64)
        self.records: Sequence[Sample] = LazyRecords(self.index, rows)
        self.lines: Sequence[int] = self.index.lines[rows]
        self.tasks = tuple(names)                          # task of record i: self.tasks[self.task_ids[i]]
        self.task_ids = np.frombuffer(kept_tasks, np.int16)
        self.task_indices: dict[str, list[int]] = {t: [] for t in names}   # in order of first appearance
        for i, t in enumerate(self.task_ids.tolist()):
            self.task_indices[self.tasks[t]].append(i)

    def __len__(self) -> int:
        return len(self.records)

    def keep_only(self, indices: Iterable[int]) -> None:
        """Restrict `task_indices` (what the samplers draw from) to `indices`; `records` stay as they are, so an
        index names the same sample before and after (train/loss_filter.py)."""
        keep = set(indices)
        self.task_indices = {t: [i for i in ix if i in keep] for t, ix in self.task_indices.items()}

    def task_of(self, i: int) -> str:
        """Record i's task, without decoding it."""
        return self.tasks[self.task_ids[i]]

    def where(self, i: int) -> str:
        try:
            sid = self.records[i].get("id")
        except ManifestError:                  # the line itself is the problem; its reason is reported beside
            sid = "<unreadable>"
        return f"{self.manifest}:{int(self.lines[i])}: {sid}"

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


def source_mix_weights(source_weights: dict[str, float], source_tasks: dict[str, Iterable[str]],
                       mixture: dict[str, float]) -> dict[str, float]:
    """Sampling weight of each ``source:task`` cell: P(source) = its weight over the sources' total, then
    P(task | source) = the task's mixture weight over those of the mixture's tasks the source has."""
    out: dict[str, float] = {}
    total = sum(source_weights.values())
    for src, w in source_weights.items():
        tasks = [t for t in source_tasks[src] if mixture.get(t, 0) > 0]
        norm = sum(mixture[t] for t in tasks)
        for t in tasks:
            out[f"{src}:{t}"] = w / total * mixture[t] / norm
    return out


class SourceMixture(torch.utils.data.Dataset):
    """Several sources' datasets as one: record i of source k is index ``starts[k] + i``. ``task_indices``
    (task -> indices, every source) is what the loss filter and validation read; ``cell_indices`` and
    ``cell_weights`` (``source:task``, :func:`source_mix_weights`) are what the stage's MixtureSampler draws."""

    def __init__(self, parts: dict[str, OmniDataset], source_weights: dict[str, float], mixture: dict[str, float]):
        self.parts = parts
        self.names = list(parts)
        self.starts = np.cumsum([0] + [len(d) for d in parts.values()])
        self.manifest = ", ".join(str(d.manifest) for d in parts.values())
        self.processor = next(iter(parts.values())).processor if parts else None
        self.skipped = [p for d in parts.values() for p in d.skipped]
        self.cell_indices: dict[str, list[int]] = {}
        self.task_indices: dict[str, list[int]] = {}
        for k, (src, d) in enumerate(parts.items()):
            for t, ix in d.task_indices.items():
                glob = [int(self.starts[k]) + i for i in ix]
                self.cell_indices[f"{src}:{t}"] = glob
                self.task_indices.setdefault(t, []).extend(glob)
        self.cell_weights = source_mix_weights(source_weights, {s: d.task_indices for s, d in parts.items()}, mixture)
        self.records: Sequence[Sample] = _Chained(self)

    def locate(self, i: int) -> tuple[str, int]:
        """(source, index in that source's dataset) of index i."""
        if not 0 <= i < self.starts[-1]:
            raise IndexError(f"index {i} out of range for {self.starts[-1]} records")
        k = int(np.searchsorted(self.starts, i, side="right")) - 1
        return self.names[k], i - int(self.starts[k])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        src, j = self.locate(i)
        return self.parts[src][j]

    def source_of(self, i: int) -> str:
        return self.locate(i)[0]

    def task_of(self, i: int) -> str:
        src, j = self.locate(i)
        return self.parts[src].task_of(j)

    def where(self, i: int) -> str:
        src, j = self.locate(i)
        return self.parts[src].where(j)

    def keep_only(self, indices: Iterable[int]) -> None:
        """As ``OmniDataset.keep_only``, for tasks and cells alike."""
        keep = set(indices)
        self.task_indices = {t: [i for i in ix if i in keep] for t, ix in self.task_indices.items()}
        self.cell_indices = {c: [i for i in ix if i in keep] for c, ix in self.cell_indices.items()}


class _Chained(Sequence[Sample]):
    """The records of a SourceMixture's parts, one after the other (decoded on access)."""

    def __init__(self, mix: SourceMixture):
        self.mix = mix

    def __len__(self) -> int:
        return len(self.mix)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        src, j = self.mix.locate(i)
        return self.mix.parts[src].records[j]


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
    return Counter(dataset.task_of(i) for i in indices)
