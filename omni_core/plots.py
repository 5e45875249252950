"""Figures for the README and notebook 05 (matplotlib, each saved as PNG and SVG), and offline `dvc plots`.

- :func:`plot_loss_curves`: training loss of every stage, one panel per kind of loss (dvclive logs).
- :func:`plot_metric_vs_chance`: each task's headline metric beside its chance level.
- :func:`plot_downsample_ablation`: Conv-GMLP rate n -> WER against audio tokens per second.
- :func:`plot_staging_ablation`: one joint mixture versus the staged recipe, per task.
- :func:`plot_seed_spread`: each task's score in every seed of the same recipe, beside chance.
- :func:`plot_token_budget`: LLM tokens per modality at full scale.
- :func:`plot_token_layout`, :func:`plot_anyres_tiling`: the spliced token sequence of real samples; AnyRes
  tiles and the patches each token pools (notebook 00).
- :func:`plot_stage_grid`: stages x modules, trained (lr) or frozen, beside the paper's setting.
- :func:`plot_confusion`, :func:`plot_prediction_grid`: answers as classes; test samples with their
  predictions (notebook 04).
- :func:`plot_stream_timeline` with :class:`StreamRecorder`: one real-time exchange (notebook 06).
- :func:`render_dvc_plots`: `dvc plots show --json` rendered to PNG/SVG with vl-convert (the HTML
  `dvc plots show` writes loads Vega from a CDN and is blank offline).
"""
from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib.collections
import matplotlib.lines
import matplotlib.patches
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np

from .eval.metrics import METRICS, TABLES, TASKS, higher_is_better, one_answer_for_all, task_spec  # noqa: E402
from .eval.paper_results import REPORTED_DOWNSAMPLE_WER  # noqa: E402

_TABLE_COLORS = {"text": "#7f7f7f", "image": "#1f77b4", "video": "#2ca02c", "audio": "#d62728", "omni": "#9467bd"}


def save_figure(fig, path: str | Path) -> list[Path]:
    """Write ``path`` with .png (150 dpi) and .svg suffixes; close the figure. Returns both paths."""
    path = Path(path).with_suffix("")
    path.parent.mkdir(parents=True, exist_ok=True)
    outs = [path.with_suffix(".png"), path.with_suffix(".svg")]
    # no dates or random ids in the files: the same results must give the same bytes (DVC, git diffs)
    with plt.rc_context({"svg.hashsalt": "omni_core"}):
        fig.savefig(outs[0], dpi=150, bbox_inches="tight", metadata={"Software": None})
        fig.savefig(outs[1], bbox_inches="tight", metadata={"Date": None, "Creator": None})
    _show_in_notebook(fig)
    plt.close(fig)
    return outs


def _show_in_notebook(fig) -> None:
    """Display ``fig`` when running in a Jupyter kernel (JupyterLab, papermill): figures saved here are
    also what a notebook reader should see."""
    shell = sys.modules.get("IPython") and sys.modules["IPython"].get_ipython()
    if shell is not None and getattr(shell, "kernel", None) is not None:
        from IPython.display import display

        display(fig)


# ------------------------------------------------------------------------------------ loss curves
def find_loss_log(stage_log_dir: str | Path, split: str = "train", metric: str = "loss") -> Path | None:
    """The dvclive TSV ``logs/<stage>/plots/metrics/<split>/<metric>.tsv``; for ``train`` also a bare
    ``<metric>.tsv`` anywhere below (loggers that use no prefix). None when absent."""
    root = Path(stage_log_dir) / "plots" / "metrics"
    if (root / split / f"{metric}.tsv").is_file():
        return root / split / f"{metric}.tsv"
    if split != "train":
        return None
    found = sorted((p for p in root.rglob(f"{metric}.tsv") if "val" not in p.relative_to(root).parts),
                   key=lambda p: (len(p.parts), str(p)))
    return found[0] if found else None


