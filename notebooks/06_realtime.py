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
# - `OmniSession`: frames are prefilled at `stream.video_fps` while the user speaks, the audio after them,
#   the answer streams through a callback; the next turn reuses the cache.
# - Beyond the paper: **barge-in** (speech that starts during an answer stops generation and opens the next
#   turn); the audio encoded in 2 s chunks while it arrives (`stream.audio_chunk_seconds`); and the turn closed
#   and prefilled while the head waits out its silence hangover, taken back if speech resumes
#   (`stream.prefill_in_hangover`), so at the end decision only the answer is left. `docs/realtime.md` measures
#   each, and the browser demo (`make demo`) runs the same session live.
#
# The demo exchange is a test sample of a task the tiny model answers well (`demo_task`; notebook 04 has the
# scores): a moving digit whose own sound track says a number, and the typed question "What number does the
# voice say?". With no trained checkpoint, everything runs on a random-init model of the profile: the answers
# are noise, but the plumbing and the timings are real.

# %% tags=["parameters"]
params = "params.yaml"
profile = ""              # empty: the profile named in params.yaml
checkpoint = ""           # empty: checkpoints/<eval.checkpoint>/model (random-init model if it does not exist)
speech_boundary_dir = ""  # empty: <checkpoint>/speech_boundary (trained and saved there if missing; kept in memory without a checkpoint)
video = ""                # empty: a test clip of demo_task, with its typed question; or any mp4 with audio
demo_task = "video_narration_qa"   # the task whose first test sample is the demo exchange
speed = 1.0               # replay speed: 1.0 is real time, 0 as fast as the model runs (answers then compete with it)
turns = 4                 # turns of the streaming vs re-encoding comparison
repeats = 3               # ... each timed this many times (median)
threads = 1               # torch CPU threads (timings on a shared CPU are steadier on one)
seed = 0

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from omni_core import load_config
from omni_core.data.manifest import answer_text, media_parts, read_manifest
from omni_core.data.sources.speech import flite
from omni_core.demo_realtime import AVClip, decode_clip, replay
from omni_core.plots import (StreamRecorder, format_runs, plot_speech_boundaries, plot_stream_timeline,
                             plot_turn_latency, token_runs)
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
# speaks (at `stream.video_fps`), plus the last frame seen when speech starts. The default clip is the first
# test sample of `demo_task` (never seen in training), after half a second of silence; its typed question
# goes in after the speech, where the training samples have it. Pass `video=` for any other file
# (`python -m omni_core.demo_realtime` does the same from a shell).

# %%
question = ""
if video:
    clip = decode_clip(video)
else:
    demo = next(x for x in read_manifest(Path(cfg.data.root) / "test.jsonl") if x["task"] == demo_task)
    question = " ".join(p["text"] for p in demo["messages"][0]["content"] if p["type"] == "text")
    recorded = decode_clip(Path(cfg.data.root) / media_parts(demo)[0]["path"])
    lead = 0.5
    clip = AVClip(recorded.frames, [t + lead for t in recorded.times],
                  np.concatenate([np.zeros(int(lead * 16000), np.float32), recorded.audio]))
    print(f"test sample {demo['id']}: {question!r}, reference answer {answer_text(demo)!r}")
print(f"{len(clip.frames)} frames, {len(clip.audio) / 16000:.1f} s of audio")

# %%
session = OmniSession(model, processor, speech_boundary, cfg.stream, on_text=lambda t: print(t, end="", flush=True),
                      on_event=lambda e: print(f"\n[{e.time:5.2f}s] {e.kind}", flush=True),
                      typed_text=question or None)     # the typed question closes the spoken turn, after its audio
timeline = StreamRecorder(session)
replay(session, clip, cfg.stream.chunk_seconds, speed=speed)
turn = session.turns[0]
print(f"\n\nframes encoded while speaking: {turn.frames}; audio: {turn.audio_seconds:.2f} s; "
      f"tokens prefilled after speech: {turn.tokens_prefilled_after_speech}; "
      f"first token {1000 * turn.latency:.0f} ms after the end of speech")

# %% [markdown]
# ### The exchange on a time line
# Top lane: the audio, the head's P(speech) (dotted: the threshold) and, shaded, the speech from the moment
# the head detects it to the red line where it decides the user has finished: the arrow is the silence it
# waited for (`stream.min_silence_seconds`), so pauses between words do not end a turn. Below: the frames
# prefilled while the user speaks (green, a few tokens each, already in the KV cache), the end-of-turn
# prefill (the utterance's audio and the template, made during the silence hangover as a guess that the
# decision confirms), and the answer (the diamond is its first token). The time from the red line to the
# diamond is what the user waits: it holds no frame and no audio, whatever the video.

# %%
plot_stream_timeline(timeline.records, clip.audio, session.detector.probs, speech_boundary.hop_seconds,
                     cfg.stream.end_threshold, out=Path(cfg.eval.figures_dir) / "stream_timeline")

# %% [markdown]
# The conversation as the LLM saw it, each run of media placeholders collapsed. It is the chat template's
# layout, the same sequence the model was trained on:

# %%
tok = processor.tokenizer
print(format_runs(token_runs(session.ids, tok)))

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
barge_in = StreamRecorder(s)
s.end_turn(text="Tell me a long story.")
s.answer_async(max_new_tokens=500, min_new_tokens=500)
interruption = flite("stop, tell me about the video instead", "awb")
for i in range(0, len(interruption), 3200):
    for e in s.push_audio(interruption[i:i + 3200]):
        print(f"[{e.time:4.2f}s] {e.kind}")
first = s.turns[0]
print(f"interrupted: {first.interrupted}; answer tokens before the stop: "
      f"{len(tok(first.answer, add_special_tokens=False)['input_ids'])} of 500; session state: {s.state}")

# %% [markdown]
# On a time line: the answer streams until the new speech is detected (green triangle), then stops at the
# barge-in (magenta); the interruption's audio is pushed as fast as it comes here, not in real time.

# %%
plot_stream_timeline(barge_in.records)
plt.show()
