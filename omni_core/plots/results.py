"""Evaluation figures: each task's headline metric beside chance, confusion matrices where answers are
classes, test samples with their predictions (notebooks 04, 05)."""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import matplotlib.collections
import matplotlib.lines
import matplotlib.patches
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np

from ..eval.metrics import METRICS, TABLES, higher_is_better, one_answer_for_all, task_spec
from .style import _TABLE_COLORS, _draw_wave, _finish, _frames_strip, _wrap, save_figure


# ------------------------------------------------------------------------------ metric vs chance
def headline_rows(results: Mapping) -> list[tuple[str, str, str, float, float | None, bool]]:
    """(table, task, metric, measured, chance, higher_is_better) for the headline metric of every task."""
    rows = []
    for table in TABLES:
        for task, res in results.get("tables", {}).get(table, {}).get("tasks", {}).items():
            metric = task_spec(task).metrics[0]
            if metric in res:
                higher = higher_is_better(metric)
                rows.append((table, task, metric, float(res[metric]), res.get("chance", {}).get(metric), higher))
    return rows


def _margin_whiskers(rows, tasks: Mapping) -> list[list[float]] | None:
    """Asymmetric x-errors that put each bar's whisker on chance + the margin's 95 % interval (the runner's
    `margin_ci95`); None when no task has one (results from before the intervals were recorded)."""
    lo, hi = [], []
    for _, task, metric, value, chance, higher in rows:
        ci = tasks[task].get("margin_ci95", {}).get(metric)
        if ci is None or chance is None:
            lo.append(0.0)
            hi.append(0.0)
            continue
        a, b = (chance + ci[0], chance + ci[1]) if higher else (chance - ci[1], chance - ci[0])
        lo.append(max(value - a, 0.0))
        hi.append(max(b - value, 0.0))
    return [lo, hi] if any(lo) or any(hi) else None


def plot_metric_vs_chance(results: Mapping, out: str | Path) -> list[Path]:
    """Horizontal bars: measured (coloured by table) and chance (grey) for every task; perplexity apart."""
    rows = headline_rows(results)
    pct = [r for r in rows if r[2] != "perplexity"]
    ppl = [r for r in rows if r[2] == "perplexity"]
    if not rows:
        raise ValueError("plot_metric_vs_chance: the results hold no task metrics; run evaluate() first")
    fig, axes = plt.subplots(1, 2 if ppl else 1, figsize=(10 if ppl else 7.5, 0.42 * max(len(pct), 3) + 1.2),
                             gridspec_kw={"width_ratios": [3, 1]} if ppl else None, squeeze=False,
                             layout="constrained")
    ax = axes[0, 0]
    ys = range(len(pct))
    tasks = {t: res for tab in results.get("tables", {}).values() for t, res in tab.get("tasks", {}).items()}
    whiskers = _margin_whiskers(pct, tasks)
    ax.barh([y + 0.2 for y in ys], [r[3] for r in pct], height=0.4, label="measured",
            color=[_TABLE_COLORS[r[0]] for r in pct], xerr=whiskers, ecolor="0.25",
            error_kw={"lw": 0.8, "capsize": 2})
    ax.barh([y - 0.2 for y in ys], [r[4] or 0 for r in pct], height=0.4, color="0.9", edgecolor="0.5",
            hatch="///", lw=0.5, label="chance")
    constant = {t for t, res in tasks.items() if one_answer_for_all(res)}
    ax.set_yticks(list(ys), [f"{r[1]} ({METRICS[r[2]].label}{'' if r[5] else ' ↓'})"
                             f"{', one answer for all' if r[1] in constant else ''}" for r in pct], fontsize=8)
    ax.invert_yaxis()
    reach = max([r[3] + (whiskers[1][i] if whiskers else 0) for i, r in enumerate(pct)] + [r[4] or 0 for r in pct] + [0.0])
    upper = max(100.0, 1.05 * reach)       # WER counts insertions too: a score can pass 100
    ax.set_xlim(0, upper)
    scale = "0-100" if upper <= 100 else f"0-{upper:.0f}: WER and CER pass 100 when words are inserted"
    ax.set_xlabel(f"score ({scale}; ↓ = lower is better); whiskers: 95 % interval of the margin over chance")
    tables = dict.fromkeys(r[0] for r in pct)
    handles = [matplotlib.patches.Patch(color=_TABLE_COLORS[t], label=f"measured ({t})") for t in tables]
    chance = matplotlib.patches.Patch(facecolor="0.9", edgecolor="0.5", hatch="///", label="chance (trivial baseline)")
    fig.legend(handles=[*handles, chance], fontsize=8, frameon=False, loc="outside lower center", ncol=3)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("Held-out test split: measured vs chance")
    if ppl:
        ax2 = axes[0, 1]
        labels, vals, colors = [], [], []
        for _, task, _, value, chance, _ in ppl:
            res = results["tables"]["text"]["tasks"][task]
            for lab, v, c in (("before", res.get("perplexity_before"), "#bbbbbb"), ("after", value, "#7f7f7f"),
                              ("unigram", chance, "#dddddd")):
                if v is not None:
                    labels.append(lab)
                    vals.append(v)
                    colors.append(c)
        bars = ax2.bar(labels, vals, color=colors)
        ax2.bar_label(bars, fmt="%.4g", fontsize=8)
        ax2.set_ylim(0, 1.15 * max(vals))
        ax2.set_title("held-out text perplexity ↓", fontsize=9)
        ax2.tick_params(labelsize=8)
    return save_figure(fig, out)


