"""Does the vision stand-in need to know shapes? Stage 0_vision's two objectives, side by side, on VQA.

image_vqa asks about drawn scenes: how many shapes, what colour or which shape sits in a quadrant, where a
shape is. A pretrained SigLIP knows shapes and colours; the tiny profile's stand-in (stage 0_vision) only
knew what it was trained on. Each variant trains, from `checkpoints/0_text`, through the pipeline's own code:

- stage 0_vision with one objective: `digit_word_classification` (MNIST digits and printed words, the
  earlier recipe) or `digit_word_shape_classification` (also single drawn shapes, each
  labelled with its shape and its colour by two heads; never a scene's layout);
- stage 1a as the recipe has it (starting from that 0_vision; the audio stand-in plays no part here);
- stage 1b on image_vqa alone for `--steps` steps of 16 (the recipe mixes it with OCR and captions),

then scores image_vqa on the 300 test scenes, split by question kind. Chance is the evaluator's baseline
(each question's most common training answer). Prints JSON (also written to `--out`).

    python benchmarks/bench_scene_reading.py [--seeds 0 1] [--steps 300]   # after `make repro`; ~2.5 min a variant
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shutil
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from variants import run_variants  # noqa: E402  (benchmarks/variants.py)

from omni_core.config import REPO_ROOT, load_config  # noqa: E402
from omni_core.eval.ablation import train_stages, variant_overrides  # noqa: E402
from omni_core.eval.runner import evaluate  # noqa: E402

OBJECTIVES = ("digit_word_classification", "digit_word_shape_classification")
KINDS = {"How many": "count", "What colour": "colour", "What shape": "shape", "Where is": "position"}


def question_kinds(test_manifest: Path) -> dict[str, str]:
    """Sample id -> the kind of its image_vqa question."""
    kinds = {}
    for line in test_manifest.read_text().splitlines():
        rec = json.loads(line)
        if rec["task"] == "image_vqa":
            q = next(p["text"] for p in rec["messages"][0]["content"] if p["type"] == "text")
            kinds[rec["id"]] = next(k for prefix, k in KINDS.items() if q.startswith(prefix))
    return kinds


def run_variant(workdir: Path, objective: str, seed: int, steps: int, kinds: dict[str, str]) -> dict:
    overrides = variant_overrides(workdir, "variant")
    overrides["train"]["seed"] = seed
    overrides["stages"] = {"0_vision": {"objective": objective},
                           "1a_image_caption": {"init_from": "0_vision"},
                           "1b_image_vqa": {"steps": steps, "mixture": {"image_vqa": 1.0, "ocr": 0, "image_caption": 0,
                                                                        "text_instruct": 0}}}
    checkpoints = workdir / "variant" / "checkpoints"
    checkpoints.mkdir(parents=True)
    shutil.copytree(REPO_ROOT / "checkpoints" / "0_text", checkpoints / "0_text",
                    ignore=shutil.ignore_patterns("state"))
    t0 = time.perf_counter()
    train_stages(["0_vision", "1a_image_caption", "1b_image_vqa"], REPO_ROOT / "params.yaml", overrides)
    train_s = time.perf_counter() - t0
    cfg = load_config(REPO_ROOT / "params.yaml", overrides=overrides)
    res = evaluate(cfg, checkpoints / "1b_image_vqa" / "model", split="test", tasks=["image_vqa"], write=False)
    task = res["tables"]["image"]["tasks"]["image_vqa"]
    right = defaultdict(lambda: [0, 0])
    for p in res["predictions"]["image_vqa"]:
        right[kinds[p["id"]]][0] += p["prediction"] == p["reference"]
        right[kinds[p["id"]]][1] += 1
    warmup = json.loads((workdir / "variant" / "logs" / "0_vision" / "metrics.json").read_text())
    return {"train_s": round(train_s, 1),
            "stand_in_val": {k: round(v, 1) for k, v in warmup.items() if k.startswith("val_") and k.endswith("_end")},
            "image_vqa_percent": round(task["accuracy"], 1), "chance_percent": round(task["chance"]["accuracy"], 1),
            "margin_ci95": [round(v, 1) for v in task["margin_ci95"]["accuracy"]],
            "by_kind": {k: f"{r}/{n}" for k, (r, n) in sorted(right.items())}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--steps", type=int, default=300, help="steps of image_vqa alone in stage 1b")
    ap.add_argument("--out", default="benchmarks/results/scene_reading.json")
    args = ap.parse_args()
    if not (REPO_ROOT / "checkpoints" / "0_text" / "model").exists():
        raise SystemExit("checkpoints/0_text/model is missing: run `make repro` (or `dvc repro train@0_text`) first")
    kinds = question_kinds(REPO_ROOT / load_config().data.root / "test.jsonl")
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "steps": args.steps, "batch": 16,
              "test_questions": len(kinds)}
    run_variants({f"{objective} seed {seed}": functools.partial(run_variant, objective=objective, seed=seed,
                                                                 steps=args.steps, kinds=kinds)
                  for seed in args.seeds for objective in OBJECTIVES}, result, args.out, prefix="scene_reading_")

if __name__ == "__main__":
    main()
