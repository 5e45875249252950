"""Prepared samples drawn with their media (notebook 01)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np


def show_samples(samples: Sequence[Mapping], root: str | Path, per_task: int = 1):
    """A grid with the first ``per_task`` sample(s) of every task: the media as decoded for the model
    (image, first video frame, audio waveform) above the question and the answer; returns the figure."""
    import textwrap

    from ..data.manifest import answer_text, media_parts
    from ..processing import load_audio, load_image, load_video_frames

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
