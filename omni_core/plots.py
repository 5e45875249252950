"""Figures for the README and notebook 05 (matplotlib, each saved as PNG and SVG), and offline `dvc plots`.

- :func:`plot_loss_curves`: training loss of every stage on one step axis (dvclive logs).
- :func:`plot_metric_vs_chance`: each task's headline metric beside its chance level.
- :func:`plot_downsample_ablation`: Conv-GMLP rate n -> WER against audio tokens per second.
- :func:`plot_staging_ablation`: one joint mixture versus the staged recipe, per task.
- :func:`plot_seed_spread`: each task's score in every seed of the same recipe, beside chance.
- :func:`plot_token_budget`: LLM tokens per modality at full scale.
- :func:`render_dvc_plots`: `dvc plots show --json` rendered to PNG/SVG with vl-convert (the HTML
  `dvc plots show` writes loads Vega from a CDN and is blank offline).
"""
from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
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


def plot_loss_curves(stages: Sequence[str], log_dir: str | Path, out: str | Path) -> list[Path]:
    """All stages on one axis: each stage's steps are offset by the steps of the stages before it.
    Training loss as lines, validation loss (when logged) as dots of the same colour."""
    curves = stage_losses(stages, log_dir)
    val = stage_losses(stages, log_dir, "val")
    if not curves:
        raise FileNotFoundError(f"{log_dir}: no dvclive loss logs (<stage>/plots/metrics/train/loss.tsv) for stages "
                                f"{list(stages)}; train first (`python -m omni_core.train --stage ...`)")
    fig, ax = plt.subplots(figsize=(9, 3.8))
    offset, cmap = 0.0, plt.get_cmap("tab10")
    for i, (stage, (steps, loss)) in enumerate(curves.items()):
        color = cmap(i % 10)
        ax.plot([offset + s for s in steps], loss, color=color, lw=1.4, label=stage)
        if stage in val:
            ax.plot([offset + s for s in val[stage][0]], val[stage][1], "o", ms=4, color=color, mec="k", mew=0.5)
        ax.axvline(offset, color="0.8", lw=0.8, zorder=0)
        offset += (steps[-1] + 1) if steps else 0
    ax.set_xlabel("optimizer step (stages back to back)")
    ax.set_ylabel("loss (answer tokens)")
    ax.set_yscale("log")
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.tick_params(axis="y", which="minor", labelsize=7)
    ax.set_title("Training loss across the recipe" + (" (dots: validation)" if val else ""))
    ax.legend(fontsize=8, ncol=min(4, len(curves)), loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
    ax.grid(alpha=0.3, which="both")
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
    ax.barh([y + 0.2 for y in ys], [r[3] for r in pct], height=0.4, label="measured",
            color=[_TABLE_COLORS[r[0]] for r in pct], xerr=_margin_whiskers(pct, tasks), ecolor="0.25",
            error_kw={"lw": 0.8, "capsize": 2})
    ax.barh([y - 0.2 for y in ys], [r[4] or 0 for r in pct], height=0.4, color="0.9", edgecolor="0.5",
            hatch="///", lw=0.5, label="chance")
    constant = {t for t, res in tasks.items() if one_answer_for_all(res)}
    ax.set_yticks(list(ys), [f"{r[1]} ({METRICS[r[2]].label}{'' if r[5] else ' ↓'})"
                             f"{', one answer for all' if r[1] in constant else ''}" for r in pct], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("score (0-100; ↓ = lower is better); whiskers: 95 % interval of the margin over chance")
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
def plot_pool_geometry(maps: Mapping[str, np.ndarray], out: str | Path | None = None,
                       tile_side: int | None = None) -> list[Path]:
    """One panel per patch grid: each patch coloured by the token it feeds, token borders drawn, so a token that
    mixed distant patches would show as a broken region. ``maps``: title -> (rows, cols) token index per patch
    (`omni_core.model.vision.patch_token_map`; tiles side by side for a frame of several tiles, their borders
    drawn in red every ``tile_side`` patches)."""
    fig, axes = plt.subplots(1, len(maps), figsize=(4.2 * len(maps), 4.2), squeeze=False)
    palette = np.array([[0.62, 0.79, 0.88], [0.99, 0.75, 0.52], [0.70, 0.87, 0.54], [0.85, 0.73, 0.87]])
    for ax, (title, tokens) in zip(axes[0], maps.items()):
        tokens = np.asarray(tokens)
        # neighbouring tokens get different colours: two alternating colours along rows, two along columns
        row_of = np.cumsum(np.r_[0, np.any(np.diff(tokens, axis=0) != 0, axis=1)])[:, None]
        col_of = np.cumsum(np.r_[0, np.any(np.diff(tokens, axis=1) != 0, axis=0)])[None, :]
        ax.imshow(palette[(row_of % 2) * 2 + col_of % 2], interpolation="nearest")
        rows, cols = np.nonzero(np.diff(tokens, axis=0))                  # borders between vertical neighbours
        segments = [[(c - 0.5, r + 0.5), (c + 0.5, r + 0.5)] for r, c in zip(rows, cols)]
        rows, cols = np.nonzero(np.diff(tokens, axis=1))                  # ... and between horizontal ones
        segments += [[(c + 0.5, r - 0.5), (c + 0.5, r + 0.5)] for r, c in zip(rows, cols)]
        ax.add_collection(matplotlib.collections.LineCollection(segments, colors="k", linewidths=0.6))
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
    ax.set_xlabel("seconds")
    ax.set_title("speech boundaries (dashed: where, dotted: when decided)")
    ax.legend(loc="upper right")
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
