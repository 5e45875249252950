"""Time from the end of speech to the first answer token: streaming versus re-encoding each turn.

The same turns go through two sessions of one model (:data:`PREFILL_MODES`): ``streaming`` prefills frames
while the user speaks and keeps the conversation in the KV cache; ``reencode``, the baseline, encodes the
whole conversation (every frame, every utterance, every earlier answer) once speech ends. A *drive*
feeds a session its turns: :func:`ask_turns` hands each turn over at once, :func:`push_stream` pushes a
stream chunk by chunk as a microphone and a camera would. :func:`compare_prefill` runs both sessions,
repeats interleaved so that load changes on a shared machine hit both alike, and :func:`summarize` takes
the medians. Notebook 06 and ``benchmarks/bench_stream.py`` both measure with these.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from omni_core.config import StreamConfig
from omni_core.model.token_counts import SAMPLING_RATE
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


def compare_prefill(model, processor, cfg: StreamConfig, drive: Callable[[OmniSession], SessionTiming],
                    repeats: int = 1, speech_boundary: SpeechBoundaryHead | None = None) -> dict[str, list[SessionTiming]]:
    """``repeats`` drives of a fresh session per mode of :data:`PREFILL_MODES`, interleaved (streaming,
    re-encode, streaming, ...). Returns mode name -> one :class:`SessionTiming` per repeat."""
    runs: dict[str, list[SessionTiming]] = {name: [] for name in PREFILL_MODES}
    for _ in range(repeats):
        for name, incremental in PREFILL_MODES.items():
            session = OmniSession(model, processor, speech_boundary, cfg, incremental=incremental, auto_answer=False)
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
