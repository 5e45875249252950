"""Real-time interaction benchmark: streaming (incremental prefill) vs re-encoding at the end of each turn.

A multi-turn stream (flite questions between silences, a camera at 10 fps) is pushed chunk by chunk
through :class:`omni_core.stream.OmniSession`, once with incremental prefill (frames encoded while the
user speaks, the conversation kept in the KV cache) and once with the same model re-encoding the whole
conversation (all frames, all audio, all earlier answers) when speech ends. Both see the same speech
boundary decisions. Reported per profile:

- ``latency_s``: seconds from the end-of-speech decision to the first answer token, per turn;
- ``rtf``: real-time factor = compute time (pushes + answers) / stream duration (< 1 keeps up);
  ``rtf_input``: the same without answer generation (ingesting frames and audio, end-of-turn prefill);
- ``tokens_prefilled_after_speech``: the work left once the user stops talking.

    python benchmarks/bench_stream.py [--profiles tiny small] [--turns 6] [--out benchmarks/results/stream.json]

The profile of params.yaml uses ``checkpoints/<eval.checkpoint>/model`` when it exists; otherwise (and
for the other profile) the config's model: pretrained parts from ``models/`` (small needs the converted
weights there), the rest random-init. Timings depend on sizes, not on the weights' values.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from omni_core.config import REPO_ROOT, load_config  # noqa: E402
from omni_core.data.sources.speech import flite  # noqa: E402
from omni_core.eval.runner import cpu_model  # noqa: E402
from omni_core.stream import OmniSession, load_model  # noqa: E402
from omni_core.vad import VAD_SUBDIR, load_or_train_vad  # noqa: E402

QUESTIONS = ["what is moving in the video", "which digit do you see now", "where does it go next",
             "describe the scene", "what color is the background", "how many digits are there"]
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


def run(model, processor, vad, cfg, audio: np.ndarray, frames: list[np.ndarray], incremental: bool) -> dict:
    """One pass over the stream; answers are generated synchronously when speech ends."""
    session = OmniSession(model, processor, vad, cfg.stream, incremental=incremental, auto_answer=False)
    step, compute, answering = int(CHUNK * SR), 0.0, 0.0
    for i, start in enumerate(range(0, len(audio), step)):
        t0 = time.perf_counter()
        session.push_video_frame(frames[min(int(i * CHUNK * CAMERA_FPS), len(frames) - 1)])
        if any(e.kind == "speech_end" for e in session.push_audio(audio[start:start + step])):
            t1 = time.perf_counter()
            session.answer()
            answering += time.perf_counter() - t1
        compute += time.perf_counter() - t0
    turns = [t for t in session.turns if t.first_token is not None]
    seconds = len(audio) / SR
    return {"latency_s": [t.latency for t in turns], "rtf": compute / seconds,
            "rtf_input": (compute - answering) / seconds,
            "frames_per_turn": [t.frames for t in turns],
            "tokens_prefilled_after_speech": [t.tokens_prefilled_after_speech for t in turns],
            "context_tokens": len(session.ids)}


def summarize(runs: list[dict]) -> dict:
    """Median over repeats (the machine is shared: single runs are noisy)."""
    lat = np.median(np.array([r["latency_s"] for r in runs]), axis=0)
    return {"latency_s": [round(float(x), 4) for x in lat], "mean_latency_s": round(float(lat.mean()), 4),
            "rtf": round(float(np.median([r["rtf"] for r in runs])), 4),
            "rtf_input": round(float(np.median([r["rtf_input"] for r in runs])), 4),
            **{k: runs[0][k] for k in ("frames_per_turn", "tokens_prefilled_after_speech", "context_tokens")}}


def bench_profile(profile: str, turns: int, repeats: int, device: str) -> dict:
    cfg = load_config(REPO_ROOT / "params.yaml", profile=profile)
    ckpt = REPO_ROOT / cfg.train.checkpoints_dir / cfg.eval.checkpoint / "model"
    # checkpoints/ holds the pipeline's profile: never load it as another profile's model
    trained = profile == load_config(REPO_ROOT / "params.yaml").profile and (ckpt / "config.json").exists()
    model, processor = load_model(cfg, ckpt if trained else None)
    model.to(device)
    vad = load_or_train_vad(ckpt / VAD_SUBDIR if trained and (ckpt / VAD_SUBDIR / "config.json").exists() else None)
    audio, frames = make_stream(turns)
    warm_audio, warm_frames = make_stream(1, seed=1)
    out = {"checkpoint": str(ckpt) if trained else "none: the config's model, untrained parts random",
           "parameters": sum(p.numel() for p in model.parameters()), "stream_seconds": round(len(audio) / SR, 2)}
    runs: dict[str, list[dict]] = {"streaming": [], "reencode": []}
    for incremental in (True, False):
        run(model, processor, vad, cfg, warm_audio, warm_frames, incremental)          # warm-up
    for _ in range(repeats):                               # interleaved, so load changes hit both alike
        for name, incremental in (("streaming", True), ("reencode", False)):
            runs[name].append(run(model, processor, vad, cfg, audio, frames, incremental))
    out.update({name: summarize(r) for name, r in runs.items()})
    s, r = out["streaming"]["latency_s"], out["reencode"]["latency_s"]
    out["latency_speedup_mean"] = round(out["reencode"]["mean_latency_s"] / out["streaming"]["mean_latency_s"], 2)
    out["latency_speedup_last_turn"] = round(r[-1] / s[-1], 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profiles", nargs="+", default=["tiny", "small"])
    ap.add_argument("--turns", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 = comparable on a shared machine)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results" / "stream.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    result = {"device": args.device, "cpu": cpu_model(), "threads": args.threads,
              "turns": args.turns, "repeats": args.repeats, "chunk_seconds": CHUNK, "camera_fps": CAMERA_FPS, "profiles": {}}
    for profile in args.profiles:
        try:
            result["profiles"][profile] = bench_profile(profile, args.turns, args.repeats, args.device)
        except FileNotFoundError as err:          # e.g. small without its converted weights under models/
            result["profiles"][profile] = {"skipped": str(err)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
