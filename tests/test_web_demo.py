"""The live demo (omni_core.web): a real headless Chromium with fake camera and microphone files talks to the
server (a spoken question gets a streamed answer, a second question barges in on the spoken answer), and
the live path survives bad input (garbage audio, wrong frames, a second tab, a tab that leaves mid-answer)."""
import json
import os
import shutil
import socket
import threading
import time
import warnings
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
import torch
import uvicorn
from stream_fixtures import tiny_model_and_processor, tiny_stream_cfg, trained_speech_boundary_head

from omni_core.config import load_config
from omni_core.data.sources.speech import flite
from omni_core.stream import load_session_parts
from omni_core.web.server import LiveOptions, LiveState, create_app

with warnings.catch_warnings():     # starlette asks for httpx2, which its test client does not need yet
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SR = 16000


@pytest.fixture(scope="module")
def state():
    if os.environ.get("DEMO_CHECKPOINT"):     # e.g. the README's screenshot: the trained tiny model answers
        cfg = load_config()
        ckpt = Path(os.environ["DEMO_CHECKPOINT"])
        model, processor, head = load_session_parts(cfg, ckpt, ckpt.parent.parent / "speech_boundary")
        return LiveState(model, processor, head, cfg.stream, LiveOptions(speak=True))
    cfg = tiny_stream_cfg(max_new_tokens=12)
    model, processor = tiny_model_and_processor(cfg)
    # a random model with tied embeddings echoes its last input token (the template's newline): an untied random
    # output layer makes its answers visible text, which the page shows and flite speaks
    out = model.get_output_embeddings()
    out.weight = torch.nn.Parameter(torch.randn_like(out.weight))
    return LiveState(model, processor, trained_speech_boundary_head(), cfg.stream, LiveOptions(speak=True))


def _silence(seconds):
    return np.zeros(int(seconds * SR), np.float32)


def _messages(ws, until, limit=200):
    """Messages from the server up to (and including) the first of type ``until``."""
    out = []
    for _ in range(limit):
        out.append(ws.receive_json())
        if out[-1]["type"] == until:
            return out
    raise AssertionError(f"no {until!r} message among {[m['type'] for m in out]}")


def _wait_until_free(state, seconds=30):
    deadline = time.monotonic() + seconds
    while state.busy.locked() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not state.busy.locked(), "the server still holds the conversation of a tab that left"


def _push(ws, wav, chunk=0.1):
    step = int(chunk * SR)
    for i in range(0, len(wav), step):
        ws.send_bytes(b"A" + wav[i:i + step].astype("<f4").tobytes())


# ------------------------------------------------------------------------------------- the live path
def test_live_path_answers_and_survives_bad_input(state):
    with TestClient(create_app(state)) as client:
        with client.websocket_connect("/ws") as ws:
            assert _messages(ws, "ready")[-1]["sampling_rate"] == SR
            for message, error in [(b"A\x00\x01\x02", "multiple of 4"),                     # not float32
                                   (b"A" + np.full(800, np.nan, "<f4").tobytes(), "NaN"),      # garbage samples
                                   (b"V" + b"not an image", "not a JPEG or PNG"),
                                   (b"V" + _png(np.zeros((4, 4000, 3), np.uint8)), "4000x4"),   # wrong size
                                   (b"X123", "b'A' (audio) or b'V' (video)"),
                                   ("hello", "not JSON")]:
                ws.send_bytes(message) if isinstance(message, bytes) else ws.send_text(message)
                assert error in _messages(ws, "error")[-1]["message"]
            with client.websocket_connect("/ws") as second:           # a second tab is told, and closed
                assert "another tab" in second.receive_json()["message"]
            _push(ws, _silence(1.0))                                 # a silent stream: nothing happens
            ws.send_bytes(b"V" + _png(np.full((48, 64, 3), 90, np.uint8)))
            _push(ws, np.concatenate([_silence(0.5), flite("what is in the video", "slt"), _silence(1.2)]))
            msgs = _messages(ws, "answer_end")
            kinds = [m.get("kind", m["type"]) for m in msgs]
            assert kinds.index("speech_start") < kinds.index("speech_end") < kinds.index("answer_start")
            end = msgs[-1]
            assert end["latency_ms"] > 0 and end["answer"] == "".join(m["text"] for m in msgs if m["type"] == "text")
            assert state.busy.locked()
        _wait_until_free(state)                                      # the tab left: the lock is free again


