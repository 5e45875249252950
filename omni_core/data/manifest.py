"""The manifest format: JSONL, one conversation per line (docs/interfaces.md "Manifest").

This file reads and writes manifests and checks one record's schema and media paths. It does not
decode media; validate.py does, for the whole file.
"""
from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from ..task_registry import BUILTIN, TaskSpec, declared, undeclared_task

# The built-in tasks (declared in omni_core/task_registry.py). TASKS is the order `prepare` writes their
# samples in, which the prepared data's bytes depend on; user tasks come from params.yaml `tasks:`.
TASKS = ("image_caption", "image_vqa", "ocr", "highres_read", "video_caption", "video_qa", "asr", "spoken_qa",
         "omni_image_speech", "omni_continuation", "video_narration_qa", "text_instruct", "text_lm", "asr_open")
EVAL_ONLY_TASKS = tuple(t for t, spec in BUILTIN.items() if spec.eval_only)   # real LibriVox speech: test only
OPT_IN_TASKS = ("asr_open", "asr_heldout_voice")   # built only where data.task_samples names them (small profile)
ALL_TASKS = TASKS + EVAL_ONLY_TASKS
SPLITS = ("train", "val", "test")
ROLES = ("system", "user", "assistant")
MEDIA_TYPES = ("image", "video", "audio")
PART_TYPES = ("text",) + MEDIA_TYPES
PLACEHOLDERS = {"image": "<image>", "video": "<video>", "audio": "<audio>"}
REQUIRED = ("id", "task", "split", "source", "license", "messages")

Sample = dict[str, Any]


class ManifestError(ValueError):
    """A manifest line is not valid JSON, breaks the schema, or names an unsafe media path."""


def iter_manifest(path: str | Path, skip_bad_json: bool = False) -> Iterator[tuple[int, Sample]]:
    """(line number, record) for each non-empty line; bad JSON raises with file:line, or, with
    ``skip_bad_json``, is yielded as a ManifestError in place of the record."""
    path = Path(path)
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                err = ManifestError(f"not valid JSON ({e.msg} at column {e.colno}); each line must be one "
                                    f"JSON object")
                if not skip_bad_json:
                    raise ManifestError(f"{path}:{n}: {err}") from None
                rec = err
            yield n, rec


def read_manifest(path: str | Path) -> list[Sample]:
    return [rec for _, rec in iter_manifest(path)]


def dumps(sample: Sample) -> str:
    """One line; key order as built, so the same samples always give the same bytes."""
    return json.dumps(sample, ensure_ascii=False, separators=(", ", ": "))


def write_manifest(path: str | Path, samples: Iterable[Sample]) -> int:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for s in samples:
            f.write(dumps(s) + "\n")
            n += 1
    return n


def make_sample(id: str, task: str, split: str, source: str, license: str,
                user: list[dict], answer: str | None, system: str | None = None) -> Sample:
    """A one-turn conversation; ``answer=None`` gives a user-less text_lm record (assistant only)."""
    messages = []
    if system:
        messages.append({"role": "system", "content": [{"type": "text", "text": system}]})
    if user:
        messages.append({"role": "user", "content": user})
    if answer is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return {"id": id, "task": task, "split": split, "source": source, "license": license, "messages": messages}


def text(t: str) -> dict:
    return {"type": "text", "text": t}


def media(kind: str, path: str, audio: bool = False) -> dict:
    """A media part; ``audio=True`` marks a video whose own sound track the processor also decodes (into the
    audio branch, right after the video's tokens)."""
    if audio and kind != "video":
        raise ValueError(f"media({kind!r}, {path!r}, audio=True): only a video part carries its own sound track")
    return {"type": kind, "path": path, "audio": True} if audio else {"type": kind, "path": path}


def media_parts(sample: Sample) -> list[dict]:
    """The media parts of all turns, in order of appearance (the order the processor splices them)."""
    return [p for m in sample.get("messages", []) for p in (m.get("content") or [])
            if isinstance(p, dict) and p.get("type") in MEDIA_TYPES]


def sample_text(sample: Sample) -> str:
    return "\n".join(p.get("text", "") for m in sample.get("messages", []) for p in m.get("content", [])
                     if isinstance(p, dict) and p.get("type") == "text")


def answer_text(sample: Sample) -> str:
    """The text of the last assistant turn (the reference answer for evaluation)."""
    for m in reversed(sample.get("messages", [])):
        if m.get("role") == "assistant":
            return "".join(p.get("text", "") for p in m.get("content", []) if p.get("type") == "text")
    return ""


@functools.lru_cache(maxsize=16)
def _resolved(directory: str) -> Path:
    """The real path of a manifest's folder (absolute), resolved once rather than once per media file."""
    return Path(directory).resolve()


