# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 06 · Real-time interaction: streaming video and speech in, the answer streaming out
#
# Baichuan-Omni's interaction mode (paper section 5) is turn-based but streamed:
#
# 1. the model first **predicts where speech starts and ends**;
# 2. while the user is speaking, **incoming video frames are encoded and fed to the LLM as they
#    arrive**, so their attention keys and values are already in the KV cache;
# 3. **after the end of speech, the audio features are fed** and the answer is generated token by
#    token.
#
# The work left once the user stops talking is then the utterance's audio plus a few template tokens,
# whatever the length of the video or of the conversation before it. The paper calls this early-stage
# research and reports no latency; this notebook measures it.
#
# Our pieces (`omni_core.stream`, `omni_core.speech_boundary`):
#
# - a **speech boundary head**: a small causal conv net over streaming log-mel frames, trained here on
#   our own data (flite speech from three voices between silences, noise and tones) and scored on a
#   held-out voice and held-out sentences. It is saved next to the model checkpoint
#   (`<ckpt>/speech_boundary/`).
# - `OmniSession`: frames are prefilled at `stream.video_fps` while the user speaks, the audio at the end
#   of speech, the answer streams through a callback; the next turn reuses the cache.
# - Beyond the paper: **barge-in**. Speech that starts during an answer stops generation and opens
#   the next turn.
#
# With no trained checkpoint, everything runs on a random-init model of the profile: the answers are
# noise, but the plumbing and the timings are real.

# %% tags=["parameters"]
params = "params.yaml"
profile = ""              # empty: the profile named in params.yaml
checkpoint = ""           # empty: checkpoints/<eval.checkpoint>/model (random-init model if it does not exist)
speech_boundary_dir = ""  # empty: <checkpoint>/speech_boundary (trained and saved there if missing; kept in memory without a checkpoint)
video = ""                # empty: a moving-MNIST clip with a spoken question, made here; or any mp4 with audio
speed = 1.0               # replay speed: 1.0 is real time, 0 as fast as the model runs (answers then compete with it)
turns = 4                 # turns of the streaming vs re-encoding comparison
repeats = 3               # ... each timed this many times (median)
threads = 1               # torch CPU threads (timings on a shared CPU are steadier on one)
seed = 0

# %%
import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from omni_core import load_config
from omni_core.data.sources.media import write_mp4
from omni_core.data.sources.speech import flite
from omni_core.data.sources.video import moving_digit
from omni_core.demo_realtime import decode_clip, replay
from omni_core.plots import plot_speech_boundaries, plot_turn_latency
from omni_core.speech_boundary import (SPEECH_BOUNDARY_SUBDIR, detect, evaluate_boundaries,
                                       load_or_train_speech_boundary, synth_streams, tts_sentences)
from omni_core.stream import OmniSession, load_model
from omni_core.stream_latency import ask_turns, compare_prefill, summarize

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(threads)
cfg = load_config(params, profile=profile or None)
ckpt = Path(checkpoint or Path(cfg.train.checkpoints_dir) / cfg.eval.checkpoint / "model")
trained = (ckpt / "config.json").exists()
model, processor = load_model(cfg, ckpt if trained else None, seed=seed)
print("model:", ckpt if trained else f"random-init {cfg.profile} profile",
      f"({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters)")

# %% [markdown]
# ## 1. Where does speech start and end?
# The head is loaded from `speech_boundary_dir` (default `<checkpoint>/speech_boundary/`), or trained now
# (seconds) and saved there. It sees 25 ms frames every 10 ms and only the past 160 ms, so feeding it chunk
# by chunk gives exactly its offline output. A turn ends after `stream.min_silence_seconds` of non-speech:
# pauses between words are not ends of turns. The held-out streams use a voice (`awb`) and sentences the
# head never heard.

# %%
speech_boundary = load_or_train_speech_boundary(
    speech_boundary_dir or (ckpt / SPEECH_BOUNDARY_SUBDIR if trained else None), seed=seed)
held_out = synth_streams(12, ("awb",), seed=seed + 1, sentences=tts_sentences()[1])
boundary = evaluate_boundaries(speech_boundary, held_out, chunk_seconds=cfg.stream.chunk_seconds,
                               threshold=cfg.stream.end_threshold, min_speech_seconds=cfg.stream.min_speech_seconds,
                               min_silence_seconds=cfg.stream.min_silence_seconds)
print({k: round(v, 3) for k, v in boundary.items()})

# %%
ex = held_out[0]
events, probs = detect(speech_boundary, ex.wave, cfg.stream.chunk_seconds, threshold=cfg.stream.end_threshold,
                       min_silence_seconds=cfg.stream.min_silence_seconds)
plot_speech_boundaries(ex.wave, probs, events, ex.labels, speech_boundary.hop_seconds)
plt.show()

