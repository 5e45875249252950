"""What every figure shares: saving as PNG + SVG (and showing it in a notebook), the tables' colours,
small drawing helpers."""
from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

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
