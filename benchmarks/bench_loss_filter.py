"""Does the paper's loss-based SFT filter help at tiny scale? Stage 2_sft with and without it, side by side.

Both variants train stage 2_sft through the pipeline's own code from the pipeline's `checkpoints/1f_omni_alignment`
(the recipe's mixture, learning rates, steps and seed; only `stages.2_sft.loss_filter_k` differs: 0 = every
sample, k > 0 = the samples whose loss under the 1f model lies within their task's mean +/- k std,
omni_core/train/loss_filter.py), then evaluate the mixture's tasks on the test split (omni_core/eval/runner.py).
Prints JSON (also written to `--out`): per task the headline metric both ways (with chance), the training
samples the filter removed, and each variant's wall time (training, the filter's scoring included, and evaluation).

    python benchmarks/bench_loss_filter.py [--k 1.0] [--seed 0]      # after `make repro`; a few minutes a variant
    python benchmarks/bench_loss_filter.py --smoke                   # the same path on the tests' tiny fixtures
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from omni_core.config import REPO_ROOT, load_config  # noqa: E402
from omni_core.eval.ablation import _headlines, train_stages, variant_overrides  # noqa: E402
from omni_core.eval.metrics import TASKS, task_spec  # noqa: E402
from omni_core.eval.runner import evaluate  # noqa: E402
from omni_core.train.loss_filter import REPORT_FILE  # noqa: E402

STAGE, INIT = "2_sft", "1f_omni_alignment"
PARAMS = REPO_ROOT / "params.yaml"


def run_variant(workdir: Path, k: float, *, init_model_dir: Path, base: dict, seed: int) -> dict:
    """Train STAGE with `loss_filter_k = k` under `workdir` from a copy of `init_model_dir`, then evaluate it."""
    redirect = variant_overrides(workdir, "variant")
    overrides = {**base, "train": {**base.get("train", {}), **redirect["train"], "seed": seed},
                 "eval": {**base.get("eval", {}), **redirect["eval"]},
                 "stages": {**base.get("stages", {}), STAGE: {**base.get("stages", {}).get(STAGE, {}), "loss_filter_k": k}}}
    checkpoints = Path(redirect["train"]["checkpoints_dir"])
    shutil.copytree(init_model_dir, checkpoints / INIT / "model")
    t0 = time.perf_counter()
    train_stages([STAGE], PARAMS, overrides)
    train_s = time.perf_counter() - t0
    cfg = load_config(PARAMS, overrides=overrides)
    tasks = [t for t, w in cfg.stage(STAGE).mixture.items() if w > 0 and t in TASKS]
    t0 = time.perf_counter()
    res = evaluate(cfg, checkpoints / STAGE / "model", split="test", tasks=tasks, write=False)
    eval_s = time.perf_counter() - t0
    measured, chance, _ = _headlines(res)
    report_file = Path(redirect["train"]["log_dir"]) / STAGE / REPORT_FILE
    report = json.loads(report_file.read_text()) if k > 0 else None
    return {"train_s": round(train_s, 1), "eval_s": round(eval_s, 1), "steps": cfg.stage(STAGE).steps,
            "filter_score_s": report["score_s"] if report else 0.0,
            "measured": measured, "chance": chance,
            "removed": {t: r["before"] - r["after"] for t, r in report["per_task"].items()} if report else {},
            "trained_on": {t: r["after"] for t, r in report["per_task"].items()} if report else None}


def side_by_side(off: dict, on: dict, k: float) -> dict:
    on_key = f"k={k:g}"
    tasks = {}
    for task in off["measured"]:
        metric = task_spec(task).metrics[0]
        tasks[task] = {"metric": metric, "k=0": round(off["measured"][task], 2),
                       on_key: round(on["measured"].get(task, float("nan")), 2),
                       "chance": round(off["chance"][task], 2) if task in off["chance"] else None,
                       "removed": on["removed"].get(task, 0)}
    return {"tasks": tasks, "wall_s": {"k=0": {"train": off["train_s"], "eval": off["eval_s"]},
                                       on_key: {"train": on["train_s"], "filter_scoring": on["filter_score_s"],
                                                "eval": on["eval_s"]}}}


def smoke_setup(tmp: Path) -> tuple[Path, dict]:
    """The tests' tiny data and model (tests/train_fixtures.py): a fresh model stands in for the 1f checkpoint."""
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from train_fixtures import TINY_MODEL, make_tiny_data

    from omni_core.train.model_init import init_model
    from omni_core.train.run_state import export_model

    data = make_tiny_data(tmp / "data", n_train=6, n_val=4)
    base = {"model": TINY_MODEL, "data": {"root": str(data)}, "train": {"threads": 1},
            "eval": {"max_samples_per_task": 4, "batch_size": 8, "max_new_tokens": 4},
            "stages": {STAGE: {"steps": 2, "batch_size": 4, "seq_len": 128, "warmup_ratio": 0.0, "val_samples": 8,
                               "save_every": 1000, "eval_every": 1000}}}
    cfg = load_config(PARAMS, overrides=json.loads(json.dumps(base)))
    model, processor = init_model(cfg, cfg.stage("0_text"))   # 0_text starts from a fresh model
    export_model(model, processor, tmp / "init")
    return tmp / "init", base


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--k", type=float, default=1.0, help="the filtered variant's stages.2_sft.loss_filter_k (> 0)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="default: benchmarks/results/loss_filter.json (--smoke: not written)")
    ap.add_argument("--smoke", action="store_true",
                    help="run the whole path on the tests' tiny fixtures in a temporary folder (~1 min)")
    args = ap.parse_args()
    if args.k <= 0:
        raise SystemExit(f"--k {args.k}: the filtered variant needs k > 0 (the other variant is k = 0)")
    init = REPO_ROOT / "checkpoints" / INIT / "model"
    if not args.smoke and not (init / "config.json").exists():
        raise SystemExit(f"checkpoints/{INIT}/model is missing: run `make repro` (or `dvc repro train@{INIT}`) first")
    out = args.out or (None if args.smoke else "benchmarks/results/loss_filter.json")
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "stage": STAGE, "init": INIT,
              "seed": args.seed, "k": args.k, "smoke": args.smoke}
    with tempfile.TemporaryDirectory(prefix="loss_filter_") as tmp:
        base: dict = {}
        if args.smoke:
            init, base = smoke_setup(Path(tmp))
        variants = {}
        for k in (0.0, args.k):
            with tempfile.TemporaryDirectory(prefix=f"loss_filter_k{k:g}_", dir=tmp) as work:
                variants[k] = run_variant(Path(work), k, init_model_dir=init, base=base, seed=args.seed)
            print(f"k={k:g}", json.dumps(variants[k]), flush=True)
    result.update(steps=variants[0.0]["steps"], **side_by_side(variants[0.0], variants[args.k], args.k),
                  trained_on=variants[args.k]["trained_on"])
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