# %% [markdown]
# ## 2. Replay a clip as if it came from a camera and a microphone
# Frames and 200 ms audio chunks are pushed at their media time. Frames are encoded only while someone
# speaks (at `stream.video_fps`), plus the last frame seen when speech starts. The default clip is a
# moving MNIST digit with a spoken question in its audio track, written with the data pipeline's own
# helpers; pass `video=` for any other file (`python -m omni_core.demo_realtime` does the same from a shell).

# %%
if video:
    clip_path = Path(video)
else:
    rng = np.random.default_rng(seed)
    from omni_core.data.sources.images import mnist
    digits, _ = mnist()
    question = flite("which digit is moving and where does it go", "slt")
    audio = np.concatenate([np.zeros(8000, np.float32), question, np.zeros(16000, np.float32)])
    frames = moving_digit(digits[seed], "right", frames=int(len(audio) / 16000 * 8), size=64, rng=rng)
    clip_path = Path(tempfile.mkdtemp()) / "question.mp4"
    write_mp4(clip_path, frames, fps=8, audio=audio)
clip = decode_clip(clip_path)
print(f"{clip_path}: {len(clip.frames)} frames, {len(clip.audio) / 16000:.1f} s of audio")

log = []
session = OmniSession(model, processor, speech_boundary, cfg.stream, on_text=lambda t: print(t, end="", flush=True),
                      on_event=lambda e: log.append(e) or print(f"\n[{e.time:5.2f}s] {e.kind}", flush=True))
replay(session, clip, cfg.stream.chunk_seconds, speed=speed)
turn = session.turns[0]
print(f"\n\nframes encoded while speaking: {turn.frames}; audio fed at the end: {turn.audio_seconds:.2f} s; "
      f"tokens prefilled after speech: {turn.tokens_prefilled_after_speech}; "
      f"first token {1000 * turn.latency:.0f} ms after the end of speech")

# %% [markdown]
# The conversation as the LLM saw it, media placeholders collapsed. It is the chat template's layout,
# the same sequence the model was trained on:

# %%
tok = processor.tokenizer
text, run = [], None
for t in session.ids:
    piece = tok.convert_ids_to_tokens(t)
    if piece.endswith("_pad|>"):
        if run and run[0] == piece:
            run[1] += 1
            continue
        run = [piece, 1]
        text.append(run)
    else:
        run = None
        text.append(tok.decode([t]))
print("".join(p if isinstance(p, str) else f"{p[0]}x{p[1]}" for p in text))

# %% [markdown]
# ## 3. Streaming vs re-encoding at the end of each turn
# The same model, the same turns, two ways: the streaming session keeps the cache and prefills frames
# while the user speaks; the baseline (`incremental=False`) encodes the whole conversation (every frame,
# every utterance, every earlier answer) once speech ends. Both give the same tokens
# (`tests/test_stream.py` checks it); only the time to the first answer token differs, and the gap grows
# with the conversation. The repeats are interleaved and each turn's median is kept
# (`omni_core.stream_latency`); `benchmarks/bench_stream.py` measures the same on the tiny and small
# profiles with real-time pushes.

# %%
questions = ["what is moving", "which digit is it", "where does it go", "what color is the background"]
speech = [flite(questions[i % len(questions)], "slt") for i in range(turns)]
cam = [np.asarray(f) for f in (clip.frames * 4)[: 3 * turns]]
conversation = [(speech[i], cam[3 * i: 3 * i + 3]) for i in range(turns)]
runs = compare_prefill(model, processor, cfg.stream, lambda s: ask_turns(s, conversation), repeats, speech_boundary)
latency = {}
for name, timings in runs.items():
    summary = summarize(timings)
    print(name.ljust(10), "tokens prefilled after speech per turn:", summary["tokens_prefilled_after_speech"])
    latency[name] = summary["latency_s"]
print("median ms per turn:", {name: [round(1000 * t, 1) for t in seconds] for name, seconds in latency.items()})
plot_turn_latency(latency)
plt.show()

# %% [markdown]
# ## 4. Barge-in: speaking during an answer stops it
# The answer runs in a background thread (as in the demo) while audio keeps flowing. As soon as the
# boundary head hears new speech, generation stops after the current token; the truncated answer stays
# in the conversation (closed with the end-of-turn token) and the new speech opens the next turn.

# %%
s = OmniSession(model, processor, speech_boundary, cfg.stream, auto_answer=False)
s.end_turn(text="Tell me a long story.")
s.answer_async(max_new_tokens=500, min_new_tokens=500)
interruption = flite("stop, tell me about the video instead", "awb")
for i in range(0, len(interruption), 3200):
    for e in s.push_audio(interruption[i:i + 3200]):
        print(f"[{e.time:4.2f}s] {e.kind}")
first = s.turns[0]
print(f"interrupted: {first.interrupted}; answer tokens before the stop: "
      f"{len(tok(first.answer, add_special_tokens=False)['input_ids'])} of 500; session state: {s.state}")
