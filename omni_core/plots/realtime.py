"""Real-time figures (notebook 06): speech-boundary probabilities, turn latency, and the timeline of one
exchange recorded by :class:`StreamRecorder`."""
from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.collections
import matplotlib.lines
import matplotlib.patches
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np

from .style import _TABLE_COLORS, _finish


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
        # the turn's close (audio left, template) is timed where it runs: at the end decision, or during the
        # silence hangover when the session guesses the end (stream.prefill_in_hangover)
        self._add_frame, self._close_turn = session.add_frame, session._close_turn
        session.on_event, session.on_text = self._on_event, self._on_text
        session.add_frame, session._close_turn = self._timed_frame, self._timed_close_turn

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

    def _timed_close_turn(self, *args, **kwargs) -> int:
        start = time.perf_counter()
        n = self._close_turn(*args, **kwargs)
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
