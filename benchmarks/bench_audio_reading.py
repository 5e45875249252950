"""Does the LLM hear what the audio encoder hears? Stage 1e with and without the projector's CTC warm-up,
and at two lengths, side by side, on spoken digits.

The asr task mixes two kinds of sentence: task phrases ("the red circle is at the top left", where a
template and a few likely words go a long way) and connected digits ("two eight five", where every word
is one of ten and nothing predicts it). Stage 0_audio's CTC head reads both from the encoder's frames
(its `val/wer`, ~20 %); whether the LLM reads them through the projector is what stage 1e must teach.
Each variant trains stage 1e through the pipeline's own code, from the pipeline's `checkpoints/1d_video`
(the recipe's mixture and learning rates; only its steps, its `audio_projector_ctc_steps` and the seed
change), then transcribes the asr test split and reports, per kind of sentence, the word error rate, and
for the digit strings how often each of the three digits is right (chance: 10 %). Prints JSON (also
written to `--out`).

    python benchmarks/bench_audio_reading.py [--variants 200:0 400:0 200:600] [--seeds 0 1]   # after `make repro`
                                                 # a variant is STEPS:WARM_UP_STEPS; ~1-2.5 min a variant
"""
from __future__ import annotations

import argparse
import functools
import os
import platform
import shutil
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from variants import run_variants  # noqa: E402  (benchmarks/variants.py)

from omni_core.config import REPO_ROOT, load_config  # noqa: E402
from omni_core.data.sources import DIGIT_WORDS  # noqa: E402
from omni_core.eval.ablation import train_stages, variant_overrides  # noqa: E402
from omni_core.eval.metrics import normalize_transcript, wer  # noqa: E402
from omni_core.eval.runner import evaluate  # noqa: E402

STAGE, INIT = "1e_audio", "1d_video"


def is_digit_string(transcript: str) -> bool:
    words = normalize_transcript(transcript).split()
    return len(words) == 3 and all(w in DIGIT_WORDS for w in words)


def reading(predictions: list[dict]) -> dict:
    """WER per kind of sentence, and the share of digit strings with each position's digit right."""
    digits = [p for p in predictions if is_digit_string(p["reference"])]
    phrases = [p for p in predictions if not is_digit_string(p["reference"])]
    right = [0, 0, 0]
    for p in digits:
        ref, hyp = normalize_transcript(p["reference"]).split(), normalize_transcript(p["prediction"]).split()
        for k in range(3):
            right[k] += len(hyp) > k and hyp[k] == ref[k]
    return {"digit_strings": len(digits), "phrases": len(phrases),
            "wer_digit_strings": round(wer([p["prediction"] for p in digits], [p["reference"] for p in digits]), 1),
            "wer_phrases": round(wer([p["prediction"] for p in phrases], [p["reference"] for p in phrases]), 1),
            "digit_right_percent_by_position": [round(100 * r / len(digits), 1) for r in right]}


def run_variant(workdir: Path, steps: int, warm_up: int, seed: int) -> dict:
    overrides = variant_overrides(workdir, "variant")
    overrides["train"]["seed"] = seed
    overrides["stages"] = {STAGE: {"steps": steps, "audio_projector_ctc_steps": warm_up}}
    checkpoints = workdir / "variant" / "checkpoints"
    checkpoints.mkdir(parents=True)
    shutil.copytree(REPO_ROOT / "checkpoints" / INIT, checkpoints / INIT, ignore=shutil.ignore_patterns("state"))
    t0 = time.perf_counter()
    train_stages([STAGE], REPO_ROOT / "params.yaml", overrides)
    train_s = time.perf_counter() - t0
    cfg = load_config(REPO_ROOT / "params.yaml", overrides=overrides)
    res = evaluate(cfg, checkpoints / STAGE / "model", split="test", tasks=["asr"], write=False)
    task = res["tables"]["audio"]["tasks"]["asr"]
    return {"train_s": round(train_s, 1), "wer": round(task["wer"], 1), "chance_wer": round(task["chance"]["wer"], 1),
            **reading(res["predictions"]["asr"])}


def variant_spec(text: str) -> tuple[int, int]:
    try:
        steps, warm_up = (int(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"variant {text!r} must be STEPS:WARM_UP_STEPS, e.g. 200:600") from None
    return steps, warm_up


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variants", nargs="+", type=variant_spec, default=[(200, 0), (400, 0), (200, 600)],
                    help="STEPS:WARM_UP_STEPS, stage 1e's steps and its audio projector CTC warm-up steps")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--out", default="benchmarks/results/audio_reading.json")
    args = ap.parse_args()
    if not (REPO_ROOT / "checkpoints" / INIT / "model").exists():
        raise SystemExit(f"checkpoints/{INIT}/model is missing: run `make repro` (or `dvc repro train@{INIT}`) first")
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "stage": STAGE, "batch": 16}
    run_variants({f"{steps} steps, warm-up {warm_up}, seed {seed}": functools.partial(run_variant, steps=steps,
                                                                                     warm_up=warm_up, seed=seed)
                  for seed in args.seeds for steps, warm_up in args.variants}, result, args.out, prefix="audio_reading_")

if __name__ == "__main__":
    main()