# ------------------------------------------------------------------------- predictions and confusion (04)
# tasks whose answers are classes (a closed vocabulary): each gets figures/confusion_<task>.png
CONFUSION_TASKS = ("image_vqa", "video_qa", "highres_read", "spoken_qa", "omni_image_speech", "video_narration_qa")


def prediction_records(predictions: str | Path | Iterable[Mapping], manifest: str | Path) -> list[dict]:
    """The rows of ``metrics/predictions.jsonl`` (task, id, prediction, reference; `omni_core.eval.runner`), each
    with its test sample's ``question`` (the user's text) and ``sample`` (the manifest record, for its media)."""
    from ..data.manifest import read_manifest

    if isinstance(predictions, (str, Path)):
        with open(predictions) as f:
            predictions = [json.loads(line) for line in f if line.strip()]
    manifests: dict[str, dict[str, dict]] = {}    # a data source's rows name their manifest; the rest are ``manifest``'s
    records = []
    for p in predictions:
        where = p.get("manifest", str(manifest))
        if where not in manifests:
            manifests[where] = {s["id"]: s for s in read_manifest(where)}
        s = manifests[where].get(p["id"])
        if s is None:
            raise KeyError(f"prediction {p['id']!r} has no sample in {where}; evaluate and data prep disagree")
        question = " ".join(part["text"] for m in s["messages"][:-1] if m["role"] == "user"
                            for part in m["content"] if part["type"] == "text")
        records.append({**p, "question": question, "sample": s, "base_dir": str(Path(where).parent)})
    return records


def question_kind(question: str) -> str:
    """What a question asks, from its first two words ("What shape ...", "How many ..."): the tasks' questions
    are templates, so this splits a task's answers into the classes that compete with each other."""
    return " ".join(question.lower().split()[:2]) or "(no question)"


def _answer_order() -> dict[str, int]:
    """The tasks' vocabularies in a reading order (numbers counted up, not alphabetical)."""
    from ..data.sources.images import COLOURS, NUMBER_WORDS, QUADRANTS, SHAPES
    from ..data.sources.video import DIRECTIONS

    return {w: i for i, w in enumerate([*NUMBER_WORDS, *COLOURS, *SHAPES, *QUADRANTS, *DIRECTIONS])}


def confusion_matrix(predictions: Sequence[str], references: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """(classes, counts): ``counts[i, j]`` = samples whose reference is class i and whose prediction is class j,
    after the metric's normalisation; the last column, "other", counts predictions outside the references."""
    from ..eval.metrics import normalize_answer

    refs, preds = [normalize_answer(r) for r in references], [normalize_answer(p) for p in predictions]
    order = _answer_order()
    classes = sorted(set(refs), key=lambda c: (order.get(c, len(order)), c))
    index = {c: i for i, c in enumerate(classes)}
    counts = np.zeros((len(classes), len(classes) + 1), dtype=int)
    for r, p in zip(refs, preds):
        counts[index[r], index.get(p, len(classes))] += 1
    return classes, counts


def confusion_panels(records: Sequence[Mapping], max_classes: int = 24) -> dict[str, tuple[list[str], np.ndarray]]:
    """One confusion matrix per question kind of ``records`` (one task's :func:`prediction_records`); kinds with
    more than ``max_classes`` distinct answers are open questions (read a 4-digit number) and left out."""
    by_kind: dict[str, list[Mapping]] = {}
    for r in records:
        by_kind.setdefault(question_kind(r["question"]), []).append(r)
    panels = {}
    for kind, rows in by_kind.items():
        classes, counts = confusion_matrix([r["prediction"] for r in rows], [r["reference"] for r in rows])
        if len(classes) <= max_classes:
            panels[kind] = (classes, counts)
    return panels


def plot_confusion(records: Sequence[Mapping], task: str, out: str | Path | None = None, max_classes: int = 24):
    """Confusion matrices of one task's answers, one panel per question kind (:func:`confusion_panels`): rows
    the reference, columns the prediction (+ "other"), cells the count, shaded by the share of the row."""
    rows = [r for r in records if r["task"] == task]
    panels = confusion_panels(rows, max_classes)
    if not panels:
        raise ValueError(f"plot_confusion: {task} has no question kind with at most {max_classes} answers "
                         f"({len(rows)} predictions)")
    sizes = [len(c) for c, _ in panels.values()]
    fig, axes = plt.subplots(1, len(panels), figsize=(sum(0.42 * n + 1.6 for n in sizes) + 0.5,
                                                      0.42 * max(sizes) + 2.0),
                             squeeze=False, gridspec_kw={"width_ratios": [n + 2 for n in sizes]}, layout="constrained")
    for ax, (kind, (classes, counts)) in zip(axes[0], panels.items()):
        share = counts / np.maximum(counts.sum(1, keepdims=True), 1)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1, aspect="auto")
        for (i, j), n in np.ndenumerate(counts):
            if n:
                ax.text(j, i, str(n), ha="center", va="center", fontsize=7, color="white" if share[i, j] > 0.6 else "k")
        ax.set_xticks(range(len(classes) + 1), [*classes, "other"], rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(classes)), classes, fontsize=7)
        ax.set_xlabel("prediction")
        ax.set_ylabel("reference")
        right = int(np.trace(counts[:, :len(classes)]))
        asks = f"“{kind} …”: " if len(panels) > 1 else ""      # one kind: the task's one fixed instruction
        ax.set_title(f"{asks}{right}/{counts.sum()} right", fontsize=9)
    fig.suptitle(f"{task}: which answers the model confuses (test split)", fontsize=10)
    return _finish(fig, out)


