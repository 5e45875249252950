"""The live demo's server: a page, and one websocket per browser tab feeding an :class:`OmniSession`.

Wire protocol (one websocket, ``/ws``):

- browser -> server, binary messages of one kind byte and a payload:
  ``b"A"`` + 16 kHz mono float32 little-endian PCM (a microphone chunk), ``b"V"`` + a JPEG or PNG image
  (a camera frame); text ``{"type": "reset"}`` forgets the conversation.
- server -> browser, JSON text: ``ready`` (the session's settings), ``event`` (``speech_start``,
  ``speech_end``, ``barge_in``), ``answer_start``, ``text`` (a streamed piece of the answer),
  ``answer_end`` (the whole answer, its latency, whether it was interrupted), ``speech`` (the answer as a
  base64 WAV, with ``speak``), and ``error`` (a message for the user; the connection stays open unless
  the error says otherwise).

The model's work runs in worker threads, never on the event loop, so a slow forward pass does not stop
the page's other messages. One conversation at a time: a CPU is busy with one, and a second tab is told
so and closed (``busy``), while the first keeps talking.
"""
from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image, UnidentifiedImageError

from omni_core.config import StreamConfig
from omni_core.data.sources.speech import SpeechError, flite
from omni_core.model.token_counts import SAMPLING_RATE
from omni_core.model_boundary import ModelBoundaryHead
from omni_core.speech_boundary import SpeechBoundaryHead
from omni_core.stream import ContextFullError, OmniSession, StreamEvent

log = logging.getLogger(__name__)
STATIC = Path(__file__).with_name("static")
MAX_CHUNK_SECONDS = 5.0          # one microphone message; browsers send tens of milliseconds
MAX_FRAME_SIDE = 4096            # larger "frames" are not a camera's
MIN_FRAME_SIDE = 16
FRAME_SIDE = 320                 # frames are shrunk to this longer side: the model sees small tiles anyway


class LiveInputError(ValueError):
    """A message the session cannot use; told to the browser, the conversation goes on."""


@dataclass
class LiveOptions:
    speak: bool = False              # also send each answer as flite speech (barge-in then stops playback)
    voice: str = "slt"
    profile: str = "tiny"            # shown on the page


# ------------------------------------------------------------------------------------------ decoding
def decode_audio(payload: bytes) -> np.ndarray:
    """A microphone message: float32 PCM in [-1, 1] at 16 kHz."""
    if len(payload) == 0 or len(payload) % 4:
        raise LiveInputError(f"audio message of {len(payload)} bytes: expected float32 samples (a multiple of 4 bytes)")
    wav = np.frombuffer(payload, dtype="<f4")
    if len(wav) > MAX_CHUNK_SECONDS * SAMPLING_RATE:
        raise LiveInputError(f"audio message of {len(wav) / SAMPLING_RATE:.1f} s: send chunks of at most "
                             f"{MAX_CHUNK_SECONDS:.0f} s")
    if not np.isfinite(wav).all() or np.abs(wav).max() > 4.0:
        raise LiveInputError("audio message is not PCM in [-1, 1] (NaN, infinite or huge samples): send "
                             "16 kHz mono float32 from the microphone")
    return np.clip(wav, -1.0, 1.0)


def decode_frame(payload: bytes) -> np.ndarray:
    """A camera message: an encoded image -> HxWx3 uint8, its longer side at most :data:`FRAME_SIDE`."""
    try:
        image = Image.open(io.BytesIO(payload))
        image.load()
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise LiveInputError(f"video frame is not a JPEG or PNG image ({len(payload)} bytes: {err})") from None
    w, h = image.size
    if min(w, h) < MIN_FRAME_SIDE or max(w, h) > MAX_FRAME_SIDE:
        raise LiveInputError(f"video frame of {w}x{h}: frames must be {MIN_FRAME_SIDE} to {MAX_FRAME_SIDE} pixels a side")
    image.thumbnail((FRAME_SIDE, FRAME_SIDE))
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def speech_message(text: str, voice: str) -> tuple[dict, float]:
    """The answer spoken by flite, as a ``speech`` message and its duration in seconds."""
    wav = flite(text, voice)
    buf = io.BytesIO()
    sf.write(buf, wav, SAMPLING_RATE, format="WAV", subtype="PCM_16")
    return {"type": "speech", "wav": base64.b64encode(buf.getvalue()).decode()}, len(wav) / SAMPLING_RATE


