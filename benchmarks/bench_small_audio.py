"""The small profile's audio branch on real speech: stage 1e from the pretrained backbones, then ASR scores.

The whole small chain (`dvc exp run -S profile=small`) takes about 2 h 15 min on 2 CPU cores (README,
"Scaling up"); its audio branch alone fits in a quarter of an hour and answers the real-speech question.
This trains stage `1e_audio` of configs/small.yaml by itself: SmolLM2-135M-Instruct (frozen, as in the
paper), the Whisper tiny.en encoder (lr 1e-5) and a fresh Conv-GMLP projector, converted from the pip wheels,
on the small profile's data (params.yaml's 1e mixture: asr, with captions and text replayed; the vision
tower is random, which only the replayed captions see). It then scores the test split of

- `asr`: the tasks' closed-vocabulary sentences spoken by the 4 flite voices (what 1e trains on);
- `asr_real`: the 10 real recordings of pocketsphinx-testdata (LibriVox, read cards), never trained on;
- `spoken_qa`: spoken arithmetic questions (1e trains transcription, not answering).

Everything goes to `--workdir` (converted weights, prepared data, checkpoint, metrics); the repo's
`models/`, `data/` and `checkpoints/` are not touched. Prints JSON (also written to `--out`).

    python benchmarks/bench_small_audio.py [--steps 120] [--workdir /tmp/bench_small_audio] [--out benchmarks/results/small_audio.json]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from omni_core.config import REPO_ROOT, load_config  # noqa: E402
from omni_core.data.prepare import prepare  # noqa: E402
from omni_core.eval.runner import evaluate  # noqa: E402
from omni_core.model.pretrained import SMOLLM2_DIR, WHISPER_DIR, convert_small_profile  # noqa: E402
from omni_core.train.loop import train_stage  # noqa: E402

STAGE, TASKS = "1e_audio", ("asr", "asr_real", "spoken_qa")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps of 1e (default: params.yaml's)")
    ap.add_argument("--workdir", default="/tmp/bench_small_audio")
    ap.add_argument("--params", default=str(REPO_ROOT / "params.yaml"))
    ap.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results" / "small_audio.json"))
    args = ap.parse_args(argv)
    wd = Path(args.workdir).resolve()
    models = wd / "models"
    stage = {"init_from": None}            # straight from the converted backbones: no other stage feeds audio
    if args.steps is not None:
        stage["steps"] = args.steps
    cfg = load_config(args.params, profile="small", overrides={
        "data": {"root": str(wd / "data")},
        "model": {"llm": {"path": str(models / Path(SMOLLM2_DIR).name)},
                  "tokenizer": {"path": str(models / Path(SMOLLM2_DIR).name)},
                  "audio": {"path": str(models / Path(WHISPER_DIR).name)}},
        "train": {"checkpoints_dir": str(wd / "checkpoints"), "log_dir": str(wd / "logs")},
        "stages": {STAGE: stage},
        "eval": {"metrics_dir": str(wd / "metrics")}})
    seconds: dict[str, float] = {}

    t = time.perf_counter()
    convert_small_profile(models)                         # skipped when already converted
    seconds["convert_weights"] = time.perf_counter() - t
    t = time.perf_counter()
    if not (wd / "data" / "test.jsonl").exists():
        prepare(cfg, wd / "data")
    seconds["prepare_data"] = time.perf_counter() - t
    t = time.perf_counter()
    summary = train_stage(cfg, STAGE)
    seconds["train"] = time.perf_counter() - t
    t = time.perf_counter()
    res = evaluate(cfg, wd / "checkpoints" / STAGE / "model", tasks=TASKS)
    seconds["evaluate"] = time.perf_counter() - t

    audio = res["tables"]["audio"]["tasks"]
    out = {
        "what": "configs/small.yaml stage 1e_audio alone from the converted SmolLM2-135M-Instruct + Whisper tiny.en",
        "steps": summary["steps"], "batch_size": cfg.stage(STAGE).batch_size,
        "lr": {k: v for k, v in cfg.stage(STAGE).lr.items() if v > 0},
        "val_loss": [summary.get("val_loss_start"), summary.get("val_loss_end")],
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "seconds_per_step": round(summary["wall_s"] / max(summary["steps"], 1), 2) if summary.get("wall_s") else None,
        "tasks": audio,
        "asr_real_examples": res["predictions"]["asr_real"][:5],
        "settings": res["settings"],
    }
    text = json.dumps(out, indent=1)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")
    return out


if __name__ == "__main__":
    main()
