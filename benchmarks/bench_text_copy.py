"""Which learning rate lets the tiny LM learn to copy from its prompt? Stage 0_text's lr, side by side.

text_instruct ("Repeat the words: ...", "What is the last word: ...", "Which is larger, 53 or 6?") is
answered by copying from the prompt, which needs an induction circuit. At lr 3e-3 stage 0_text never forms
it: the final model answers 1-2 % of text_instruct exactly. This trains
the tiny profile's LM from scratch (the params.yaml sizes, the prepared tokenizer and chat template) on
fresh instructions of the task's generator, one variant per learning rate, same seed and samples, AdamW with
warm-up + cosine (the pipeline's schedule), gradients clipped at 1. Score: exact match of the whole
answer under teacher forcing (every answer token is the argmax) on 256 held-out instructions, every
`--eval-every` steps. Prints JSON (also written to `--out`).

    python benchmarks/bench_text_copy.py [--steps 250 --batch-size 32]   # after `make data` (needs the tokenizer)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from omni_core.config import REPO_ROOT, load_config  # noqa: E402
from omni_core.data.collate import pad_collate  # noqa: E402
from omni_core.data.tasks import TASK_WORDS, _instruction  # noqa: E402
from omni_core.eval.runner import cpu_model  # noqa: E402
from omni_core.model.labels import IGNORE_INDEX  # noqa: E402
from omni_core.model.omni import omni_config  # noqa: E402
from omni_core.model.tokenizer import load_tokenizer  # noqa: E402
from omni_core.train.schedule import lr_factor  # noqa: E402


def encode(tok, rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """One instruction as (input ids, labels): the prompt unsupervised, the answer and end-of-turn supervised."""
    q, a = _instruction(rng, list(TASK_WORDS))
    prompt = tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    y = tok(a + "<|im_end|>", add_special_tokens=False)["input_ids"]
    return p + y, [IGNORE_INDEX] * len(p) + y


def batch(tok, rng: np.random.Generator, n: int) -> dict[str, torch.Tensor]:
    """``n`` fresh instructions, right-padded as the pipeline pads (``data.collate.pad_collate``)."""
    rows = [encode(tok, rng) for _ in range(n)]
    return pad_collate([{"input_ids": torch.tensor(x), "labels": torch.tensor(y)} for x, y in rows],
                       pad_token_id=tok.pad_token_id or 0)


@torch.no_grad()
def exact(model, val: dict[str, torch.Tensor]) -> float:
    model.eval()
    pred = model(input_ids=val["input_ids"], attention_mask=val["attention_mask"]).logits[:, :-1].argmax(-1)
    y = val["labels"][:, 1:]
    model.train()
    return round(100 * float(((pred == y) | (y == IGNORE_INDEX)).all(1).float().mean()), 1)


def run_variant(cfg, tok, lr: float, steps: int, batch_size: int, eval_every: int, seed: int) -> dict:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(omni_config(cfg.model, tok).text_config)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, steps, 0.05, 0.1))
    rng, val = np.random.default_rng(seed), batch(tok, np.random.default_rng(seed + 1000), 256)
    curve, losses, t0 = {0: exact(model, val)}, [], time.perf_counter()
    for step in range(1, steps + 1):
        loss = model(**batch(tok, rng, batch_size)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(), sched.step(), opt.zero_grad()
        losses.append(float(loss.detach()))
        if step % eval_every == 0 or step == steps:
            curve[step] = exact(model, val)
    return {"lr": lr, "exact_by_step": curve, "final_exact": curve[steps],
            "train_loss_last_20": round(float(np.mean(losses[-20:])), 3), "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lrs", type=float, nargs="+", default=[3e-4, 1e-3, 3e-3])
    ap.add_argument("--steps", type=int, default=250)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(REPO_ROOT / "benchmarks/results/text_copy.json"))
    args = ap.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    cfg = load_config(REPO_ROOT / "params.yaml")
    tok_dir = Path(cfg.data.root) / "tokenizer"
    if not (REPO_ROOT / tok_dir).exists() and not tok_dir.exists():
        raise SystemExit(f"{tok_dir} does not exist: prepare the data first (make data, or dvc repro prepare_data)")
    # with the chat template and special tokens, as training uses
    tok = load_tokenizer(tok_dir, cfg.model.trust_remote_code)
    variants = [run_variant(cfg, tok, lr, args.steps, args.batch_size, args.eval_every, args.seed) for lr in args.lrs]
    result = {"benchmark": "text_copy", "steps": args.steps, "batch_size": args.batch_size, "seed": args.seed,
              "score": "teacher-forced exact match %, 256 held-out instructions", "arms": variants,
              "pipeline_0_text_lr": cfg.stage("0_text").lr.get("llm"),
              "machine": {"cpu": cpu_model(), "torch_threads": torch.get_num_threads(),
                          "python": platform.python_version(), "torch": torch.__version__}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