# ------------------------------------------------------------------------------------------ one tab
class Conversation:
    """One tab's session. Callbacks from the session's threads reach the tab through ``send`` (thread-safe);
    ``handle`` runs in a worker thread, one message at a time."""

    def __init__(self, app_state: LiveState, send):
        self.state, self.send = app_state, send
        self.speaking_until = 0.0             # wall clock until which the spoken answer plays in the browser
        self.session = OmniSession(app_state.model, app_state.processor, app_state.speech_boundary, app_state.cfg,
                                   on_text=lambda t: send({"type": "text", "text": t}), on_event=self._on_event)

    def _on_event(self, ev: StreamEvent) -> None:
        if ev.kind == "answer_start":
            self.send({"type": "answer_start", "turn": len(self.session.turns)})
        elif ev.kind == "answer_end":
            turn = self.session.turns[-1]
            self.send({"type": "answer_end", "answer": turn.answer, "interrupted": turn.interrupted,
                       "latency_ms": round(1000 * turn.latency, 1), "turn": len(self.session.turns)})
            if self.state.options.speak and turn.answer.strip() and not turn.interrupted:
                self._speak(turn.answer)
        else:
            if ev.kind == "speech_start" and time.monotonic() < self.speaking_until:
                self.speaking_until = 0.0     # the user talks over the spoken answer: stop it
                self.send({"type": "event", "kind": "barge_in", "time": round(ev.time, 2)})
            self.send({"type": "event", "kind": ev.kind, "time": round(ev.time, 2)})

    def _speak(self, text: str) -> None:
        try:
            msg, seconds = speech_message(text, self.state.options.voice)
        except SpeechError as err:
            self.send({"type": "error", "message": f"spoken answer failed: {err}"})
            return
        self.speaking_until = time.monotonic() + seconds
        self.send(msg)

    def handle(self, data: bytes) -> None:
        kind, payload = data[:1], data[1:]
        if kind == b"A":
            self.session.push_audio(decode_audio(payload))
        elif kind == b"V":
            self.session.push_video_frame(decode_frame(payload))
        else:
            raise LiveInputError(f"message kind {kind!r}: binary messages start with b'A' (audio) or b'V' (video)")

    def close(self) -> None:
        self.session.interrupt()              # a tab that leaves mid-answer stops its generation


class LiveState:
    """What every connection shares: the model, its speech boundary head, settings, and the one-tab lock."""

    def __init__(self, model, processor, speech_boundary: SpeechBoundaryHead | ModelBoundaryHead, cfg: StreamConfig,
                 options: LiveOptions | None = None):
        self.model, self.processor, self.speech_boundary, self.cfg = model, processor, speech_boundary, cfg
        self.options = options or LiveOptions()
        self.busy = threading.Lock()


# ---------------------------------------------------------------------------------------------- app
def create_app(state: LiveState) -> FastAPI:
    app = FastAPI(title="omni_core live demo")
    app.state.live = state
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/")
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.websocket("/ws")
    async def live(ws: WebSocket) -> None:
        await ws.accept()
        if not state.busy.acquire(blocking=False):
            await ws.send_json({"type": "busy", "message": "another tab is talking to the model (one conversation "
                                                          "at a time): close it, then reload this page"})
            await ws.close(code=1013)
            return
        loop, outbox = asyncio.get_running_loop(), asyncio.Queue()

        def send(msg: dict) -> None:              # from any thread; a message after the tab left is dropped
            try:
                loop.call_soon_threadsafe(outbox.put_nowait, msg)
            except RuntimeError:                  # the event loop is closed: the server is shutting down
                pass

        conversation = None
        sender = asyncio.create_task(_send_all(ws, outbox))
        try:
            conversation = await asyncio.to_thread(Conversation, state, send)
            send({"type": "ready", "profile": state.options.profile, "sampling_rate": SAMPLING_RATE,
                  "speak": state.options.speak, **asdict(state.cfg)})
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                await _dispatch(conversation, message, send)
        except WebSocketDisconnect:
            pass
        finally:
            sender.cancel()
            try:
                if conversation is not None:
                    await asyncio.to_thread(conversation.close)
            finally:                               # even when the server cancels this task on shutdown
                state.busy.release()

    return app


async def _dispatch(conversation: Conversation, message: dict, send) -> None:
    """One message from the tab; bad input is told to the tab and the conversation goes on."""
    try:
        if message.get("bytes") is not None:
            await asyncio.to_thread(conversation.handle, message["bytes"])
        elif json.loads(message.get("text") or "null") == {"type": "reset"}:
            await asyncio.to_thread(conversation.session.reset)
            send({"type": "event", "kind": "reset", "time": 0.0})
        else:
            raise LiveInputError(f"text message {str(message.get('text'))[:80]!r}: the only one is {{\"type\": \"reset\"}}")
    except json.JSONDecodeError as err:
        send({"type": "error", "message": f"text message is not JSON: {err}"})
    except LiveInputError as err:
        send({"type": "error", "message": str(err)})
    except ContextFullError as err:
        await asyncio.to_thread(conversation.session.reset)
        send({"type": "error", "message": f"{err}; the conversation was started afresh"})
    except Exception as err:                      # a bug must not take the server down: say it, start afresh
        log.exception("live session failed")
        await asyncio.to_thread(conversation.session.reset)
        send({"type": "error", "message": f"the session failed ({type(err).__name__}: {err}); it was started "
                                          "afresh, and the server log has the traceback"})


async def _send_all(ws: WebSocket, outbox: asyncio.Queue) -> None:
    while True:
        msg = await outbox.get()
        try:
            await ws.send_json(msg)
        except (WebSocketDisconnect, RuntimeError):
            return                                 # the tab is gone; its session is being closed
