"""Training figures: loss curves from the dvclive logs (one panel per kind of loss) and the stages x
modules grid beside the paper's settings (notebooks 02, 03, 05)."""
from __future__ import annotations

import csv
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.collections
import matplotlib.lines
import matplotlib.patches
import matplotlib.pyplot as plt
import matplotlib.ticker

from .style import _finish, save_figure


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


# --------------------------------------------------------------------------------- stage grid (02, 03, 05)
def paper_lr_stages(path: str | Path | None = None) -> set[str]:
    """Stages whose learning rates the paper gives: in configs/full.yaml, the ones whose ``lr:`` line has a
    comment that starts with "paper" (the file marks every number "paper" or "ours")."""
    from ..config import REPO_ROOT

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
    from ..config import MODULES, load_config
    from ..train.freezing import stage_lrs

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