def read_tsv(path: str | Path, y: str) -> tuple[list[float], list[float]]:
    """(steps, values) of a dvclive TSV (columns ``step``, ``<y>`` and optionally ``timestamp``)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if rows and (y not in rows[0] or "step" not in rows[0]):
        raise ValueError(f"{path}: expected columns 'step' and {y!r}, found {list(rows[0])}")
    return [float(r["step"]) for r in rows], [float(r[y]) for r in rows]


def stage_losses(stages: Sequence[str], log_dir: str | Path = "logs",
                 split: str = "train") -> dict[str, tuple[list[float], list[float]]]:
    """Loss curve of each stage that has a dvclive log, in ``stages`` order."""
    out = {}
    for s in stages:
        f = find_loss_log(Path(log_dir) / s, split)
        if f is not None:
            out[s] = read_tsv(f, "loss")
    return out


# what each stage objective's loss measures: curves of different kinds never share an axis
LOSS_KINDS = {"lm": "next-token loss on answer tokens", "speech_ctc": "CTC loss (audio encoder)"}


def loss_kind(objective: str) -> str:
    """The kind of loss a stage ``objective`` (`StageConfig.objective`) logs: next-token, classification or CTC."""
    if objective.endswith("classification"):
        return "classification loss (vision tower)"
    return LOSS_KINDS.get(objective, f"{objective} loss")


def plot_loss_curves(stages: Sequence[str], log_dir: str | Path, out: str | Path,
                     objectives: Mapping[str, str] | None = None) -> list[Path]:
    """One panel per kind of loss (``objectives``: stage -> `StageConfig.objective`; without it every stage is
    taken as next-token loss). In a panel its stages run back to back: each stage's steps are offset by the
    steps of the panel's stages before it. Training loss as lines, validation loss (when logged) as dots of the
    same colour."""
    curves = stage_losses(stages, log_dir)
    val = stage_losses(stages, log_dir, "val")
    if not curves:
        raise FileNotFoundError(f"{log_dir}: no dvclive loss logs (<stage>/plots/metrics/train/loss.tsv) for stages "
                                f"{list(stages)}; train first (`python -m omni_core.train --stage ...`)")
    panels: dict[str, list[str]] = {}
    for stage in curves:
        panels.setdefault(loss_kind((objectives or {}).get(stage, "lm")), []).append(stage)
    steps_of = {kind: sum(curves[s][0][-1] + 1 for s in group if curves[s][0]) for kind, group in panels.items()}
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 + 3.5 * len(panels), 4.8), squeeze=False,
                             gridspec_kw={"width_ratios": [max(v, max(steps_of.values()) / 4, 1) for v in steps_of.values()]},
                             layout="constrained")
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
    for ax, (kind, group) in zip(axes[0], panels.items()):
        offset = 0.0
        colors = {stage: plt.get_cmap("tab10")(i % 10) for i, stage in enumerate(group)}
        for stage in group:
            steps, loss = curves[stage]
            ax.plot([offset + s for s in steps], loss, color=colors[stage], lw=1.4, label=stage)
            if stage in val:
                ax.plot([offset + s for s in val[stage][0]], val[stage][1], "o", ms=4, color=colors[stage], mec="k",
                        mew=0.5)
            ax.axvline(offset, color="0.8", lw=0.8, zorder=0)
            offset += (steps[-1] + 1) if steps else 0
        ax.set_xlabel("optimizer step (stages back to back)")
        ax.set_ylabel("loss (log scale)")
        ax.set_yscale("log")
        ax.yaxis.set_minor_locator(matplotlib.ticker.LogLocator(subs=(2, 5)))
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
        ax.tick_params(axis="y", which="minor", labelsize=7)
        ax.set_title(kind, fontsize=10)
        ax.legend(fontsize=7, ncol=3 if len(group) > 3 else 1, frameon=False, loc="upper center",
                  bbox_to_anchor=(0.5, -0.16))
        ax.grid(alpha=0.3, which="both")
    fig.suptitle("Training loss across the recipe, one kind of loss per panel" + (" (dots: validation)" if val else ""),
                 fontsize=11)
    return save_figure(fig, out)


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


# ------------------------------------------------------------------------------------- ablations
def plot_downsample_ablation(variants: Mapping[int, Mapping[str, float]], out: str | Path,
                             reported: Mapping[int, float] | None = REPORTED_DOWNSAMPLE_WER) -> list[Path]:
    """WER against audio tokens per second (50 / n) for each Conv-GMLP rate n, like the paper's Figure 6.

    ``variants`` maps n -> {"wer": ..., "tokens_per_second": ..., optional "chance_wer"}. ``reported`` (the
    paper's 1.5B audio-LLM numbers, another model and test set) gets its own panel, never our axis;
    ``None`` leaves it out.
    """
    from .model.token_counts import audio_tokens_per_second

    if not variants:
        raise ValueError("plot_downsample_ablation: no variants; run omni_core.eval.ablation.downsample_variant first")
    panels = [("measured (this repo)", {n: variants[n]["wer"] for n in variants}, "#d62728")]
    if reported:
        panels.append(("reported (paper), 1.5B audio LLM", dict(reported), "0.4"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, (title, wer, color) in zip(axes[0], panels):
        ns = sorted(wer)
        x = [audio_tokens_per_second(n) for n in ns]
        ax.plot(x, [wer[n] for n in ns], "o-", color=color)
        for n, xi in zip(ns, x):
            ax.annotate(f"n={n}", (xi, wer[n]), textcoords="offset points", xytext=(4, 6), fontsize=8)
        if ax is axes[0, 0] and "chance_wer" in variants[ns[0]]:
            ax.axhline(variants[ns[0]]["chance_wer"], color="0.6", ls="--", lw=1, label="chance (fixed sentence)")
            ax.legend(fontsize=8, frameon=False)
        ax.set_xscale("log", base=2)
        ax.set_xticks(x, [f"{v:g}" for v in x])
        ax.minorticks_off()
        ax.set_ylim(0, 1.2 * max([*wer.values(), variants[ns[0]].get("chance_wer", 0) if ax is axes[0, 0] else 0]))
        ax.set_xlabel("audio tokens per second (50 / n)")
        ax.set_ylabel("WER (%) ↓")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    fig.suptitle("Conv-GMLP downsampling: WER vs audio tokens per second", fontsize=11)
    fig.tight_layout()
    return save_figure(fig, out)


def plot_staging_ablation(per_task: Mapping[str, Mapping[str, float]], out: str | Path) -> list[Path]:
    """Grouped bars per task: ``{"staged": {task: v}, "joint": {task: v}, "chance": {task: v}}`` (headline
    metric of each task on its 0-100 scale, WER tasks marked ↓; perplexity, on another scale, is left out)."""
    bars = [b for b in ("staged", "joint", "chance") if b in per_task]
    tasks = sorted({t for b in bars for t in per_task[b] if task_spec(t).metrics[0] in METRICS},
                   key=list(TASKS).index)
    if not tasks:
        raise ValueError("plot_staging_ablation: no task results")
    colors = {"staged": "#1f77b4", "joint": "#ff7f0e"}
    width = 0.8 / len(bars)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.75 * len(tasks) + 2), 3.8))
    for i, bar in enumerate(bars):
        style = {"color": "0.9", "edgecolor": "0.5", "hatch": "///", "lw": 0.5} if bar == "chance" else {"color": colors[bar]}
        ax.bar([j + (i - (len(bars) - 1) / 2) * width for j in range(len(tasks))],
               [per_task[bar].get(t, 0.0) for t in tasks], width, label=bar, **style)
    labels = []
    for t in tasks:
        m = METRICS[task_spec(t).metrics[0]]
        labels.append(f"{t}\n{m.label}{'' if m.higher_is_better else ' ↓'}")
    ax.set_xticks(range(len(tasks)), labels, fontsize=7, rotation=30, ha="right")
    ax.set_ylabel("headline metric")
    ax.legend(fontsize=8, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title("Same compute: staged recipe vs one joint mixture")
    return save_figure(fig, out)


def plot_seed_spread(per_seed: Mapping[int, Mapping[str, float]], chance: Mapping[str, float],
                     out: str | Path, margins: Mapping[int, Mapping[str, list[float]]] | None = None) -> list[Path]:
    """One row per task (0-100 metrics; perplexity, on another scale, is left out): a dot per seed, the
    seeds' range as a line, chance as a grey bar; with ``margins`` the label also counts the seeds clearly
    above chance. Input: :func:`omni_core.eval.ablation.collect_seeds`."""
    from .eval.ablation import seed_summary

    rows = [r for r in seed_summary(dict(per_seed), dict(chance), dict(margins or {})) if r["metric"] in METRICS]
    if not rows:
        raise ValueError("plot_seed_spread: no task results; run the seeds variants (make ablations) first")
    seeds = list(per_seed)
    colors = dict(zip(seeds, plt.get_cmap("tab10").colors))
    fig, ax = plt.subplots(figsize=(7.5, 0.4 * len(rows) + 1.4), layout="constrained")
    for y, r in enumerate(rows):
        if r["chance"] is not None:
            ax.barh(y, r["chance"], height=0.6, color="0.92", edgecolor="0.6", hatch="///", lw=0.5)
        ax.plot([r["min"], r["max"]], [y, y], color="0.3", lw=1)
        for seed in seeds:
            if r["task"] in per_seed[seed]:
                ax.plot(per_seed[seed][r["task"]], y, "o", ms=5, color=colors[seed], alpha=0.85)
    labels = [f"{r['task']} ({METRICS[r['metric']].label}{'' if r['higher_is_better'] else ' ↓'})"
              + (f"  {r['above_chance']}/{r['seeds']}" if "above_chance" in r else "")
              + (f" ({r['clearly_above_chance']} clearly)" if "clearly_above_chance" in r else "") for r in rows]
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("score (0-100; ↓ = lower is better); k/N = seeds above chance"
                  + ("; clearly = the margin's 95 % interval above 0" if margins else ""))
    handles = [matplotlib.lines.Line2D([], [], ls="", marker="o", color=colors[s], label=f"seed {s}") for s in seeds]
    handles.append(matplotlib.patches.Patch(facecolor="0.92", edgecolor="0.6", hatch="///", label="chance"))
    fig.legend(handles=handles, fontsize=8, frameon=False, loc="outside lower center", ncol=len(handles))
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(f"The same recipe, {len(seeds)} seeds: how much each task's score moves")
    return save_figure(fig, out)


# ---------------------------------------------------------------------------------- token budget
def plot_token_budget(budget: Mapping[str, Mapping], out: str | Path) -> list[Path]:
    """Three panels from :func:`omni_core.eval.ablation.token_budget`: image tokens vs AnyRes tiles, video
    tokens vs seconds (1 fps, frame cap), audio tokens vs seconds for each Conv-GMLP rate."""
    from .model.token_counts import audio_tokens_per_second

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    img, vid, aud = budget["image"], budget["video"], budget["audio"]
    axes[0].bar([str(t) for t in img["tiles"]], img["tokens"], color=_TABLE_COLORS["image"])
    axes[0].set_xlabel("AnyRes grid tiles (+1 global view when > 1)")
    axes[0].set_title(f"image: {img['tokens_per_tile']} tokens per tile", fontsize=10)
    lo, hi = vid["tokens_per_frame"]
    axes[1].fill_between(vid["seconds"], vid["tokens_min"], vid["tokens"], color=_TABLE_COLORS["video"], alpha=0.25,
                         label=f"{lo}-{hi} tokens/frame (frame shape)")
    axes[1].plot(vid["seconds"], vid["tokens"], color=_TABLE_COLORS["video"], label="widest frame")
    axes[1].plot(vid["seconds"], vid["tokens_min"], color=_TABLE_COLORS["video"], ls="--", label="square frame")
    axes[1].set_xlabel("video seconds")
    axes[1].set_title(f"video: {lo}-{hi} tokens/frame, {vid['fps']:g} fps, max {vid['max_frames']} frames", fontsize=10)
    axes[1].legend(fontsize=8, frameon=False)
    for n, toks in aud["tokens"].items():
        axes[2].plot(aud["seconds"], toks, label=f"n={n} ({audio_tokens_per_second(int(n)):g} tok/s)")
    axes[2].set_xlabel("audio seconds")
    axes[2].set_title("audio: Conv-GMLP rate n", fontsize=10)
    axes[2].legend(fontsize=8, frameon=False)
    for ax in axes:
        ax.set_ylabel("LLM tokens")
        ax.grid(alpha=0.3)
    fig.suptitle(f"Token budget per modality ({budget.get('scale', 'full')} scale)", fontsize=11)
    fig.tight_layout()
    return save_figure(fig, out)


# ------------------------------------------------------------------------------------ token geometry
_TOKEN_PALETTE = np.array([[0.62, 0.79, 0.88], [0.99, 0.75, 0.52], [0.70, 0.87, 0.54], [0.85, 0.73, 0.87]])


def _draw_token_regions(ax, tokens: np.ndarray, image=None) -> None:
    """Colour each patch of ``tokens`` ((rows, cols) token index per patch) by its token and draw the borders
    between tokens; with ``image`` (one tile's pixels), the colours are laid over it, patch for patch."""
    tokens = np.asarray(tokens)
    # neighbouring tokens get different colours: two alternating colours along rows, two along columns
    row_of = np.cumsum(np.r_[0, np.any(np.diff(tokens, axis=0) != 0, axis=1)])[:, None]
    col_of = np.cumsum(np.r_[0, np.any(np.diff(tokens, axis=1) != 0, axis=0)])[None, :]
    colours = _TOKEN_PALETTE[(row_of % 2) * 2 + col_of % 2]
    if image is None:
        ax.imshow(colours, interpolation="nearest")
    else:
        extent = (-0.5, tokens.shape[1] - 0.5, tokens.shape[0] - 0.5, -0.5)
        ax.imshow(np.asarray(image), extent=extent, interpolation="nearest")
        ax.imshow(colours, extent=extent, interpolation="nearest", alpha=0.35)
        for k in range(1, max(tokens.shape)):       # faint patch borders: a token is several patches
            ax.axvline(k - 0.5, color="0.5", lw=0.2)
            ax.axhline(k - 0.5, color="0.5", lw=0.2)
    rows, cols = np.nonzero(np.diff(tokens, axis=0))                  # borders between vertical neighbours
    segments = [[(c - 0.5, r + 0.5), (c + 0.5, r + 0.5)] for r, c in zip(rows, cols)]
    rows, cols = np.nonzero(np.diff(tokens, axis=1))                  # ... and between horizontal ones
    segments += [[(c + 0.5, r - 0.5), (c + 0.5, r + 0.5)] for r, c in zip(rows, cols)]
    ax.add_collection(matplotlib.collections.LineCollection(segments, colors="k", linewidths=0.6))


def plot_pool_geometry(maps: Mapping[str, np.ndarray], out: str | Path | None = None,
                       tile_side: int | None = None) -> list[Path]:
    """One panel per patch grid: each patch coloured by the token it feeds, token borders drawn, so a token that
    mixed distant patches would show as a broken region. ``maps``: title -> (rows, cols) token index per patch
    (`omni_core.model.vision.patch_token_map`; tiles side by side for a frame of several tiles, their borders
    drawn in red every ``tile_side`` patches)."""
    fig, axes = plt.subplots(1, len(maps), figsize=(4.2 * len(maps), 4.2), squeeze=False)
    for ax, (title, tokens) in zip(axes[0], maps.items()):
        tokens = np.asarray(tokens)
        _draw_token_regions(ax, tokens)
        for x in range(tile_side or tokens.shape[1], tokens.shape[1], tile_side or tokens.shape[1]):
            ax.axvline(x - 0.5, color="red", lw=2.5)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(f"{tokens.shape[1]} patch columns")
        ax.set_ylabel(f"{tokens.shape[0]} patch rows")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Which patches feed which LLM token (one coloured region = one token)", fontsize=11)
    fig.tight_layout()
    if out is None:
        _show_in_notebook(fig)
        plt.close(fig)
        return []
    return save_figure(fig, out)


# ------------------------------------------------------------------------------ offline dvc plots
def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "plot"


def render_dvc_plots(out_dir: str | Path, repo: str | Path = ".", targets: Iterable[str] = ()) -> list[Path]:
    """Run ``dvc plots show --json`` in ``repo`` and render every Vega-Lite spec to PNG + SVG offline.

    Image plots (already PNG files) are left alone. Needs ``vl-convert-python`` (requirements-optional).
    """
    try:
        import vl_convert as vlc
    except ImportError as e:           # optional dependency: say how to get it
        raise ImportError("render_dvc_plots needs vl-convert-python: pip install vl-convert-python") from e
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run([sys.executable, "-m", "dvc", "plots", "show", "--json", *targets], cwd=repo, env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"`dvc plots show --json` failed in {repo}: {proc.stderr.strip()[-800:]}")
    data = json.loads(proc.stdout).get("data", {})
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, plots in data.items():
        for i, plot in enumerate(plots):
            if plot.get("type") != "vega":
                continue
            stem = _slug(name) + (f"_{i}" if i else "")
            png, svg = out_dir / f"{stem}.png", out_dir / f"{stem}.svg"
            png.write_bytes(vlc.vegalite_to_png(plot["content"], scale=2))
            svg.write_text(vlc.vegalite_to_svg(plot["content"]))
            written += [png, svg]
    return written


# ----------------------------------------------------------------------------- notebook helpers
def plot_stage_loss(cfg, stage: str):
    """One stage's training loss (line) and validation loss (dots) from its dvclive log; returns the figure."""
    log_dir = Path(cfg.train.log_dir) / stage
    train, val = stage_losses([stage], cfg.train.log_dir), stage_losses([stage], cfg.train.log_dir, "val")
    if stage not in train:
        raise FileNotFoundError(f"{log_dir}: no dvclive loss log; train the stage first "
                                f"(python -m omni_core.train --stage {stage})")
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.plot(*train[stage], lw=1.2, label="train")
    if stage in val:
        ax.plot(*val[stage], "o-", ms=5, label="validation (held-out, same mixture)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (answer tokens)")
    ax.set_title(f"stage {stage}")
    ax.legend(frameon=False)
    ax.grid(alpha=0.3)
    return fig


def show_samples(samples: Sequence[Mapping], root: str | Path, per_task: int = 1):
    """A grid with the first ``per_task`` sample(s) of every task: the media as decoded for the model
    (image, first video frame, audio waveform) above the question and the answer; returns the figure."""
    import textwrap

    from .data.manifest import answer_text, media_parts
    from .processing import load_audio, load_image, load_video_frames

    chosen: dict[str, list[Mapping]] = {}
    for s in samples:
        if len(chosen.setdefault(s["task"], [])) < per_task:
            chosen[s["task"]].append(s)
    picks = [s for group in chosen.values() for s in group]
    cols = 4
    rows = -(-len(picks) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.1 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    root = Path(root)
    for ax, s in zip(axes.flat, picks):
        parts = media_parts(s)
        question = " ".join(p["text"] for m in s["messages"] if m["role"] == "user"
                            for p in m["content"] if p["type"] == "text")
        answer = answer_text(s)
        kinds = [p["type"] for p in parts]
        for part in parts:
            if part["type"] == "image":
                ax.imshow(load_image(part, root, 512))
                break
            if part["type"] == "video":
                ax.imshow(np.asarray(load_video_frames(part, root, 1.0, 1)[0]))
                break
            if part["type"] == "audio":
                wave = load_audio(part, root)
                ax.axis("on")
                ax.plot(np.arange(len(wave)) / 16000, wave, lw=0.4)
                ax.set_yticks([])
                ax.set_xlabel("seconds", fontsize=7)
                break
        wrap = lambda t, n=40: "\n".join(textwrap.wrap(t, n)[:3])
        ax.set_title(f"{s['task']} [{'+'.join(kinds) or 'text'}]\nQ: {wrap(question)}\nA: {wrap(answer)}",
                     fontsize=7, loc="left")
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------ real time (06)
def plot_speech_boundaries(wave: np.ndarray, probs: np.ndarray, events: Sequence, labels: np.ndarray | None = None,
                           hop_seconds: float = 0.01, sampling_rate: int = 16000):
    """A stream's waveform, the speech boundary head's per-frame P(speech), the true utterances (``labels``,
    one per frame) and the detector's events: dashed where speech starts (green) or ends (red), dotted
    when the detector decided it. Returns the figure."""
    t_wave = np.arange(len(wave)) / sampling_rate
    t_prob = np.arange(len(probs)) * hop_seconds
    fig, ax = plt.subplots(figsize=(10, 3))
    ax.plot(t_wave, wave / (np.abs(wave).max() + 1e-9), color="0.7", lw=0.5, label="audio")
    ax.plot(t_prob, probs, label="P(speech)")
    if labels is not None:
        ax.fill_between(t_prob, 0, labels[: len(probs)], alpha=0.15, label="true utterance")
    for e in events:
        ax.axvline(e.time, color="g" if e.kind == "speech_start" else "r", ls="--")
        ax.axvline(e.decided_at, color="g" if e.kind == "speech_start" else "r", ls=":", alpha=0.5)
    line = matplotlib.lines.Line2D
    handles = [*ax.get_legend_handles_labels()[0],
               line([], [], color="g", ls="--", label="speech starts"), line([], [], color="r", ls="--", label="speech ends"),
               line([], [], color="0.3", ls=":", label="... decided (start + min speech, end + min silence)")]
    ax.set_xlabel("seconds")
    ax.set_ylabel("P(speech); audio scaled to ±1")
    ax.set_title("speech boundaries (dashed: where, dotted: when decided)")
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    return fig


def plot_turn_latency(latency_s: Mapping[str, Sequence[float]]):
    """End of speech -> first answer token (ms) per turn, one line per prefill mode (``streaming`` /
    ``reencode`` of :func:`omni_core.stream_latency.compare_prefill`). Returns the figure."""
    names = {"reencode": "re-encode"}
    fig, ax = plt.subplots(figsize=(6, 3))
    for mode, seconds in latency_s.items():
        turns = range(1, len(seconds) + 1)
        ax.plot(turns, 1000 * np.asarray(seconds), marker="o", label=names.get(mode, mode))
        ax.set_xticks(turns)
    ax.set_xlabel("turn")
    ax.set_ylabel("end of speech -> first token (ms)")
    ax.legend()
    ax.set_ylim(bottom=0)
    return fig


def _finish(fig, out: str | Path | None):
    """``out`` given: save the figure there as PNG + SVG and return the paths; else return the figure to show."""
    return fig if out is None else save_figure(fig, out)


def _wrap(text: str, width: int, lines: int = 2) -> str:
    import textwrap

    parts = textwrap.wrap(" ".join(str(text).split()), width) or [""]
    return "\n".join(parts[:lines]) + ("…" if len(parts) > lines else "")


def _frames_strip(frames: Sequence) -> np.ndarray:
    """Video frames side by side, a white column between them."""
    arrays = [np.asarray(f, dtype=np.uint8) for f in frames]
    gap = np.full((arrays[0].shape[0], max(1, arrays[0].shape[1] // 16), 3), 255, np.uint8)
    return np.concatenate([a for f in arrays for a in (f, gap)][:-1], axis=1)


def _draw_wave(ax, wave: np.ndarray, sampling_rate: int = 16000, color: str = "#d62728") -> None:
    ax.plot(np.arange(len(wave)) / sampling_rate, wave, lw=0.4, color=color)
    ax.set_yticks([])
    ax.set_xlabel("seconds", fontsize=7)
    ax.tick_params(labelsize=7)


# ---------------------------------------------------------------------------- token layout (notebook 00)
TOKEN_COLORS = {"text": "#f7f7f7", "template": "#cccccc", "image": "#9ecae1", "video": "#a1d99b", "audio": "#fcae91"}


@dataclass(frozen=True)
class TokenRun:
    """A stretch of a token sequence drawn as one block. ``kind``: text, template (the chat template's own
    tokens) or the modality of a media token; ``count`` tokens; ``supervised`` when the loss covers them."""
    kind: str
    label: str
    count: int
    supervised: bool = False


def token_runs(input_ids, tokenizer, labels=None) -> list[TokenRun]:
    """The sequence as :class:`TokenRun` s: each media start/end token and chat-template token alone, each run of
    one modality's pad tokens as one block with its count (``<|image_pad|> ×80``), and the text between them
    decoded, split where supervision (``labels``) starts or stops."""
    from .model.configuration import MEDIA, SPECIAL_TOKENS
    from .model.labels import IGNORE_INDEX

    ids = [int(i) for i in np.asarray(input_ids).reshape(-1)]
    supervised = ([False] * len(ids) if labels is None
                  else [int(x) != IGNORE_INDEX for x in np.asarray(labels).reshape(-1)])
    media = {tokenizer.convert_tokens_to_ids(tok): (m, part) for m in MEDIA for part, tok in SPECIAL_TOKENS[m].items()}
    added = set(getattr(tokenizer, "added_tokens_decoder", {})) | set(media)
    runs, i = [], 0
    while i < len(ids):
        tid, j = ids[i], i + 1
        if tid in media and media[tid][1] == "pad":
            while j < len(ids) and ids[j] == tid:
                j += 1
            runs.append(TokenRun(media[tid][0], f"{tokenizer.convert_ids_to_tokens(tid)} ×{j - i}", j - i,
                                 any(supervised[i:j])))
        elif tid in added:
            runs.append(TokenRun(media[tid][0] if tid in media else "template", tokenizer.convert_ids_to_tokens(tid),
                                 1, supervised[i]))
        else:
            while j < len(ids) and ids[j] not in added and supervised[j] == supervised[i]:
                j += 1
            runs.append(TokenRun("text", tokenizer.decode(ids[i:j]), j - i, supervised[i]))
        i = j
    return runs


def format_runs(runs: Sequence[TokenRun]) -> str:
    """The sequence as text with every pad run collapsed to ``<|x_pad|> ×N``: what the LLM reads, in one screen."""
    return "".join(f"[{r.label}]" if r.label.endswith(f"×{r.count}") and r.kind != "text" else r.label for r in runs)


def _strip_label(run: TokenRun, max_chars: int = 34) -> str:
    text = run.label.replace("\n", "\\n")
    if run.kind == "text":
        text = f"“{text}”" if len(text) <= max_chars else f"“{text[:max_chars - 1]}…”"
    return text


def _layout_strip(runs: Sequence[TokenRun], width: float) -> list[tuple[TokenRun, str, float, int, float]]:
    """(run, label, x, line, block width) of each block, wrapped into lines of ``width`` character cells."""
    placed, x, line = [], 0.0, 0
    for run in runs:
        label = _strip_label(run)
        w = len(label) + 1.5
        if x > 0 and x + w > width:
            x, line = 0.0, line + 1
        placed.append((run, label, x, line, w))
        x += w
    return placed


def _draw_token_strip(ax, runs: Sequence[TokenRun], width: float) -> None:
    placed = _layout_strip(runs, width)
    for run, label, x, line, w in placed:
        ax.add_patch(matplotlib.patches.Rectangle((x, -line - 0.8), w - 0.3, 0.66, facecolor=TOKEN_COLORS[run.kind],
                                                  edgecolor="0.35", lw=0.5))
        bold = run.kind != "text" and run.count > 1          # the collapsed pad runs are what to look at
        ax.text(x + (w - 0.3) / 2, -line - 0.47, label, ha="center", va="center", fontsize=6.5, family="monospace",
                fontweight="bold" if bold else "normal")
        if run.supervised:
            ax.plot([x, x + w - 0.3], [-line - 0.9, -line - 0.9], color="k", lw=2)
    lines = placed[-1][3] + 1 if placed else 1
    ax.set_xlim(0, width)
    ax.set_ylim(-lines - 0.1, 0)
    ax.axis("off")


def token_layout_rows(samples: Sequence[Mapping], processor, root: str | Path) -> list[dict]:
    """For each manifest sample, what :func:`plot_token_layout` draws: the processor's sequence as runs, and the
    media as the model gets them (the image, the sampled video frames, the audio waveform)."""
    from .data.manifest import media_parts
    from .processing import load_audio, load_image, load_video_frames

    root, v = Path(root), processor.model_cfg.vision
    rows = []
    for s in samples:
        batch = processor(s["messages"], base_dir=root)
        runs = token_runs(batch["input_ids"], processor.tokenizer, batch["labels"])
        pads = [r for r in runs if r.label.endswith(f"×{r.count}") and r.kind != "text"]
        counts: dict[str, int] = {}
        for r in pads:
            counts[f"{r.kind} placeholders"] = counts.get(f"{r.kind} placeholders", 0) + r.count
        counts["media start/end"] = sum(r.count for r in runs if r.kind in ("image", "video", "audio")) \
            - sum(r.count for r in pads)
        counts |= {kind: sum(r.count for r in runs if r.kind == kind) for kind in ("text", "template")}
        row = {"title": f"{s['task']}: {len(batch['input_ids'])} tokens = "
                        + " + ".join(f"{n} {k}" for k, n in counts.items() if n), "runs": runs}
        for part in media_parts(s):
            if part["type"] == "image":
                row.setdefault("image", np.asarray(load_image(part, root, v.image_size * v.max_tiles)))
            elif part["type"] == "video":
                frames = load_video_frames(part, root, v.video_fps, v.video_max_frames)
                row.setdefault("frames", [np.asarray(f) for f in frames])
            if part["type"] == "audio" or (part["type"] == "video" and part.get("audio")):
                row.setdefault("audio", load_audio(part, root))
        rows.append(row)
    return rows


def plot_token_layout(rows: Sequence[Mapping], out: str | Path | None = None, width: float = 120):
    """One row per sample: its media (``image``, ``frames`` or ``audio``, as :func:`token_layout_rows` gives
    them) beside the spliced token sequence as a colour-coded strip (text, chat template, image, video, audio;
    each run of pad tokens one block with its count; the supervised answer underlined). Saved to ``out``
    (PNG + SVG, returns the paths) or returned as a figure."""
    heights = [max(_layout_strip(r["runs"], width)[-1][3] + 1, 2) for r in rows]
    fig = plt.figure(figsize=(13, 0.42 * sum(heights) + 0.6 * len(rows) + 0.8), layout="constrained")
    grid = fig.add_gridspec(len(rows), 2, width_ratios=[1, 5], height_ratios=heights)
    for i, row in enumerate(rows):
        media_ax, strip_ax = fig.add_subplot(grid[i, 0]), fig.add_subplot(grid[i, 1])
        if "image" in row:
            media_ax.imshow(np.asarray(row["image"]))
            media_ax.set_title(f"image {np.asarray(row['image']).shape[1]}x{np.asarray(row['image']).shape[0]} px",
                               fontsize=8)
            media_ax.axis("off")
        elif "frames" in row:
            media_ax.imshow(_frames_strip(row["frames"]))
            media_ax.set_title(f"{len(row['frames'])} frames as sampled", fontsize=8)
            media_ax.axis("off")
        elif "audio" in row:
            _draw_wave(media_ax, np.asarray(row["audio"]))
            media_ax.set_title(f"audio {len(row['audio']) / 16000:.1f} s", fontsize=8)
        else:
            media_ax.axis("off")
        _draw_token_strip(strip_ax, row["runs"], width)
        strip_ax.set_title(row["title"], fontsize=9, loc="left")
    handles = [matplotlib.patches.Patch(facecolor=c, edgecolor="0.35", label=k) for k, c in TOKEN_COLORS.items()]
    handles.append(matplotlib.lines.Line2D([], [], color="k", lw=2, label="supervised (the loss covers it)"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle("What the LLM reads: text and media placeholders, spliced in one sequence", fontsize=11)
    return _finish(fig, out)


def plot_anyres_tiling(image, vision, out: str | Path | None = None):
    """AnyRes on one image under ``vision`` (`omni_core.config.VisionConfig`): the image, its global view and the
    grid tiles the encoder sees (`omni_core.model.vision.anyres_tiles`), each tile overlaid with the patches that
    pool into each LLM token (`patch_token_map`: one coloured region = one token). The title counts the tiles
    and tokens with the processor's own functions."""
    from PIL import Image

    from .model.token_counts import image_tokens, tile_grid, tokens_per_tile
    from .model.vision import anyres_tiles, patch_token_map

    v = vision
    image = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
    tiles = anyres_tiles(image, v.image_size, v.max_tiles)
    rows, cols = tile_grid(image.width, image.height, v.image_size, v.max_tiles) if len(tiles) > 1 else (0, 0)
    side = v.image_size // v.patch_size
    tokens = patch_token_map(side, v.pool, v.pool_type)
    per_tile = tokens_per_tile(v.image_size, v.patch_size, v.pool, v.pool_type)
    total = image_tokens(image.width, image.height, v)
    if total != len(tiles) * per_tile:
        raise AssertionError(f"token_counts says {total} tokens, the tiles give {len(tiles)} x {per_tile}")
    fig = plt.figure(figsize=(2.4 * (2 + cols), 2.6 * max(rows, 1) + 0.8), layout="constrained")
    grid = fig.add_gridspec(max(rows, 1), 2 + cols)
    ax = fig.add_subplot(grid[:, 0])
    ax.imshow(np.asarray(image))
    if rows:      # where the tiles cut the image: the grid canvas holds it resized to fit, centred
        scale = min(cols * v.image_size / image.width, rows * v.image_size / image.height)
        dx, dy = (cols * v.image_size - image.width * scale) / 2, (rows * v.image_size - image.height * scale) / 2
        for c in range(1, cols):
            ax.axvline((c * v.image_size - dx) / scale - 0.5, color="red", lw=1.5)
        for r in range(1, rows):
            ax.axhline((r * v.image_size - dy) / scale - 0.5, color="red", lw=1.5)
    ax.set_title(f"image {image.width}x{image.height} px" + (" (red: tile borders)" if rows else ""), fontsize=9)
    ax.axis("off")
    pooled = f"{side}x{side} patches -> {per_tile} tokens"
    views = [("global view (the whole image, one tile)", tiles[0], grid[:, 1])]
    views += [(f"grid tile row {r + 1}, col {c + 1}", tiles[1 + r * cols + c], grid[r, 2 + c])
              for r in range(rows) for c in range(cols)]
    for title, tile, cell in views:
        ax = fig.add_subplot(cell)
        _draw_token_regions(ax, tokens, tile)
        ax.set_title(f"{title}\n{pooled}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    if rows:
        count = (f"{rows}x{cols} grid = {rows * cols} tiles + 1 global view = {len(tiles)} tiles x {per_tile} tokens "
                 f"= {total} image tokens")
    else:
        count = f"fits one tile: the global view alone, {total} image tokens"
    fig.suptitle(f"AnyRes + {v.pool}x{v.pool} pooling: {count}", fontsize=10)
    return _finish(fig, out)


# --------------------------------------------------------------------------------- stage grid (02, 03, 05)
def paper_lr_stages(path: str | Path | None = None) -> set[str]:
    """Stages whose learning rates the paper gives: in configs/full.yaml, the ones whose ``lr:`` line has a
    comment that starts with "paper" (the file marks every number "paper" or "ours")."""
    from .config import REPO_ROOT

    found, stage, in_stages = set(), None, False
    for line in Path(path or REPO_ROOT / "configs" / "full.yaml").read_text().splitlines():
        if re.match(r"^\S", line):
            in_stages = line.startswith("stages:")
        elif in_stages and (m := re.match(r"^  (\w+):", line)):
            stage = m.group(1)
        elif in_stages and stage and re.match(r"^\s+lr:.*#\s*paper", line):
            found.add(stage)
    return found


def _lr_text(lr: float) -> str:
    mantissa, exponent = f"{lr:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def plot_stage_grid(cfg, current: str | None = None, paper="full", out: str | Path | None = None):
    """Stages x modules: which module each stage of ``cfg`` trains (its lr) and which it leaves frozen; beside
    it, the paper's setting (``paper``: a profile name or a Config, None to leave it out): the paper's lr where
    the paper gives one (:func:`paper_lr_stages`), "trains" where it trains the module with an lr of ours,
    "frozen", or "pretrained" for the stand-in stages the paper's pretrained weights replace. A dashed border
    marks where the profile departs from the paper; ``current`` highlights one stage's row."""
    from .config import MODULES, load_config
    from .train.freezing import stage_lrs

    if isinstance(paper, str):
        paper = load_config(profile=paper)
    given = paper_lr_stages() if paper is not None else set()
    if current is not None:
        cfg.stage(current)                               # an unknown name fails here, with suggestions
    stages = [s for s, st in cfg.stages.items() if st.enabled or s == current]
    fig, ax = plt.subplots(figsize=(1.55 * len(MODULES) + 2.6, 0.5 * len(stages) + 1.6), layout="constrained")
    for y, name in enumerate(stages):
        lrs = stage_lrs(cfg.stage(name))
        ours = paper.stages.get(name) if paper is not None else None      # the paper's stage of that name
        paper_lrs = stage_lrs(ours) if ours is not None and ours.enabled else {}
        for x, module in enumerate(MODULES):
            trains = module in lrs
            text = _lr_text(lrs[module]) if trains else "frozen"
            differs = False
            if paper is not None and ours is not None and ours.enabled:
                note = (_lr_text(paper_lrs[module]) if name in given else "trains") if module in paper_lrs else "frozen"
                differs = (note != "frozen") != trains
                text += f"\npaper: {note}"
            elif paper is not None and trains:       # a stand-in stage: the paper loads this module pretrained
                text += "\npaper: pretrained"
            ax.add_patch(matplotlib.patches.Rectangle((x - 0.47, y - 0.44), 0.94, 0.88,
                                                      facecolor="#fdae6b" if trains else "#f0f0f0",
                                                      edgecolor="#d62728" if differs else "0.6",
                                                      ls="--" if differs else "-", lw=1.4 if differs else 0.6))
            ax.text(x, y, text, ha="center", va="center", fontsize=7, color="k" if trains else "0.45")
    if current is not None:
        y = stages.index(current)
        ax.add_patch(matplotlib.patches.Rectangle((-0.5, y - 0.5), len(MODULES), 1, fill=False, edgecolor="k", lw=2.5))
    ax.set_xlim(-0.5, len(MODULES) - 0.5)
    ax.set_ylim(len(stages) - 0.5, -0.5)
    ax.set_xticks(range(len(MODULES)), [m.replace("_", "\n") for m in MODULES], fontsize=8)
    ax.xaxis.tick_top()
    ax.set_yticks(range(len(stages)), [f"▶ {s}" if s == current else s for s in stages], fontsize=8)
    for label in ax.get_yticklabels():
        label.set_fontweight("bold" if label.get_text().startswith("▶") else "normal")
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    handles = [matplotlib.patches.Patch(facecolor="#fdae6b", edgecolor="0.6", label="trains (its lr)"),
               matplotlib.patches.Patch(facecolor="#f0f0f0", edgecolor="0.6", label="frozen")]
    if paper is not None:
        handles.append(matplotlib.patches.Patch(facecolor="white", edgecolor="#d62728", ls="--",
                                                label="trains/frozen unlike the paper"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8, frameon=False)
    title = f"What each stage trains: {cfg.profile} profile"
    if paper is not None:
        title += " (second line: the paper's setting; 'trains' = the paper trains it and gives no lr)"
    ax.set_title(title, fontsize=9)
    return _finish(fig, out)


# ------------------------------------------------------------------------- predictions and confusion (04)
# tasks whose answers are classes (a closed vocabulary): each gets figures/confusion_<task>.png
CONFUSION_TASKS = ("image_vqa", "video_qa", "highres_read", "spoken_qa", "omni_image_speech", "video_narration_qa")


def prediction_records(predictions: str | Path | Iterable[Mapping], manifest: str | Path) -> list[dict]:
    """The rows of ``metrics/predictions.jsonl`` (task, id, prediction, reference; `omni_core.eval.runner`), each
    with its test sample's ``question`` (the user's text) and ``sample`` (the manifest record, for its media)."""
    from .data.manifest import read_manifest

    if isinstance(predictions, (str, Path)):
        with open(predictions) as f:
            predictions = [json.loads(line) for line in f if line.strip()]
    samples = {s["id"]: s for s in read_manifest(manifest)}
    records = []
    for p in predictions:
        s = samples.get(p["id"])
        if s is None:
            raise KeyError(f"prediction {p['id']!r} has no sample in {manifest}; evaluate and data prep disagree")
        question = " ".join(part["text"] for m in s["messages"][:-1] if m["role"] == "user"
                            for part in m["content"] if part["type"] == "text")
        records.append({**p, "question": question, "sample": s})
    return records


def question_kind(question: str) -> str:
    """What a question asks, from its first two words ("What shape ...", "How many ..."): the tasks' questions
    are templates, so this splits a task's answers into the classes that compete with each other."""
    return " ".join(question.lower().split()[:2]) or "(no question)"


def _answer_order() -> dict[str, int]:
    """The tasks' vocabularies in a reading order (numbers counted up, not alphabetical)."""
    from .data.sources.images import COLOURS, NUMBER_WORDS, QUADRANTS, SHAPES
    from .data.sources.video import DIRECTIONS

    return {w: i for i, w in enumerate([*NUMBER_WORDS, *COLOURS, *SHAPES, *QUADRANTS, *DIRECTIONS])}


def confusion_matrix(predictions: Sequence[str], references: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """(classes, counts): ``counts[i, j]`` = samples whose reference is class i and whose prediction is class j,
    after the metric's normalisation; the last column, "other", counts predictions outside the references."""
    from .eval.metrics import normalize_answer

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
    from .eval.metrics import answers_match

    return answers_match(record["prediction"], record["reference"])


def plot_prediction_grid(records: Sequence[Mapping], root: str | Path, vision=None, per_task: int = 4,
                         out: str | Path | None = None):
    """A few test samples of one task (``records`` from :func:`prediction_records`), right and wrong ones mixed:
    the media as the model gets them (image, sampled frames, or the audio waveform), the question, the
    prediction, the reference and ✓ / ✗ (exact match after normalisation). ``vision``: the
    `omni_core.config.VisionConfig` that sampled the frames (default: 1 fps, at most 8)."""
    from .data.manifest import media_parts
    from .processing import load_audio, load_image, load_video_frames

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
        if visual is not None:
            picture = np.asarray(load_image(visual, root, side)) if visual["type"] == "image" else \
                _frames_strip(load_video_frames(visual, root, fps, max_frames))
            shown.append((picture, picture.shape[0] / picture.shape[1]))
        else:
            shown.append((load_audio(parts[0], root), 0.6) if parts else (None, 0.2))
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


# --------------------------------------------------------------------------------- stream timeline (06)
class StreamRecorder:
    """Records what an `omni_core.stream.OmniSession` does, for :func:`plot_stream_timeline`: the events it
    emits (speech start and end, barge-in, answer start and end), each frame it prefills and the end-of-turn
    prefill (audio + template tokens; wall-clock duration and tokens), the first answer token and the answer
    text as it streams. It chains the session's own ``on_event`` / ``on_text`` callbacks.

    Times are wall-clock seconds, aligned so the first record sits at its stream time (seconds of audio pushed):
    in a real-time replay the two clocks agree, and the answer's timing is what it really took."""

    def __init__(self, session):
        self.session, self.records = session, []
        self._offset: float | None = None
        self._forward_event, self._forward_text = session.on_event, session.on_text
        self._add_frame, self._end_turn = session.add_frame, session.end_turn
        session.on_event, session.on_text = self._on_event, self._on_text
        session.add_frame, session.end_turn = self._timed_frame, self._timed_end_turn

    def _time(self, wall: float) -> float:
        if self._offset is None:
            self._offset = wall - self.session.clock
        return wall - self._offset

    def _add(self, kind: str, start: float, end: float | None = None, **info) -> None:
        t = self._time(start)
        self.records.append({"kind": kind, "t": t, "duration": 0.0 if end is None else end - start, **info})

    def _on_event(self, event) -> None:
        now = time.perf_counter()
        if event.kind == "answer_end" and self.session.turns and self.session.turns[-1].first_token is not None:
            self._add("first_token", self.session.turns[-1].first_token)
        self._add(event.kind, now, text=event.text)
        if self._forward_event is not None:
            self._forward_event(event)

    def _on_text(self, text: str) -> None:
        self._add("text", time.perf_counter(), text=text)
        if self._forward_text is not None:
            self._forward_text(text)

    def _timed_frame(self, frame) -> None:
        before, start = self.session.n_cached, time.perf_counter()
        self._add_frame(frame)          # tokens prefilled: the frame's, with the turn's header when it opens the turn
        self._add("frame", start, time.perf_counter(), tokens=self.session.n_cached - before)

    def _timed_end_turn(self, *args, **kwargs) -> int:
        start = time.perf_counter()
        n = self._end_turn(*args, **kwargs)
        stats = self.session.turns[-1]
        self._add("prefill", start, time.perf_counter(), tokens=n, audio_seconds=stats.audio_seconds)
        return n


def _silence_before(probs, threshold: float | None, t: float, hop_seconds: float) -> float | None:
    """Where the last speech frame (P(speech) >= ``threshold``) before time ``t`` ends; None without probs."""
    if probs is None or threshold is None:
        return None
    speech = np.nonzero(np.asarray(probs[:int(round(t / hop_seconds))]) >= threshold)[0]
    return (speech[-1] + 1) * hop_seconds if len(speech) else None


_LANES = ("user speech", "frames prefilled", "end-of-turn prefill", "answer")


def plot_stream_timeline(records: Sequence[Mapping], wave: np.ndarray | None = None, probs: Sequence[float] | None = None,
                         hop_seconds: float = 0.01, threshold: float | None = None, sampling_rate: int = 16000,
                         max_labels: int = 24, out: str | Path | None = None):
    """One exchange on a time axis, a lane each for: the user's speech (``wave``, the speech head's ``probs``
    and the detected speech between its start and the end-of-speech decision), the frames prefilled while the
    user speaks, the end-of-turn prefill (the audio and template tokens), and the answer (first token, text as
    it streams, at most ``max_labels`` pieces labelled); barge-ins cut across every lane. ``records``:
    :attr:`StreamRecorder.records`."""
    fig, ax = plt.subplots(figsize=(12, 4.2), layout="constrained")
    lane = {name: len(_LANES) - 1 - i for i, name in enumerate(_LANES)}
    y0 = lane["user speech"]
    if wave is not None and len(wave):
        ax.plot(np.arange(len(wave)) / sampling_rate, y0 + 0.4 * wave / (np.abs(wave).max() + 1e-9), color="0.6",
                lw=0.4, label="audio")
    if probs is not None and len(probs):
        ax.plot(np.arange(len(probs)) * hop_seconds, y0 - 0.45 + 0.9 * np.asarray(probs), color="#1f77b4", lw=1,
                label="P(speech)")
        if threshold is not None:
            ax.axhline(y0 - 0.45 + 0.9 * threshold, color="#1f77b4", ls=":", lw=0.8)
    start = answer_from = None
    shown, every = -1, max(1, math.ceil(sum(r["kind"] == "text" for r in records) / max_labels))
    for r in records:
        k, t = r["kind"], r["t"]
        if k == "speech_start":
            start = t
            ax.plot(t, y0 + 0.45, "v", color="g", ms=7)
        elif k == "speech_end":
            ax.axvspan(start if start is not None else t, t, ymin=0, ymax=1, color="g", alpha=0.06)
            ax.plot([t, t], [y0 - 0.5, y0 + 0.5], color="r", lw=2)
            ax.annotate("end of speech decided", (t, y0 + 0.5), xytext=(3, 2), textcoords="offset points", fontsize=7,
                        color="r")
            silent = _silence_before(probs, threshold, t, hop_seconds)
            if silent is not None:      # the hangover: how long the head waited to be sure the user had finished
                ax.annotate("", (silent, y0 - 0.3), (t, y0 - 0.3), arrowprops={"arrowstyle": "<->", "color": "r"})
                ax.text((silent + t) / 2, y0 - 0.27, f"{t - silent:.2f} s of silence", ha="center", va="bottom",
                        fontsize=7, color="r")
            start = None
        elif k == "barge_in":
            ax.axvline(t, color="m", ls="--", lw=1.5)
            ax.annotate("barge-in", (t, lane["answer"] + 0.45), xytext=(3, 0), textcoords="offset points", fontsize=8,
                        color="m")
        elif k in ("frame", "prefill"):
            y = lane["frames prefilled" if k == "frame" else "end-of-turn prefill"]
            width = max(r["duration"], 0.01)
            ax.add_patch(matplotlib.patches.Rectangle((t, y - 0.3), width, 0.6, facecolor=_TABLE_COLORS[
                "video" if k == "frame" else "audio"], alpha=0.8))
            audio = f" ({r['audio_seconds']:.1f} s audio)" if r.get("audio_seconds") else ""
            note = f"{r['tokens']} tok" if k == "frame" else f"{r['tokens']} tokens{audio} in {1000 * r['duration']:.0f} ms"
            ax.annotate(note, (t + width, y + 0.3), xytext=(2, 0), textcoords="offset points", fontsize=7, va="top")
        elif k == "first_token":
            ax.plot(t, lane["answer"], "D", color="k", ms=5)
        elif k == "text":
            shown += 1
            if shown % every == 0:      # a long answer: label every few pieces, tick them all
                ax.annotate(r["text"].strip() or "␣", (t, lane["answer"]), xytext=(0, 8 if shown % (2 * every) else 17),
                            textcoords="offset points", fontsize=7, ha="left")
            ax.plot(t, lane["answer"], "|", color="k", ms=8)
        elif k == "answer_start":
            answer_from = t
        elif k == "answer_end" and answer_from is not None:
            ax.add_patch(matplotlib.patches.Rectangle((answer_from, lane["answer"] - 0.3), max(t - answer_from, 0.01),
                                                      0.6, facecolor="0.85", zorder=0))
            answer_from = None
    ends = [r for r in records if r["kind"] == "speech_end"]
    firsts = [r for r in records if r["kind"] == "first_token"]
    if ends and firsts and firsts[0]["t"] >= ends[0]["t"]:
        latency = firsts[0]["t"] - ends[0]["t"]
        ax.annotate(f"first token {1000 * latency:.0f} ms after the decision", (firsts[0]["t"], lane["answer"]),
                    xytext=(6, -16), textcoords="offset points", fontsize=8)
    ax.set_yticks([lane[n] for n in _LANES], list(_LANES), fontsize=8)
    ax.set_ylim(-0.7, len(_LANES) - 0.3)
    times = [r["t"] + r.get("duration", 0) for r in records]
    right = max(times + [len(wave) / sampling_rate if wave is not None else 0.0] + [0.5])
    ax.set_xlim(0, 1.2 * right)          # room for the notes right of the last blocks
    ax.set_xlabel("seconds since the stream started")
    ax.grid(axis="x", alpha=0.3)
    handles = [*ax.get_legend_handles_labels()[0],
               matplotlib.lines.Line2D([], [], marker="v", color="g", ls="", label="speech start"),
               matplotlib.lines.Line2D([], [], marker="D", color="k", ls="", label="first answer token")]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8, frameon=False)
    ax.set_title("One exchange, as the session ran it", fontsize=10)
    return _finish(fig, out)
