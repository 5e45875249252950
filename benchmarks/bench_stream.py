"""Real-time interaction benchmark: streaming (incremental prefill) vs re-encoding at the end of each turn.

A multi-turn stream (flite questions between silences, a camera at 10 fps) is pushed chunk by chunk
through :class:`omni_core.stream.OmniSession`, once with incremental prefill (frames encoded while the
user speaks, the conversation kept in the KV cache) and once with the same model re-encoding the whole
conversation (all frames, all audio, all earlier answers) when speech ends. Both see the same speech
boundary decisions. ``streaming_audio_at_end`` streams frames but feeds each utterance's audio whole once the
end of speech is decided, as the paper does (``stream.audio_chunk_seconds = 0``, ``prefill_in_hangover``
off; the re-encoding arm too); ``streaming_no_hangover_prefill`` encodes the audio in chunks while the user
speaks but closes the turn only at the end decision; ``streaming`` (the defaults) also closes and prefills it
during the silence hangover. ``streaming_model_boundary`` is ``streaming`` with the model's own speech boundary
head deciding the turns (:mod:`omni_core.model_boundary`) instead of the separate detector.
Reported per profile (with the ``audio_chunk_seconds`` in use), per arm:

- ``latency_s``: seconds from the end-of-speech decision to the first answer token, per turn;
- ``rtf``: real-time factor = compute time (pushes + answers) / stream duration (< 1 keeps up);
  ``rtf_input``: the same without answer generation (ingesting frames and audio, end-of-turn prefill);
- ``tokens_prefilled_after_speech``: the work left once the user stops talking.

``--wer-clips N`` adds what chunking costs in quality: WER of N held-out ``asr`` clips transcribed with the
audio whole and in 1 s / 2 s chunks (:func:`omni_core.stream_latency.chunked_wer`; trained checkpoint only).

The measurement itself (sessions, interleaved repeats, medians) is :mod:`omni_core.stream_latency`, which
notebook 06 shares.

    python benchmarks/bench_stream.py [--profiles tiny small] [--turns 6] [--wer-clips 100]
                                      [--out benchmarks/results/stream.json]

Each profile uses its trained ``<train.checkpoints_dir>/<eval.checkpoint>/model`` when it exists (tiny:
``checkpoints/2_sft/model``, small: ``checkpoints/small/2_sft/model``); otherwise the config's model: pretrained
parts from ``models/`` (small needs the converted weights there), the rest random-init. Timings depend on sizes,
not on the weights' values; answers' lengths do.
"""
from __future__ import annotations

import argparse
import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from omni_core.config import REPO_ROOT, load_config  # noqa: E402
from omni_core.data.sources.speech import flite  # noqa: E402
from omni_core.eval.runner import cpu_model  # noqa: E402
from omni_core.model_boundary import MODEL_BOUNDARY_SUBDIR, ModelBoundaryHead, train_model_boundary_head  # noqa: E402
from omni_core.speech_boundary import (  # noqa: E402
    SPEECH_BOUNDARY_SUBDIR,
    load_or_train_speech_boundary,
    synth_streams,
    tts_sentences,
)
from omni_core.stream import load_model  # noqa: E402
from omni_core.stream_latency import (  # noqa: E402
    SessionMode,
    asr_clips,
    chunked_wer,
    compare_prefill,
    push_stream,
    summarize,
)

# short questions and long ones (over stream.audio_chunk_seconds: their audio is encoded while they are spoken)
QUESTIONS = ["what is moving in the video",
             "which digit do you see now, and where was it a moment ago when it started to move",
             "where does it go next",
             "describe the whole scene for me, the digits, the background and the way they move",
             "what color is the background",
             "how many digits are in the picture right now, and which one of them is the largest"]
SR, CHUNK, CAMERA_FPS = 16000, 0.1, 10


