"""The ablations' figures (notebook 07): Conv-GMLP rate vs WER, staging vs one joint mixture, the
recipe redrawn with other seeds."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib.collections
import matplotlib.lines
import matplotlib.patches
import matplotlib.pyplot as plt
import matplotlib.ticker

from ..eval.metrics import METRICS, TASKS, task_spec
from ..eval.paper_results import REPORTED_DOWNSAMPLE_WER
from .style import save_figure


# ------------------------------------------------------------------------------------- ablations
def plot_downsample_ablation(variants: Mapping[int, Mapping[str, float]], out: str | Path,
                             reported: Mapping[int, float] | None = REPORTED_DOWNSAMPLE_WER) -> list[Path]:
    """WER against audio tokens per second (50 / n) for each Conv-GMLP rate n, like the paper's Figure 6.

    ``variants`` maps n -> {"wer": ..., "tokens_per_second": ..., optional "chance_wer" and "wer_ci95" (drawn as
    error bars: the 95 % interval over the test clips)}. ``reported`` (the paper's 1.5B audio-LLM numbers, another
    model and test set) gets its own panel, never our axis; ``None`` leaves it out.
    """
    from ..model.token_counts import audio_tokens_per_second

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
        cis = [variants[n].get("wer_ci95") for n in ns] if ax is axes[0, 0] else []
        if cis and all(cis):
            ax.errorbar(x, [wer[n] for n in ns], yerr=[[wer[n] - lo for n, (lo, _) in zip(ns, cis)],
                                                       [hi - wer[n] for n, (_, hi) in zip(ns, cis)]],
                        fmt="none", ecolor=color, capsize=3, lw=1, label="95 % interval over test clips")
        for n, xi in zip(ns, x):
            ax.annotate(f"n={n}", (xi, wer[n]), textcoords="offset points", xytext=(4, 6), fontsize=8)
        if ax is axes[0, 0] and "chance_wer" in variants[ns[0]]:
            ax.axhline(variants[ns[0]]["chance_wer"], color="0.6", ls="--", lw=1, label="chance (fixed sentence)")
            ax.legend(fontsize=8, frameon=False)
        ax.set_xscale("log", base=2)
        ax.set_xticks(x, [f"{v:g}" for v in x])
        ax.minorticks_off()
        tops = [hi for c in cis if c for _, hi in [c]]
        ax.set_ylim(0, 1.2 * max([*wer.values(), *tops, variants[ns[0]].get("chance_wer", 0) if ax is axes[0, 0] else 0]))
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
    from ..eval.ablation import seed_summary

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