def is_right(record: Mapping) -> bool:
    """The prediction equals the reference after the metric's normalisation (exact match)."""
    from ..eval.metrics import answers_match

    return answers_match(record["prediction"], record["reference"])


def plot_prediction_grid(records: Sequence[Mapping], root: str | Path, vision=None, per_task: int = 4,
                         out: str | Path | None = None):
    """A few test samples of one task (``records`` from :func:`prediction_records`), right and wrong ones mixed:
    the media as the model gets them (image, sampled frames, or the audio waveform), the question, the
    prediction, the reference and ✓ / ✗ (exact match after normalisation). ``vision``: the
    `omni_core.config.VisionConfig` that sampled the frames (default: 1 fps, at most 8)."""
    from ..data.manifest import media_parts
    from ..processing import load_audio, load_image, load_video_frames

    right = [r for r in records if is_right(r)]
    wrong = [r for r in records if not is_right(r)]
    picks = wrong[:per_task - min(len(right), per_task // 2)]
    picks = right[:per_task - len(picks)] + picks
    if not picks:
        raise ValueError("plot_prediction_grid: no records")
    root = Path(root)
    fps, max_frames, side = (vision.video_fps, vision.video_max_frames, vision.image_size * vision.max_tiles) \
        if vision is not None else (1.0, 8, 512)
    shown = []                       # (picture or wave, its height / width) per pick
    for r in picks:
        parts = media_parts(r["sample"])
        visual = next((p for p in parts if p["type"] in ("image", "video")), None)
        base = Path(r.get("base_dir", root))          # a data source's media sit beside its own manifest
        if visual is not None:
            picture = np.asarray(load_image(visual, base, side)) if visual["type"] == "image" else \
                _frames_strip(load_video_frames(visual, base, fps, max_frames))
            shown.append((picture, picture.shape[0] / picture.shape[1]))
        else:
            shown.append((load_audio(parts[0], base), 0.6) if parts else (None, 0.2))
    height = 1.4 + 3.1 * max(aspect for _, aspect in shown)
    fig, axes = plt.subplots(1, len(picks), figsize=(3.3 * len(picks), height), squeeze=False, layout="constrained")
    for ax, r, (media, _) in zip(axes[0], picks, shown):
        parts = media_parts(r["sample"])
        if media is not None and media.ndim == 3:
            ax.imshow(media)
            ax.axis("off")
        elif media is not None:
            _draw_wave(ax, media)
        else:
            ax.axis("off")
        ok = is_right(r)
        kinds = "+".join(p["type"] + ("+audio" if p.get("audio") else "") for p in parts) or "text"
        ax.set_title(f"[{kinds}] {_wrap(r['question'], 38)}\npred: {_wrap(r['prediction'], 34)}\n"
                     f"ref:  {_wrap(r['reference'], 34)}\n{'✓ right' if ok else '✗ wrong'}",
                     fontsize=7.5, loc="left", color="#2ca02c" if ok else "#d62728")
    fig.suptitle(f"{records[0]['task']}: test samples, {len(right)}/{len(records)} right", fontsize=10)
    return _finish(fig, out)