def make_stream(turns: int, seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    """Audio of ``turns`` questions, each between silences long enough to answer, and 10 fps frames."""
    rng = np.random.default_rng(seed)
    parts = []
    for i in range(turns):
        parts += [np.zeros(int(0.6 * SR), np.float32), flite(QUESTIONS[i % len(QUESTIONS)], "slt"),
                  np.zeros(int(1.4 * SR), np.float32)]
    audio = np.concatenate(parts)
    audio += rng.normal(0, 1e-3, len(audio)).astype(np.float32)
    n_frames = int(len(audio) / SR * CAMERA_FPS) + 1
    frames = [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(n_frames)]
    return audio, frames


def pushed(audio: np.ndarray, frames: list[np.ndarray]):
    """A drive for :func:`compare_prefill`: the stream pushed chunk by chunk, each answer generated
    synchronously when speech ends."""
    return lambda session: push_stream(session, audio, frames, CHUNK, CAMERA_FPS)


def bench_profile(profile: str, turns: int, repeats: int, device: str, wer_clips: int = 0) -> dict:
    cfg = load_config(REPO_ROOT / "params.yaml", profile=profile)
    ckpt = REPO_ROOT / cfg.train.checkpoints_dir / cfg.eval.checkpoint / "model"
    trained = (ckpt / "config.json").exists()        # each profile has checkpoints of its own (train.checkpoints_dir)
    model, processor = load_model(cfg, ckpt if trained else None)
    model.to(device)
    # the separate detector reads audio alone, whatever the model: the tiny pipeline's, else one trained now
    detector_dir = REPO_ROOT / "checkpoints" / SPEECH_BOUNDARY_SUBDIR
    speech_boundary = load_or_train_speech_boundary(detector_dir if (detector_dir / "config.json").exists() else None)
    model_head_dir = ckpt.parent.parent / MODEL_BOUNDARY_SUBDIR
    audio, frames = make_stream(turns)
    warm_audio, warm_frames = make_stream(1, seed=1)
    out = {"checkpoint": str(ckpt.relative_to(REPO_ROOT)) if trained else "none: the config's model, untrained parts random",
           "parameters": sum(p.numel() for p in model.parameters()), "stream_seconds": round(len(audio) / SR, 2),
           "audio_chunk_seconds": cfg.stream.audio_chunk_seconds}
    paper = replace(cfg.stream, audio_chunk_seconds=0.0, prefill_in_hangover=False)
    modes = {"streaming": SessionMode(True, cfg.stream), "reencode": SessionMode(False, paper),
             "streaming_audio_at_end": SessionMode(True, paper),
             "streaming_no_hangover_prefill": SessionMode(True, replace(cfg.stream, prefill_in_hangover=False))}
    # the model's own boundary head: the model_boundary stage's, else one trained here on 16 streams (its cost
    # does not depend on how well it was trained; its decisions set the turns it answers)
    if trained and (model_head_dir / "config.json").exists():
        model_head = ModelBoundaryHead.from_pretrained(str(model_head_dir)).eval()
        out["model_boundary_head"] = str(model_head_dir.relative_to(REPO_ROOT))
    else:
        model_head = train_model_boundary_head(model, synth_streams(16, ("slt", "kal16", "rms"), 0, tts_sentences()[0]))
        out["model_boundary_head"] = "trained here on 16 streams (no model_boundary stage output for this model)"
    modes["streaming_model_boundary"] = SessionMode(True, cfg.stream, model_head)
    compare_prefill(model, processor, cfg.stream, pushed(warm_audio, warm_frames), 1, speech_boundary, modes)  # warm up
    runs = compare_prefill(model, processor, cfg.stream, pushed(audio, frames), repeats, speech_boundary, modes)
    out.update({name: summarize(r) for name, r in runs.items()})
    s, r = out["streaming"]["latency_s"], out["reencode"]["latency_s"]
    out["latency_speedup_mean"] = round(out["reencode"]["mean_latency_s"] / out["streaming"]["mean_latency_s"], 2)
    out["latency_speedup_last_turn"] = round(r[-1] / s[-1], 2)
    out["latency_speedup_vs_audio_at_end_mean"] = round(out["streaming_audio_at_end"]["mean_latency_s"]
                                                        / out["streaming"]["mean_latency_s"], 2)
    if wer_clips:
        manifest = REPO_ROOT / cfg.data.root / "test.jsonl"
        if not trained or not manifest.exists():       # an untrained model's transcripts say nothing about chunking
            out["wer"] = {"skipped": "needs the trained checkpoint and " + str(manifest.relative_to(REPO_ROOT))}
        else:
            clips = asr_clips(manifest, wer_clips)
            chunks = sorted({0.0, 1.0, 2.0, cfg.stream.audio_chunk_seconds})
            wers = chunked_wer(model, processor, cfg.stream, clips, chunks)
            out["wer"] = {"task": "asr", "clips": len(clips), **{k: v["wer"] for k, v in wers.items()}}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profiles", nargs="+", default=["tiny", "small"])
    ap.add_argument("--turns", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 = comparable on a shared machine)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--wer-clips", type=int, default=0, help="also the WER of this many held-out asr clips with the "
                    "audio whole and chunked (0 = skip)")
    ap.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results" / "stream.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    result = {"device": args.device, "cpu": cpu_model(), "threads": args.threads,
              "turns": args.turns, "repeats": args.repeats, "chunk_seconds": CHUNK, "camera_fps": CAMERA_FPS, "profiles": {}}
    for profile in args.profiles:
        try:
            result["profiles"][profile] = bench_profile(profile, args.turns, args.repeats, args.device,
                                                        args.wer_clips)
        except FileNotFoundError as err:          # e.g. small without its converted weights under models/
            result["profiles"][profile] = {"skipped": str(err)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
