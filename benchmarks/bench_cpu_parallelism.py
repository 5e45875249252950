"""How to spend a small CPU's cores on one training stage (JSON on stdout), variants side by side:

- `eager`: how the pipeline trains: one process, torch's default threads, batches built in that process
  (`make repro` adds tcmalloc: the `tcmalloc` variant);
- `loader_worker`: the same with `data.num_workers: 1` (batches built in a DataLoader worker process);
- `compiled`: the same with each LLM decoder layer wrapped by `torch.compile` (inductor, CPU);
- `two_processes`: `torchrun --nproc_per_node 2`, DeepSpeed ZeRO-2 over gloo, one torch thread each, the
  same global batch (`train.backend: deepspeed`, `train.nproc: 2`, `train.threads: 1`);
- `omp_active`, `omp_passive`: `eager` with OpenMP's waiting threads spinning (`OMP_WAIT_POLICY=ACTIVE`) or
  sleeping (`PASSIVE`) instead of libgomp's default (spin a while, then sleep);
- `jemalloc`, `tcmalloc`: `eager` with that allocator preloaded (`LD_PRELOAD`; Debian packages libjemalloc2,
  which `make` does not install, and libtcmalloc-minimal4, which it does: `make repro` preloads it).

The `omp_*` and allocator variants change no arithmetic: their `same_train_loss_as_eager` must be true.

Each variant trains `--stage` for `--steps` steps in a fresh process, from the pipeline's checkpoint of the
stage it starts from (`dvc repro` first), into a temporary folder. `loop_s` is the stage's own `wall_s`
(its steps, validation and saves); `run_s` the whole process, start-up and compiling included. The variants
alternate round by round, so a slow minute on a shared machine hits all of them; read the ratios.
torch.compile keeps what it generated in its cache (/tmp/torchinductor_$USER), so `run_s` of `compiled`
is longer still on a machine that never compiled these layers.

    python benchmarks/bench_cpu_parallelism.py [--stage 1a_image_caption] [--steps 100] [--reps 2]
        [--variants eager,loader_worker,compiled,two_processes] [--out benchmarks/results/cpu_parallelism.json]
    python benchmarks/bench_cpu_parallelism.py --stage 1d_video --steps 60 --variants eager,omp_active,omp_passive,jemalloc,tcmalloc
"""
from __future__ import annotations

import argparse
import ctypes.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from omni_core.config import REPO_ROOT, load_config  # noqa: E402
from omni_core.eval.runner import cpu_model  # noqa: E402
from omni_core.train.launch import build_command, train  # noqa: E402

VARIANTS = ("eager", "loader_worker", "compiled", "two_processes", "omp_active", "omp_passive", "jemalloc", "tcmalloc")
EXTRA_SETS = {"loader_worker": ["data.num_workers=1"],
              "two_processes": ["train.backend=deepspeed", "train.nproc=2", "train.threads=1"]}
OMP_WAIT_POLICY = {"omp_active": "ACTIVE", "omp_passive": "PASSIVE"}
ALLOCATORS = {"jemalloc": ("jemalloc", "libjemalloc2"), "tcmalloc": ("tcmalloc_minimal", "libtcmalloc-minimal4")}


def variant_env(variant: str) -> dict[str, str]:
    """Environment variables of `variant` on top of the pipeline's."""
    if variant in OMP_WAIT_POLICY:
        return {"OMP_WAIT_POLICY": OMP_WAIT_POLICY[variant]}
    if variant in ALLOCATORS:
        name, package = ALLOCATORS[variant]
        lib = ctypes.util.find_library(name)
        if lib is None:
            raise SystemExit(f"variant {variant}: lib{name} not found; install it (apt-get install {package}) or drop "
                             "the variant")
        return {"LD_PRELOAD": lib}
    return {}


def _sets(work: Path, stage: str, steps: int, variant: str) -> list[str]:
    return [f"train.checkpoints_dir={work / 'checkpoints'}", f"train.log_dir={work / 'logs'}",
            f"stages.{stage}.steps={steps}", *EXTRA_SETS.get(variant, [])]


def _compile_llm_layers() -> None:
    """Make `init_model` return models whose LLM decoder layers are compiled (parameter names unchanged)."""
    import omni_core.train.loop as loop

    plain = loop.init_model

    def compiled(*args, **kwargs):
        model, processor = plain(*args, **kwargs)
        for layer in model.llm.model.layers:
            layer.compile()
        return model, processor

    loop.init_model = compiled


def worker(variant: str, work: Path, stage: str, steps: int) -> None:
    """One variant in this process (`two_processes` is launched by `run_variant` itself)."""
    if variant == "compiled":
        _compile_llm_layers()
    summary = train(stage, sets=_sets(work, stage, steps, variant))
    print(json.dumps(summary, indent=1, default=str))


def run_variant(variant: str, stage: str, steps: int, start: Path) -> dict:
    """Train `stage` once in a fresh process (or two) and return its timings and final train loss."""
    with tempfile.TemporaryDirectory(prefix=f"bench_{variant}_") as tmp:
        work = Path(tmp)
        shutil.copytree(start / "model", work / "checkpoints" / start.name / "model")
        if variant == "two_processes":
            cmd = build_command(stage, sets=_sets(work, stage, steps, variant), nproc=2, launcher="torchrun")
        else:
            cmd = [sys.executable, __file__, "--worker", variant, "--work", str(work), "--stage", stage,
                   "--steps", str(steps)]
        t0 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT,
                              env={**os.environ, "HF_HUB_OFFLINE": "1", "DS_ACCELERATOR": "cpu", **variant_env(variant)})
        run_s = time.perf_counter() - t0
        if done.returncode != 0:
            raise RuntimeError(f"variant {variant} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    out = done.stdout.splitlines()        # ends with the summary, indented JSON (as `python -m omni_core.train`)
    summary = json.loads("\n".join(out[max(i for i, ln in enumerate(out) if ln == "{"):]))
    return {"loop_s": summary["wall_s"], "run_s": run_s, "train_loss": summary["train_loss"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stage", default="1a_image_caption")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results" / "cpu_parallelism.json"))
    p.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    p.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args.worker, args.work, args.stage, args.steps)
        return 0
    variants = args.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        p.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    for variant in variants:            # a missing allocator fails now, not after the other variants' minutes
        variant_env(variant)
    cfg = load_config()
    start_name = cfg.stage(args.stage).init_from
    start = REPO_ROOT / cfg.train.checkpoints_dir / str(start_name)
    if start_name is None or not (start / "model" / "config.json").exists():
        p.error(f"stage {args.stage} starts from {start / 'model'}, which is missing: run `dvc repro` first")
    runs: dict[str, list[dict]] = {a: [] for a in variants}
    for rep in range(args.reps):
        for variant in variants:
            runs[variant].append(run_variant(variant, args.stage, args.steps, start))
            print(f"round {rep + 1}, {variant}: {runs[variant][-1]}", file=sys.stderr, flush=True)
    median = {a: {k: statistics.median(r[k] for r in runs[a]) for k in ("loop_s", "run_s")} for a in variants}
    base = median.get("eager")
    result = {
        "host": {"cpu": cpu_model(), "cores": os.cpu_count(),
                 "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()},
        "stage": args.stage, "steps": args.steps, "reps": args.reps, "runs": runs, "median": median,
        "ratio_to_eager": ({a: {k: round(median[a][k] / base[k], 3) for k in base} for a in variants} if base else None),
        "same_train_loss_as_eager": ({a: runs[a][0]["train_loss"] == runs["eager"][0]["train_loss"] for a in variants}
                                     if base else None),
    }
    text = json.dumps(result, indent=1)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
