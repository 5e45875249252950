"""Our own test split as lmms-eval tasks (the YAML files beside this module) and the functions they name.

A task's docs are manifest records (``data/prepared/test.jsonl`` read by ``datasets``' json builder);
``doc_to_messages`` gives the prompt turns with media as absolute paths under ``data_root`` (the task's
``lmms_eval_specific_kwargs``), ``doc_to_visual`` / ``doc_to_text`` the same for simple models, and the
score is :func:`omni_core.eval.metrics.accuracy`, so lmms-eval's number is ``python -m omni_core.eval``'s.
Use::

    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager
    from omni_core.eval.lmms_tasks import TASKS_DIR
    simple_evaluate(model=..., tasks=["omni_core_image_vqa"],
                    task_manager=TaskManager(include_path=str(TASKS_DIR), include_defaults=False))
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

TASKS_DIR = Path(__file__).resolve().parent
MEDIA_TYPES = ("image", "video", "audio")


def _root(kwargs: dict | None) -> Path:
    return Path((kwargs or {}).get("data_root") or "data/prepared").resolve()


def _prompt(doc: dict) -> list[dict]:
    """Every turn before the reference answer (the last, assistant, message)."""
    messages = doc["messages"]
    if not messages or messages[-1]["role"] != "assistant":
        raise ValueError(f"record {doc.get('id')!r} must end with an assistant message (the reference)")
    return messages[:-1]


def image_vqa_docs(dataset: Any) -> Any:
    """The manifest's image_vqa records, in file order (``python -m omni_core.eval`` takes the same first N)."""
    return dataset.filter(lambda doc: doc["task"] == "image_vqa")


def doc_to_messages(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> list[dict]:
    """lmms-eval chat messages: our content parts in order, media as ``url`` = absolute file path."""
    root = _root(lmms_eval_specific_kwargs)
    out = []
    for m in _prompt(doc):
        parts = []
        for p in m["content"]:
            if p["type"] == "text":
                parts.append({"type": "text", "text": p["text"]})
            elif p["type"] in MEDIA_TYPES:
                if p.get("audio"):          # a chat part carries no "audio" flag for a video's own sound track
                    raise NotImplementedError(f"record {doc.get('id')!r}: narrated video parts are not supported")
                parts.append({"type": p["type"], "url": str(root / p["path"])})
        out.append({"role": m["role"], "content": parts})
    return out


def doc_to_visual(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> list[str]:
    """The prompt's media files (absolute paths), for simple models."""
    return [c["url"] for m in doc_to_messages(doc, lmms_eval_specific_kwargs) for c in m["content"]
            if c["type"] != "text"]


def doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    """The prompt's text (every user turn's text parts)."""
    return " ".join(p["text"] for m in _prompt(doc) if m["role"] == "user" for p in m["content"]
                    if p["type"] == "text").strip()


def doc_to_target(doc: dict) -> str:
    return " ".join(p["text"] for p in doc["messages"][-1]["content"] if p["type"] == "text").strip()


def process_results(doc: dict, results: list[str]) -> dict[str, tuple[str, str]]:
    """(prediction, reference) per doc; :func:`percent` scores them together like the runner."""
    return {"accuracy": (results[0], doc_to_target(doc))}


def percent(items: list[tuple[str, str]]) -> float:
    """Exact match of the normalised answer, in percent (:func:`omni_core.eval.metrics.accuracy`)."""
    from omni_core.eval.metrics import accuracy

    preds, refs = zip(*items)
    return accuracy(list(preds), list(refs))