def test_a_tab_that_leaves_mid_answer_leaves_the_server_serving(state):
    app = create_app(state)
    with TestClient(app) as client:
        with client.websocket_connect("/ws") as ws:
            _messages(ws, "ready")
            _push(ws, np.concatenate([_silence(0.4), flite("describe the scene", "slt"), _silence(0.8)]))
            _messages(ws, "answer_start")
        _wait_until_free(state)                                      # the server closes the session
        with client.websocket_connect("/ws") as ws:                   # and the next tab talks as before
            _messages(ws, "ready")
            ws.send_text(json.dumps({"type": "reset"}))
            assert _messages(ws, "event")[-1]["kind"] == "reset"


def _png(frame):
    import io

    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG")
    return buf.getvalue()


# ---------------------------------------------------------------------------------- a real browser
def _fake_camera(path: Path, seconds=2.0, fps=10, size=(320, 240), source: str | None = None):
    """A y4m file for Chromium's fake camera: a bright square moving over a dark background, or the frames of
    a ``source`` video."""
    if source:
        with av.open(source) as clip:
            images = [f.to_ndarray(width=size[0], height=size[1], format="rgb24") for f in clip.decode(video=0)]
    else:
        images = []
        for i in range(int(seconds * fps)):
            img = np.full((size[1], size[0], 3), 30, np.uint8)
            img[80:160, 10 + 12 * i:90 + 12 * i] = (240, 200, 40)
            images.append(img)
    with av.open(str(path), "w", format="yuv4mpegpipe") as out:
        stream = out.add_stream("rawvideo", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for img in images:
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def live_server(state):
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(state), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_browser_speaks_a_question_sees_the_answer_and_barges_in(tmp_path, live_server):
    """Chromium's fake microphone says a question, pauses, and says another over the spoken answer."""
    if CHROMIUM is None:
        pytest.fail("no chromium: `make test` installs Debian's chromium (apt); or `apt-get install chromium`")
    from playwright.sync_api import expect, sync_playwright

    wav, y4m = tmp_path / "mic.wav", tmp_path / "camera.y4m"
    sf.write(wav, np.concatenate([_silence(1.0), flite("what is moving in the video", "awb"), _silence(0.7),
                                  flite("which digit do you see now", "awb"), _silence(3.0)]), SR)
    _fake_camera(y4m, source=os.environ.get("DEMO_VIDEO"))
    args = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required",
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={y4m}", f"--use-file-for-fake-audio-capture={wav}%noloop"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 560})
            errors = []
            page.on("pageerror", lambda err: errors.append(str(err)))
            page.goto(live_server)
            page.click("#start")
            expect(page.locator("#status")).to_contain_text("tiny model, 16 kHz", timeout=30_000)
            first = page.locator(".turn.answered").last
            expect(first.locator(".meta")).to_contain_text("ms after you stopped", timeout=30_000)
            assert first.locator(".answer").inner_text().strip()
            expect(page.locator(".turn.interrupted")).to_have_count(1, timeout=30_000)   # barge-in on the spoken answer
            expect(page.locator(".turn.answered")).to_have_count(2, timeout=30_000)      # the second question answered
            page.screenshot(path=os.environ.get("DEMO_SCREENSHOT", str(tmp_path / "demo.png")))
            assert page.locator(".error").count() == 0 and not errors
        finally:
            browser.close()
