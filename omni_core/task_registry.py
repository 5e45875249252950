"""Tasks as data: what a task's samples carry and how evaluation scores it.

The built-in tasks are declared in :data:`BUILTIN` below, in the paper's table order (the order evaluation
reports them in). Users declare their own under a top-level ``tasks:`` key of params.yaml with the same keys::

    tasks:
      chart_qa: {modalities: [image], metrics: [accuracy], chance: per_question, table: image}

Keys: ``modalities`` (the media a sample may carry: image, video, audio; text is always allowed),
``metrics`` (the first is the headline), ``chance`` (the trivial baseline the metrics are compared with),
``table`` (the ``metrics/<table>.json`` it is reported in), and optionally ``normalize`` (how answers are
compared; ``metric`` = each metric's own normalisation, see omni_core/eval/metrics.py), ``title`` (the tables'
name for it) and ``chance_from`` (fit the baseline on another task's training split, for a test-only task).
A user task may not reuse a built-in name: built-in scores must keep meaning what the committed results say.

``load_config`` merges the declarations over the built-ins (:func:`merge`) and makes the result the
*active* registry (:func:`activate`), which code that reads results without a config (tables, figures)
looks tasks up in. Plain Python, no torch: ``omni_core.config`` imports it.
"""
from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

MODALITIES = ("text", "image", "video", "audio")
# the metrics omni_core.eval.metrics implements (METRICS, plus perplexity, which the runner measures from
# the model's likelihood); tests/test_user_task.py keeps the two lists equal
METRIC_NAMES = ("accuracy", "exact", "wer", "cer", "bleu", "chrf", "perplexity")
NORMALIZATIONS = ("metric", "answer", "transcript", "strict", "none")
CHANCE_KINDS = ("majority", "per_question", "fixed_sentence", "unigram")
TABLES = ("text", "image", "video", "audio", "omni")
USER_KEYS = ("modalities", "metrics", "chance", "table", "normalize", "title", "chance_from")
REQUIRED_KEYS = ("modalities", "metrics", "chance", "table")
EXAMPLE = "tasks: {my_task: {modalities: [image], metrics: [accuracy], chance: majority, table: image}}"


class TaskDeclarationError(ValueError):
    """A task declaration names an unknown key, metric, modality, chance kind or table."""


@dataclass(frozen=True)
class TaskSpec:
    """One task's declaration: its table, metrics (the first is the headline), chance baseline and title;
    the media its samples may carry; how answers are normalised; whether it has a training split."""
    table: str
    metrics: tuple[str, ...]
    chance: str
    title: str
    chance_from: str | None = None     # fit the baseline on this task's training split (test-only tasks)
    modalities: tuple[str, ...] = ("text",)
    normalize: str = "metric"          # "metric": each metric's own (answer / strict / transcript)
    eval_only: bool = False            # no training split (real LibriVox speech): never in a stage's mixture
    builtin: bool = False

    @property
    def baseline(self) -> str:         # the name evaluation code used before tasks were data
        return self.chance

    @property
    def baseline_from(self) -> str | None:
        return self.chance_from


def _builtin(table: str, metrics: tuple[str, ...], chance: str, title: str, modalities: tuple[str, ...],
             chance_from: str | None = None, eval_only: bool = False) -> TaskSpec:
    return TaskSpec(table, metrics, chance, title, chance_from, modalities, "metric", eval_only, builtin=True)


# The paper's order: evaluation reports tasks (and metrics/<table>.json holds them) in this order.
BUILTIN: dict[str, TaskSpec] = {
    "text_lm": _builtin("text", ("perplexity",), "unigram", "held-out text", ("text",)),
    "text_instruct": _builtin("text", ("exact", "chrf"), "per_question", "text instructions", ("text",)),
    "image_caption": _builtin("image", ("chrf", "bleu", "accuracy"), "fixed_sentence", "captioning", ("image",)),
    "image_vqa": _builtin("image", ("accuracy",), "per_question", "VQA", ("image",)),
    "ocr": _builtin("image", ("accuracy", "cer"), "majority", "OCR", ("image",)),
    "highres_read": _builtin("image", ("accuracy", "cer"), "majority", "high-res reading (AnyRes)", ("image",)),
    "video_caption": _builtin("video", ("chrf", "bleu", "accuracy"), "fixed_sentence", "video captioning",
                              ("video",)),
    "video_qa": _builtin("video", ("accuracy",), "per_question", "video QA", ("video",)),
    "asr": _builtin("audio", ("wer", "cer"), "fixed_sentence", "ASR (TTS speech)", ("audio",)),
    "asr_real": _builtin("audio", ("wer", "cer"), "fixed_sentence", "ASR (real LibriVox speech)", ("audio",),
                         chance_from="asr", eval_only=True),
    # opt-in (data.task_samples): flite reading open-vocabulary sentences, and the same test sentences read by a
    # voice no training sample has (data.heldout_voices)
    "asr_open": _builtin("audio", ("wer", "cer"), "fixed_sentence", "ASR (open vocabulary, TTS)", ("audio",)),
    "asr_heldout_voice": _builtin("audio", ("wer", "cer"), "fixed_sentence", "ASR (open vocabulary, unheard voice)",
                                  ("audio",), chance_from="asr_open", eval_only=True),
    "spoken_qa": _builtin("audio", ("accuracy",), "majority", "spoken QA", ("audio",)),
    "omni_image_speech": _builtin("omni", ("accuracy",), "per_question", "image + speech QA", ("image", "audio")),
    "omni_continuation": _builtin("omni", ("chrf", "bleu"), "fixed_sentence", "image + speech continuation",
                                  ("image", "audio")),
    # the clip shows one digit and its sound track says another: chance is the most common digit word (~10 %)
    "video_narration_qa": _builtin("omni", ("accuracy",), "majority", "video + its audio track QA",
                                   ("video", "audio")),
}