def safe_media_path(base_dir: str | Path, rel: str) -> Path:
    """``base_dir / rel`` if ``rel`` is relative and stays inside ``base_dir``; else ManifestError."""
    if not isinstance(rel, str) or not rel:
        raise ManifestError(f"media path must be a non-empty string, got {rel!r}")
    p = PurePosixPath(rel)
    if p.is_absolute() or "\\" in rel or (len(rel) > 1 and rel[1] == ":"):
        raise ManifestError(f"media path {rel!r} is absolute; make it relative to the manifest's folder")
    base = _resolved(os.path.abspath(base_dir))
    full = (base / p).resolve()
    if ".." in p.parts or not full.is_relative_to(base):
        raise ManifestError(f"media path {rel!r} leaves the manifest's folder {base}; copy the file "
                            f"inside it (e.g. under media/)")
    return full


def schema_problems(sample: Any, known_tasks: Mapping[str, TaskSpec] | Iterable[str] | None = None) -> list[str]:
    """Reasons this record breaks the schema (empty list = fine). No file system access.

    ``known_tasks``: the declared tasks (``Config.task_registry()``; None = the active registry, see
    omni_core/task_registry.py); a declared task's ``modalities`` bound the media its samples carry."""
    if not isinstance(sample, dict):
        return [f"record must be a JSON object, got {type(sample).__name__}"]
    out = [f"missing key {k!r}" for k in REQUIRED if k not in sample]
    for k in ("id", "task", "split", "source", "license"):
        if k in sample and (not isinstance(sample[k], str) or not sample[k]):
            out.append(f"{k!r} must be a non-empty string, got {sample[k]!r}")
    specs = known_tasks if isinstance(known_tasks, Mapping) else declared()
    names = tuple(specs if known_tasks is None else known_tasks)
    task = sample.get("task")
    if isinstance(task, str) and task and task not in names:
        out.append(undeclared_task(task, names))
    if "split" in sample and sample["split"] not in SPLITS:
        out.append(f"split {sample['split']!r} is not one of {', '.join(SPLITS)}")
    msgs = sample.get("messages")
    if "messages" in sample and (not isinstance(msgs, list) or not msgs):
        return out + ["'messages' must be a non-empty list of turns"]
    for i, m in enumerate(msgs or []):
        where = f"messages[{i}]"
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            out.append(f"{where}: role must be one of {', '.join(ROLES)}")
            continue
        content = m.get("content")
        if not isinstance(content, list) or not content:
            out.append(f"{where}: 'content' must be a non-empty list of parts")
            continue
        for j, part in enumerate(content):
            pw = f"{where}.content[{j}]"
            kind = part.get("type") if isinstance(part, dict) else None
            if kind not in PART_TYPES:
                out.append(f"{pw}: type must be one of {', '.join(PART_TYPES)}, got {kind!r}")
            elif kind == "text" and not isinstance(part.get("text"), str):
                out.append(f"{pw}: text part needs a string 'text'")
            elif kind in MEDIA_TYPES and not isinstance(part.get("path"), str):
                out.append(f"{pw}: {kind} part needs a 'path' relative to the manifest's folder")
            elif kind in MEDIA_TYPES and m["role"] == "assistant":
                out.append(f"{pw}: media in an assistant turn cannot be supervised; move it to a user turn")
            elif "audio" in part and kind != "video":
                out.append(f"{pw}: key 'audio' marks a video's own sound track; a {kind} part cannot carry it, "
                           f"drop the key")
            elif "audio" in part and not isinstance(part["audio"], bool):
                out.append(f"{pw}: key 'audio' must be true or false (a JSON boolean), got {part['audio']!r}")
    if isinstance(msgs, list) and msgs and isinstance(msgs[-1], dict):
        if msgs[-1].get("role") != "assistant":
            out.append("the last turn must be the assistant's answer")
        elif not answer_text(sample).strip():
            out.append("empty answer: the last assistant turn has no text to learn or score")
    if not out and isinstance(task, str) and task in specs:            # the turns are well-formed: their media can be read
        out += _modality_problems(sample, specs[task])
    return out


def _modality_problems(sample: Sample, spec: TaskSpec) -> list[str]:
    """Media its task does not declare: a mislabelled sample would be scored (and sampled) as another task."""
    parts = media_parts(sample)
    kinds = {p["type"] for p in parts} | {"audio" for p in parts if p.get("audio") is True}
    extra = sorted(kinds - set(spec.modalities))
    if not extra:
        return []
    fix = "" if spec.builtin else f", or add them to params.yaml tasks.{sample['task']}.modalities"
    return [f"task {sample['task']!r} takes {', '.join(spec.modalities)} but this sample carries {', '.join(extra)}; "
            f"give the sample the task its media fit{fix}"]
