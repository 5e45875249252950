"""Does the tiny model read the image? Four ways to train stage 1a on digit captions, side by side.

The tiny run's answers depend on the *kind* of input, not its content (README, "Results of the tiny
profile", the "Why" list). This isolates the two suspects on the simplest content there is, the digit in
"A handwritten digit four.", from the same `checkpoints/0_text` LM:

- the vision encoder: random init (the tiny recipe before stage 0_vision) or the pipeline's stand-in for a
  pretrained SigLIP (`checkpoints/0_vision`: the same tower trained to classify MNIST digits of the
  source's *train* split), then frozen;
- the LLM: frozen (the paper's stage 1a: only the projector, plus the encoder when it is random)
  or trained at the same learning rate.

Each variant trains `--steps` steps of 16 digit-caption samples of `data/prepared/train.jsonl` (MNIST and
sklearn digits; packed like the pipeline) with AdamW at a constant lr, gradients clipped at 1. Score: forced choice among the
ten digit words (the caption with each digit, ranked by the model's log-likelihood), on the first 60
train and all test digit captions; chance is about 10 %. Prints JSON (also written to `--out`).

    python benchmarks/bench_media_reading.py [--steps 200]   # after `make repro` (needs 0_text and 0_vision)
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import random
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from omni_core.config import REPO_ROOT, StageConfig, load_config  # noqa: E402
from omni_core.data import sources as S  # noqa: E402
from omni_core.data.collate import PackCollator, pad_collate  # noqa: E402
from omni_core.data.dataset import OmniDataset  # noqa: E402
from omni_core.eval.runner import load_checkpoint  # noqa: E402
from omni_core.model.labels import IGNORE_INDEX  # noqa: E402
from omni_core.train.freezing import param_groups  # noqa: E402

DIGITS = list(S.DIGIT_WORDS)
DIGIT_SOURCES = ("mnist", "sklearn-digits")
VARIANTS = {   # name -> (encoder, lr per module); 0 / absent = frozen
    "random encoder, LLM frozen (tiny 1a)": ("random", {"vision_encoder": 1e-3, "vision_projector": 1e-3}),
    "random encoder, LLM trains": ("random", {"vision_encoder": 1e-3, "vision_projector": 1e-3, "llm": 1e-3}),
    "pretrained encoder frozen, LLM frozen (paper 1a)": ("pretrained", {"vision_projector": 1e-3}),
    "pretrained encoder frozen, LLM trains": ("pretrained", {"vision_projector": 1e-3, "llm": 1e-3}),
}


def digit_captions(data: Path, split: str, processor) -> OmniDataset:
    ds = OmniDataset(data / f"{split}.jsonl", processor, tasks=["image_caption"])
    keep = [i for i, r in enumerate(ds.records) if r.get("source") in DIGIT_SOURCES]
    ds.records, ds.lines = [ds.records[i] for i in keep], [ds.lines[i] for i in keep]
    return ds


def gold_digit(record: dict) -> str:
    words = record["messages"][-1]["content"][0]["text"].rstrip(".").split()
    return [w for w in words if w in DIGITS][-1]


@torch.no_grad()
def forced_choice(model, ds: OmniDataset, n: int) -> float:
    """% of captions whose own digit gives the highest log-likelihood of the ten digit versions."""
    model.eval()
    right = 0
    for rec in ds.records[:n]:
        gold = gold_digit(rec)
        variants = []
        for d in DIGITS:
            msgs = copy.deepcopy(rec["messages"])
            text = msgs[-1]["content"][0]["text"]
            msgs[-1]["content"][0]["text"] = text.replace(gold, d)
            variants.append(ds.processor(msgs, base_dir=ds.base_dir))
        b = pad_collate(variants)
        logits = model(**{k: v for k, v in b.items() if k != "labels"}).logits[:, :-1].float()
        targets = b["labels"][:, 1:]
        logp = logits.log_softmax(-1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        score = (logp * (targets != IGNORE_INDEX)).sum(1)
        right += DIGITS[int(score.argmax())] == gold
    return 100.0 * right / min(n, len(ds.records))


def train_variant(model, processor, train: OmniDataset, lrs: dict, steps: int, seq_len: int, seed: int) -> list[float]:
    stage = StageConfig(name="bench", lr=lrs, steps=steps)
    groups = param_groups(model, stage)
    opt = torch.optim.AdamW(groups, lr=groups[0]["lr"])
    collate = PackCollator(seq_len, pad_token_id=processor.tokenizer.pad_token_id or 0)
    items = [train[i] for i in range(len(train))]
    rng = random.Random(seed)
    model.train()
    losses = []
    for _ in range(steps):
        loss = model(**collate(rng.sample(items, 16))).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default="checkpoints/0_text/model", help="the LM stand-in every variant starts from")
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--encoder", default="checkpoints/0_vision/model", help="the pretrained-encoder stand-in")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/media_reading.json")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    cfg = load_config()
    data = REPO_ROOT / args.data
    base, processor = load_checkpoint(cfg, REPO_ROOT / args.checkpoint, "cpu")
    train, test = digit_captions(data, "train", processor), digit_captions(data, "test", processor)
    pretrained = load_checkpoint(cfg, REPO_ROOT / args.encoder, "cpu")[0].vision_encoder
    warmup_log = REPO_ROOT / cfg.train.log_dir / Path(args.encoder).parent.name / "metrics.json"   # dvclive summary
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}",
              "checkpoint": args.checkpoint, "encoder": args.encoder, "steps": args.steps, "batch": 16, "lr": 1e-3,
              "train_digit_captions": len(train), "test_digit_captions": len(test), "chance_percent": 10.0,
              "encoder_stand_in": json.loads(warmup_log.read_text()) if warmup_log.exists() else None, "arms": {}}
    for name, (encoder, lrs) in VARIANTS.items():
        model = copy.deepcopy(base)
        if encoder == "pretrained":
            model.vision_encoder.load_state_dict(pretrained.state_dict())
        t0 = time.perf_counter()
        losses = train_variant(model, processor, train, lrs, args.steps, cfg.stage("1a_image_caption").seq_len, args.seed)
        result["arms"][name] = {
            "train_s": round(time.perf_counter() - t0, 1),
            "loss_first_10": round(float(np.mean(losses[:10])), 3), "loss_last_20": round(float(np.mean(losses[-20:])), 3),
            "digit_accuracy_train_60": round(forced_choice(model, train, 60), 1),
            "digit_accuracy_test": round(forced_choice(model, test, len(test.records)), 1)}
        print(name, result["arms"][name], flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