def _choices(value: Any, allowed: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(str(value), allowed, n=1)
    return (f" (did you mean {close[0]!r}?)" if close else "") + f"; choose from {', '.join(allowed)}"


def _names(raw: Any, key: str, allowed: tuple[str, ...], what: str) -> tuple[str, ...]:
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not items or not all(isinstance(x, str) for x in items):
        raise TaskDeclarationError(f"{key} must be a non-empty list of {what}s, e.g. [{allowed[0]}]; got {raw!r}")
    for x in items:
        if x not in allowed:
            raise TaskDeclarationError(f"{key}: unknown {what} {x!r}{_choices(x, allowed)}")
    return tuple(items)


def _one(raw: Any, key: str, allowed: tuple[str, ...], what: str) -> str:
    if raw not in allowed:
        raise TaskDeclarationError(f"{key}: unknown {what} {raw!r}{_choices(raw, allowed)}")
    return raw


def declare(name: str, raw: Any, known: Mapping[str, TaskSpec]) -> TaskSpec:
    """One user declaration (``tasks.<name>`` of params.yaml) -> its TaskSpec; errors name the key and the fix.
    ``known``: the tasks declared so far (for ``chance_from``)."""
    key = f"tasks.{name}"
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise TaskDeclarationError(f"{key}: a task name is letters, digits, '_' or '-' (it is a JSON key and a file "
                                   f"name); rename it")
    if name in BUILTIN:
        raise TaskDeclarationError(f"{key}: {name!r} is a built-in task (omni_core/task_registry.py), whose scoring "
                                   f"the committed results depend on; declare your variant under another name, "
                                   f"e.g. tasks.my_{name}, and use that name in its manifest lines")
    if not isinstance(raw, dict):
        raise TaskDeclarationError(f"{key} must be a mapping, e.g. {EXAMPLE}; got {raw!r}")
    for k in raw:
        if k not in USER_KEYS:
            raise TaskDeclarationError(f"{key}.{k}: unknown key{_choices(k, USER_KEYS)}")
    missing = [k for k in REQUIRED_KEYS if k not in raw]
    if missing:
        raise TaskDeclarationError(f"{key}: missing {', '.join(missing)}; e.g. {EXAMPLE}")
    modalities = _names(raw["modalities"], f"{key}.modalities", MODALITIES, "modality")
    metrics = _names(raw["metrics"], f"{key}.metrics", METRIC_NAMES, "metric")
    chance = _one(raw["chance"], f"{key}.chance", CHANCE_KINDS, "chance kind")
    table = _one(raw["table"], f"{key}.table", TABLES, "table")
    normalize = _one(raw.get("normalize", "metric"), f"{key}.normalize", NORMALIZATIONS, "normalisation")
    if "perplexity" in metrics and metrics != ("perplexity",):
        raise TaskDeclarationError(f"{key}.metrics: perplexity is measured from the model's likelihood of the "
                                   f"answer, not from generated text; declare it alone ([perplexity]) or drop it")
    if (chance == "unigram") != (metrics == ("perplexity",)):
        raise TaskDeclarationError(f"{key}.chance: the unigram baseline goes with metrics [perplexity] and only with "
                                   f"it; use majority, per_question or fixed_sentence for generated answers")
    if metrics == ("perplexity",) and normalize != "metric":
        raise TaskDeclarationError(f"{key}.normalize: perplexity compares no strings; drop the key")
    title = raw.get("title", name)
    if not isinstance(title, str) or not title:
        raise TaskDeclarationError(f"{key}.title must be a non-empty string, got {title!r}")
    chance_from = raw.get("chance_from")
    if chance_from is not None and (chance_from not in known or known[chance_from].eval_only):
        trainable = [t for t, s in known.items() if not s.eval_only]
        raise TaskDeclarationError(f"{key}.chance_from: {chance_from!r} is not a task with a training split declared "
                                   f"before it{_choices(chance_from, tuple(trainable))}")
    return TaskSpec(table, metrics, chance, title, chance_from, modalities, normalize)


def merge(user: Mapping[str, Any] | None) -> dict[str, TaskSpec]:
    """The built-in tasks, then the user's declarations in their order (validated by :func:`declare`)."""
    out = dict(BUILTIN)
    for name, raw in (user or {}).items():
        out[str(name)] = declare(str(name), raw, out)
    return out


_active: dict[str, TaskSpec] = dict(BUILTIN)


def activate(tasks: Mapping[str, TaskSpec]) -> None:
    """Make ``tasks`` (``Config.task_registry()``) what :func:`declared` returns; ``load_config`` calls it, so a
    process's last loaded config decides which user tasks tables and figures know."""
    global _active
    _active = dict(tasks)


def declared() -> dict[str, TaskSpec]:
    """The active registry: the built-ins plus the user tasks of the last ``load_config``."""
    return _active


def undeclared_task(task: str, known: Iterable[str]) -> str:
    """Why a manifest line's task is rejected, in one line: the task and the fix (the caller adds file:line)."""
    close = difflib.get_close_matches(task, list(known), n=1)
    return (f"unknown task {task!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
            + f"; {'or ' if close else ''}declare it in params.yaml under `tasks:`, e.g. tasks: {{{task}: "
            f"{{modalities: [image], metrics: [accuracy], chance: majority, table: image}}}} (docs/interfaces.md)")
