"""Check manifests before training: one problem per line, with file:line and the reason.

The same checks back ``python -m omni_core.data validate`` and the training Dataset
(``on_bad_sample: error | skip``): missing or unsafe media files, corrupt image / audio / video, a video
marked ``"audio": true`` without a sound track, placeholder / media count mismatch, empty answers, unknown
tasks, duplicate ids.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import soundfile as sf
from PIL import Image

from ..task_registry import TaskSpec
from .manifest import (
    MEDIA_TYPES,
    PLACEHOLDERS,
    ManifestError,
    Sample,
    iter_manifest,
    safe_media_path,
    schema_problems,
)

# Literal tokens that must never appear in text: media are typed parts, and the processor writes the
# placeholders itself. Left-over LLaVA ``<image>`` tags would silently mis-align media and tokens.
_LITERALS = {k: (v, f"<|{k}_start|>", f"<|{k}_pad|>", f"<|{k}_end|>") for k, v in PLACEHOLDERS.items()}


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    id: str | None
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.id or '<no id>'}: {self.reason}"


def media_problem(kind: str, path: Path, sound: bool = False) -> str | None:
    """Decode the file enough to know it is usable; None if it is, else the reason and the fix.

    ``sound``: the video part carries ``"audio": true``, so its own sound track must decode too."""
    if not path.is_file():
        return f"missing file {path}; fix the path (relative to the manifest's folder) or regenerate the data"
    try:
        if kind == "image":
            with Image.open(path) as im:
                im.load()
                if im.width == 0 or im.height == 0:
                    return f"corrupt image {path}: zero size"
        elif kind == "audio":
            try:
                info = sf.info(str(path))
                y = sf.read(str(path), dtype="float32", frames=min(info.frames, 16000 * 600))[0]
                if y.size == 0:
                    return f"corrupt audio {path}: 0 samples; drop the sample or re-export the file"
                if not np.isfinite(y).all():
                    return f"corrupt audio {path}: NaN/inf samples"
            except (sf.LibsndfileError, RuntimeError):
                with av.open(str(path)) as c:          # compressed audio (mp3, m4a) goes through FFmpeg
                    if not c.streams.audio or next(c.decode(audio=0), None) is None:
                        return f"corrupt audio {path}: no decodable audio stream; convert it to 16 kHz mono WAV"
        elif kind == "video":
            with av.open(str(path)) as c:
                if not c.streams.video or next(c.decode(video=0), None) is None:
                    return f"corrupt video {path}: no decodable video frame; re-encode it (H.264 mp4)"
            if sound:                              # a fresh demuxer: the frame above may have read past the sound
                with av.open(str(path)) as c:
                    if not c.streams.audio:
                        return (f'{path}: the video has no audio track; drop "audio": true or re-encode it with '
                                f"its sound")
                    if next(c.decode(audio=0), None) is None:
                        return (f"corrupt video {path}: its audio track holds no decodable sound; re-encode it "
                                f"with its sound")
    except (OSError, SyntaxError, ValueError, av.FFmpegError, Image.DecompressionBombError) as e:
        fix = {"image": "re-save it as PNG or JPEG", "audio": "convert it to 16 kHz mono WAV",
               "video": "re-encode it (H.264 mp4)"}[kind]
        return f"corrupt {kind} {path}: {str(e).strip()[:160]}; {fix}"
    return None


def placeholder_problems(sample: Sample) -> list[str]:
    """Literal media placeholders in text parts: their count can never match the typed media parts."""
    out = []
    parts = [p for m in sample.get("messages", []) for p in m.get("content", []) if isinstance(p, dict)]
    for kind in MEDIA_TYPES:
        n_media = sum(p.get("type") == kind for p in parts)
        n_literal = sum(p.get("text", "").count(lit) for p in parts if p.get("type") == "text"
                        for lit in _LITERALS[kind])
        if n_literal:
            out.append(f"placeholder/media count mismatch: text holds {n_literal} literal {kind} placeholder(s) "
                       f"({PLACEHOLDERS[kind]} or <|{kind}_...|>) next to {n_media} {kind} part(s); media are typed "
                       f"parts, so remove the placeholders (`import-llava` converts LLaVA data)")
    return out


def sample_problems(sample: Any, base_dir: str | Path, check_media: bool | str = True, processor=None,
                    known_tasks: Mapping[str, TaskSpec] | Iterable[str] | None = None,
                    _seen: dict | None = None) -> list[str]:
    """Every reason this one record is unusable (empty list = fine).

    ``check_media``: True decodes each file, ``"exists"`` only checks that it is there (cheap).
    ``processor``: also run the OmniProcessor on it (token / media counts, label mask).
    ``known_tasks``: ``Config.task_registry()`` (None = the active registry: the last loaded config's tasks).
    ``_seen`` caches per-file decode results across records that share media.
    """
    out = schema_problems(sample, known_tasks)
    if out or not isinstance(sample, dict):
        return out
    out += placeholder_problems(sample)
    for m in sample["messages"]:
        for p in m["content"]:
            if p.get("type") not in MEDIA_TYPES:
                continue
            try:
                path = safe_media_path(base_dir, p["path"])
            except ManifestError as e:
                out.append(str(e))
                continue
            if check_media == "exists":
                if not path.is_file():
                    out.append(f"missing file {path}; fix the path (relative to the manifest's folder) or "
                               f"regenerate the data")
            elif check_media:
                sound = p.get("audio") is True
                key = (p["type"], path, sound)
                if _seen is None or key not in _seen:
                    reason = media_problem(p["type"], path, sound)
                    if _seen is not None:
                        _seen[key] = reason
                else:
                    reason = _seen[key]
                if reason:
                    out.append(reason)
    if processor is not None and not out:
        try:
            processor(sample["messages"], base_dir=base_dir)
        except Exception as e:           # MediaError / ValueError from the processor: its message says why
            out.append(f"processor: {e}")
    return out


def validate_manifest(path: str | Path, check_media: bool = True, processor=None,
                      known_tasks: Mapping[str, TaskSpec] | Iterable[str] | None = None,
                      seen_ids: dict | None = None) -> list[Problem]:
    """All problems of one manifest; pass the same ``seen_ids`` to catch duplicates across files."""
    path = Path(path)
    seen_ids = {} if seen_ids is None else seen_ids
    decoded: dict = {}
    problems = []
    try:
        for n, rec in iter_manifest(path, skip_bad_json=True):
            if isinstance(rec, ManifestError):
                problems.append(Problem(str(path), n, None, str(rec)))
                continue
            sid = rec.get("id") if isinstance(rec, dict) else None
            for reason in sample_problems(rec, path.parent, check_media, processor, known_tasks, decoded):
                problems.append(Problem(str(path), n, sid, reason))
            if isinstance(sid, str):
                if sid in seen_ids:
                    problems.append(Problem(str(path), n, sid, f"duplicate id {sid!r} (first at {seen_ids[sid]}); "
                                                               f"ids must be unique"))
                else:
                    seen_ids[sid] = f"{path}:{n}"
    except FileNotFoundError:
        problems.append(Problem(str(path), 0, None, "no such manifest file"))
    return problems


def validate_manifests(paths: Iterable[str | Path], **kw) -> list[Problem]:
    seen: dict = {}
    return [p for path in paths for p in validate_manifest(path, seen_ids=seen, **kw)]
