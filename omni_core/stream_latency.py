"""Time from the end of speech to the first answer token: streaming versus re-encoding each turn.

The same turns go through two sessions of one model (:data:`PREFILL_MODES`): ``streaming`` prefills frames
(and the audio, in ``stream.audio_chunk_seconds`` chunks) while the user speaks and keeps the conversation
in the KV cache; ``reencode``, the baseline, encodes the whole conversation (every frame, every utterance,
every earlier answer) once speech ends. A *drive* feeds a session its turns: :func:`ask_turns` hands each
turn over at once, :func:`push_stream` pushes a stream chunk by chunk as a microphone and a camera would.
:func:`compare_prefill` runs the sessions (or other ``modes``), repeats interleaved so that load changes on a
shared machine hit all alike, and :func:`summarize` takes the medians. Notebook 06 and
``benchmarks/bench_stream.py`` both measure with these.

What chunked audio costs in quality: :func:`chunked_wer` transcribes held-out clips (:func:`asr_clips`)
with the audio encoded whole and in chunks (the encoder then attends within a chunk only).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np

from omni_core.config import StreamConfig
from omni_core.data.manifest import media_parts
from omni_core.eval.metrics import wer
from omni_core.eval.runner import read_manifest
from omni_core.model.token_counts import SAMPLING_RATE
from omni_core.processing import load_audio
from omni_core.speech_boundary import SpeechBoundaryHead
from omni_core.stream import OmniSession

PREFILL_MODES: Mapping[str, bool] = {"streaming": True, "reencode": False}   # name -> OmniSession(incremental=)


@dataclass
class SessionTiming:
    """What one drive of a session cost."""
    latency_s: list[float]                   # per answered turn: end of speech -> first answer token
    tokens_prefilled_after_speech: list[int]  # per answered turn: the work left once the user stops talking
    frames_per_turn: list[int]
    context_tokens: int                      # the conversation's length at the end
    compute_s: float                         # time spent in the session's calls (answers included)
    answer_s: float                          # ... of which generating answers
    stream_seconds: float | None = None      # duration of a stream replayed in real time; None for whole turns

    @property
    def rtf(self) -> float:
        """Real-time factor: compute time / stream duration (< 1 keeps up with the stream)."""
        return self.compute_s / self.stream_seconds

    @property
    def rtf_input(self) -> float:
        """The real-time factor without answer generation (ingesting frames and audio, end-of-turn prefill)."""
        return (self.compute_s - self.answer_s) / self.stream_seconds


def _timing(session: OmniSession, compute_s: float, answer_s: float,
            stream_seconds: float | None = None) -> SessionTiming:
    turns = [t for t in session.turns if t.first_token is not None]
    return SessionTiming([t.latency for t in turns], [t.tokens_prefilled_after_speech for t in turns],
                         [t.frames for t in turns], len(session.ids), compute_s, answer_s, stream_seconds)


def ask_turns(session: OmniSession, turns: Sequence[tuple[np.ndarray, Sequence[np.ndarray]]]) -> SessionTiming:
    """Each ``(utterance, frames)`` turn at once, as :meth:`OmniSession.ask` does: the frames, the audio
    at the end of speech, then the answer."""
    compute = answering = 0.0
    for audio, frames in turns:
        t0 = time.perf_counter()
        for frame in frames:
            session.add_frame(frame)
        session.end_turn(audio=audio)
        t1 = time.perf_counter()
        session.answer()
        answering += time.perf_counter() - t1
        compute += time.perf_counter() - t0
    return _timing(session, compute, answering)


def push_stream(session: OmniSession, audio: np.ndarray, frames: Sequence[np.ndarray], chunk_seconds: float = 0.1,
                camera_fps: float = 10) -> SessionTiming:
    """``audio`` in ``chunk_seconds`` chunks, each after the camera frame of its time (``frames`` at
    ``camera_fps``); an answer is generated, synchronously, whenever the session detects the end of speech.
    The session needs a speech boundary head and ``auto_answer=False``."""
    step, compute, answering = int(chunk_seconds * SAMPLING_RATE), 0.0, 0.0
    for i, start in enumerate(range(0, len(audio), step)):
        t0 = time.perf_counter()
        session.push_video_frame(frames[min(int(i * chunk_seconds * camera_fps), len(frames) - 1)])
        if any(e.kind == "speech_end" for e in session.push_audio(audio[start:start + step])):
            t1 = time.perf_counter()
            session.answer()
            answering += time.perf_counter() - t1
        compute += time.perf_counter() - t0
    return _timing(session, compute, answering, len(audio) / SAMPLING_RATE)


class SessionMode(NamedTuple):
    """One arm of :func:`compare_prefill`: how its sessions are built."""
    incremental: bool
    cfg: StreamConfig
    speech_boundary: object = None         # a head or decider (stream.boundary_decider); None = compare_prefill's


def compare_prefill(model, processor, cfg: StreamConfig, drive: Callable[[OmniSession], SessionTiming],
                    repeats: int = 1, speech_boundary: SpeechBoundaryHead | None = None,
                    modes: Mapping[str, SessionMode] | None = None) -> dict[str, list[SessionTiming]]:
    """``repeats`` drives of a fresh session per mode, interleaved (streaming, re-encode, streaming, ...).
    ``modes``: name -> :class:`SessionMode`; default :data:`PREFILL_MODES`, all under ``cfg``.
    Returns mode name -> one :class:`SessionTiming` per repeat."""
    modes = modes or {name: SessionMode(incremental, cfg) for name, incremental in PREFILL_MODES.items()}
    runs: dict[str, list[SessionTiming]] = {name: [] for name in modes}
    for _ in range(repeats):
        for name, mode in modes.items():
            session = OmniSession(model, processor, mode.speech_boundary or speech_boundary, mode.cfg,
                                  incremental=mode.incremental, auto_answer=False)
            runs[name].append(drive(session))
    return runs


def summarize(runs: Sequence[SessionTiming]) -> dict:
    """Medians over repeats (single runs on a shared machine are noisy), rounded for JSON: ``latency_s`` per
    turn and its mean, ``rtf`` and ``rtf_input`` for a stream replayed in real time; the token and frame
    counts (the same in every repeat) of the first run."""
    lat = np.median(np.array([r.latency_s for r in runs]), axis=0)
    out = {"latency_s": [round(float(x), 4) for x in lat], "mean_latency_s": round(float(lat.mean()), 4)}
    if runs[0].stream_seconds is not None:
        out["rtf"] = round(float(np.median([r.rtf for r in runs])), 4)
        out["rtf_input"] = round(float(np.median([r.rtf_input for r in runs])), 4)
    first = runs[0]
    out.update({"frames_per_turn": first.frames_per_turn,
                "tokens_prefilled_after_speech": first.tokens_prefilled_after_speech,
                "context_tokens": first.context_tokens})
    return out


# ------------------------------------------------------------------------------------------- quality
def asr_clips(manifest: str | Path, n: int, task: str = "asr") -> list[tuple[np.ndarray, str, str]]:
    """The first ``n`` ``task`` samples of a manifest (held out: the test split) as (audio, prompt, reference)."""
    samples = read_manifest(manifest, [task], n).get(task, [])
    audio = [next(p for p in media_parts({"messages": s.prompt}) if p["type"] == "audio") for s in samples]
    return [(load_audio(a, s.base_dir), s.question, s.reference) for a, s in zip(audio, samples)]


def chunked_wer(model, processor, cfg: StreamConfig, clips: Sequence[tuple[np.ndarray, str, str]],
                chunk_seconds: Sequence[float] = (0.0, 1.0, 2.0)) -> dict[str, dict]:
    """WER (%, :func:`omni_core.eval.metrics.wer`) of each clip's answer, one fresh turn per clip, its audio
    streamed through :meth:`OmniSession.add_audio` with ``audio_chunk_seconds`` = each of ``chunk_seconds``
    (0 = the whole utterance encoded at once), then its prompt. Returns ``{"<seconds>": {"wer", "answers"}}``."""
    out = {}
    for seconds in chunk_seconds:
        session = OmniSession(model, processor, cfg=replace(cfg, audio_chunk_seconds=seconds), auto_answer=False)
        answers = []
        for audio, prompt, _ in clips:
            session.reset()
            session.add_audio(audio)
            session.end_turn(text=prompt)
            answers.append(session.answer())
        out[f"{seconds:g}"] = {"wer": round(wer(answers, [ref for *_, ref in clips]), 2), "answers": answers}
    return out
