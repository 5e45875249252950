"""Import (and export) the LLaVA / ShareGPT JSON that users already have.

LLaVA: ``[{"id", "image": "x.jpg" | ["a.jpg", ...], "conversations": [{"from": "human", "value":
"<image>\\n..."}, {"from": "gpt", "value": "..."}]}]``; the same with ``video`` / ``<video>`` and
``audio`` / ``<audio>`` (also plural keys ``images``, ``videos``, ``audios``). Each placeholder in a
human turn becomes a typed media part at that spot; media without placeholders go first in the first
human turn (LLaVA's convention). Media files are copied (hard-linked when possible) under the
manifest's folder, because manifest paths never leave it.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from ..task_registry import declared, undeclared_task
from .manifest import MEDIA_TYPES, PLACEHOLDERS, Sample, write_manifest

ROLE_MAP = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "bot": "assistant",
            "model": "assistant", "system": "system"}
_PLACEHOLDER_RE = re.compile("(" + "|".join(re.escape(v) for v in PLACEHOLDERS.values()) + ")")
_KIND_OF = {v: k for k, v in PLACEHOLDERS.items()}


class LlavaImportError(ValueError):
    """A LLaVA record is malformed; the message names the file, record index and id."""


def _media_lists(rec: dict) -> dict[str, list[str]]:
    out = {}
    for kind in MEDIA_TYPES:
        v = rec.get(kind, rec.get(kind + "s"))
        out[kind] = [] if v is None else [v] if isinstance(v, str) else list(v)
    return out


def guess_task(kinds: set[str]) -> str:
    if {"image", "audio"} <= kinds:
        return "omni_image_speech"
    return {"image": "image_vqa", "video": "video_qa", "audio": "spoken_qa"}.get(next(iter(sorted(kinds)), ""),
                                                                                "text_instruct")


def convert_record(rec: dict, where: str, media_prefix: str = "media", task: str | None = None,
                   split: str = "train", source: str = "llava", license: str = "unknown") -> Sample:
    """One LLaVA record -> one manifest record (media paths = ``media_prefix/<original path>``)."""
    if not isinstance(rec, dict) or not isinstance(rec.get("conversations"), list) or not rec["conversations"]:
        raise LlavaImportError(f"{where}: needs a non-empty 'conversations' list of {{'from', 'value'}} turns")
    media = _media_lists(rec)
    queues = {k: list(v) for k, v in media.items()}
    messages = []
    for j, turn in enumerate(rec["conversations"]):
        role = ROLE_MAP.get(str(turn.get("from", turn.get("role", ""))).lower())
        value = turn.get("value", turn.get("content"))
        if role is None or not isinstance(value, str):
            raise LlavaImportError(f"{where}: conversations[{j}] needs 'from' in {sorted(ROLE_MAP)} and a string "
                                   f"'value', got {turn!r:.120}")
        parts = []
        for piece in _PLACEHOLDER_RE.split(value):
            if piece in _KIND_OF:
                kind = _KIND_OF[piece]
                if role != "user":
                    raise LlavaImportError(f"{where}: conversations[{j}] ({role}) holds {piece}; media belong in "
                                           f"human turns")
                if not queues[kind]:
                    raise LlavaImportError(f"{where}: more {piece} placeholders than {kind} files "
                                           f"({len(media[kind])}); fix the record")
                parts.append({"type": kind, "path": f"{media_prefix}/{queues[kind].pop(0)}"})
            elif piece.strip():          # "<image>\nQuestion": the newline only separates the two
                parts.append({"type": "text", "text": piece.strip("\n")})
        messages.append({"role": role, "content": parts})
    used = {k: len(media[k]) - len(queues[k]) for k in MEDIA_TYPES}
    leftover = [(k, p) for k in MEDIA_TYPES for p in queues[k]]
    if leftover:
        if any(used.values()):
            raise LlavaImportError(f"{where}: {len(leftover)} media file(s) have no placeholder while others do; "
                                   f"add a placeholder for each")
        first = next((m for m in messages if m["role"] == "user"), None)
        if first is None:
            raise LlavaImportError(f"{where}: media but no human turn to attach them to")
        first["content"][:0] = [{"type": k, "path": f"{media_prefix}/{p}"} for k, p in leftover]
    kinds = {k for k in MEDIA_TYPES if media[k]}
    return {"id": str(rec.get("id", where)), "task": task or guess_task(kinds), "split": split, "source": source,
            "license": license, "messages": messages}


def export_record(sample: Sample, media_prefix: str = "media") -> dict:
    """The inverse: a manifest record -> LLaVA JSON (placeholder where each media part was)."""
    media: dict[str, list[str]] = {k: [] for k in MEDIA_TYPES}
    convs = []
    for m in sample["messages"]:
        text = []
        for p in m["content"]:
            if p["type"] == "text":
                text.append(p["text"])
            else:
                rel = p["path"]
                media[p["type"]].append(rel[len(media_prefix) + 1:] if rel.startswith(media_prefix + "/") else rel)
                text.append(PLACEHOLDERS[p["type"]])
        joined = text[0] if text else ""
        for prev, t in zip(text, text[1:]):      # LLaVA puts each placeholder on its own line
            joined += ("\n" if prev in _KIND_OF or t in _KIND_OF else "") + t
        convs.append({"from": {"user": "human", "assistant": "gpt", "system": "system"}[m["role"]], "value": joined})
    out: dict = {"id": sample["id"]}
    for k in MEDIA_TYPES:
        if media[k]:
            out[k] = media[k][0] if len(media[k]) == 1 else media[k]
    out["conversations"] = convs
    return out


def _place(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def import_llava(json_path: str | Path, media_root: str | Path, out: str | Path, task: str | None = None,
                 split: str = "train", source: str | None = None, license: str = "unknown",
                 copy_media: bool = True, known_tasks: Iterable[str] | None = None) -> int:
    """Convert a LLaVA / ShareGPT JSON (or JSONL) file into the manifest ``out``; returns the count.

    ``task``: any declared task (``known_tasks``: ``Config.task_registry()``, None = the active registry);
    None guesses a built-in one from each record's media."""
    json_path, media_root, out = Path(json_path), Path(media_root), Path(out)
    known = tuple(declared() if known_tasks is None else known_tasks)
    if task is not None and task not in known:
        raise LlavaImportError(f"--task: {undeclared_task(task, known)}")
    text = json_path.read_text(encoding="utf-8")
    try:
        records = json.loads(text)
    except json.JSONDecodeError:
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
    if isinstance(records, dict):
        records = [records]
    samples = []
    for i, rec in enumerate(records):
        where = f"{json_path}[{i}] (id {rec.get('id') if isinstance(rec, dict) else None!r})"
        s = convert_record(rec, where, "media", task, split, source or json_path.stem, license)
        for kind, rels in _media_lists(rec).items():
            for rel in rels:
                if PurePosixPath(rel).is_absolute() or ".." in PurePosixPath(rel).parts:
                    raise LlavaImportError(f"{where}: {kind} path {rel!r} must be relative to --media-root")
                src = media_root / rel
                if not src.is_file():
                    raise LlavaImportError(f"{where}: {kind} file {src} does not exist; check --media-root")
                if copy_media:
                    _place(src, out.parent / "media" / rel)
        samples.append(s)
    return write_manifest(out, samples)
