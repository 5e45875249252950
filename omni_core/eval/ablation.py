"""The paper's ablations at our scale, one variant at a time (DVC runs each variant as a stage), plus token budgets.

*Audio downsampling* (paper Figure 6): Conv-GMLP rate n in {2, 4, 8} -> ASR WER against audio tokens
per second (50 / n). A variant starts from the recipe's checkpoint before the audio stage, swaps in a
fresh Conv-GMLP of rate n (every other weight is kept), trains the audio stage and scores ASR.

*Staging*: the same compute spent on one joint mixture of every task (all modules trainable from the
start) versus the recipe's stages. Both start from the tiny profile's stand-ins for pretrained weights
(stages ``0_*``, the main run's checkpoints); the joint variant's steps are chosen so it sees as many tokens
(steps x batch x grad_accum x seq_len) as the recipe's stages after them.

*Seeds*: the staged variant again with other values of ``train.seed`` (the same stand-ins; the draw of fresh
weights, data order and sampling after them changes). A tiny score moves by several points between draws,
so "above chance" is only a claim when it holds in every draw, and "clearly" when the margin's interval
(``margin_ci95``) stays above 0 in every draw.

Each variant trains under ``<workdir>/<variant>/`` (checkpoints, logs: DVC-cached, machine-local) and writes its
result to ``<results>/<variant>.json`` (``metrics/ablations/<kind>/``, committed to git), which ``collect_*`` read
back for notebook 07: the notebook draws the committed results in seconds on a fresh clone.
"""
from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Iterable, Sequence
from itertools import takewhile
from pathlib import Path
from typing import Any

from omni_core.config import MODULES, Config, StageConfig, load_config, merge_overrides

from .metrics import TASKS, higher_is_better, relative_to_chance, score_ci, task_spec

DOWNSAMPLE_RATES = (2, 4, 8)
RESULTS_DIR = Path("metrics/ablations")     # one folder per kind: downsample/, staging/, seeds/


# ------------------------------------------------------------------------------------------ helpers
def _dotted(d: dict, prefix: str = "") -> list[str]:
    """Nested overrides -> ``key=value`` strings for ``python -m omni_core.train --set`` (JSON is YAML)."""
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and not (key.endswith(".mixture") or key.endswith(".lr")):
            out += _dotted(v, key + ".")
        else:
            out.append(f"{key}={json.dumps(v)}")
    return out


def variant_overrides(workdir: str | Path, variant: str) -> dict:
    """Redirect a variant's checkpoints, logs and metrics under ``<workdir>/<variant>/``."""
    root = Path(workdir) / variant
    return {"train": {"checkpoints_dir": str(root / "checkpoints"), "log_dir": str(root / "logs")},
            "eval": {"metrics_dir": str(root / "metrics")}}


def train_stages(stages: Sequence[str], params: str | Path, overrides: dict, profile: str | None = None,
                 log_file: str | Path | None = None) -> None:
    """Train each stage in order with the same overrides (log lines appended to ``log_file``): in this
    process when the config asks for one (it has torch and transformers imported already, which a new
    interpreter spends ~10 s on per stage), else through torchrun / deepspeed."""
    from omni_core.train.launch import train

    for stage in stages:
        train(stage, params=params, profile=profile, sets=_dotted(overrides), log_file=log_file)


def _write(path: Path, result: dict) -> dict:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return result


def _headlines(results: dict) -> tuple[dict[str, float], dict[str, float], dict[str, list[float]]]:
    """(measured, chance, margin_ci95) of each task's headline metric from an ``evaluate`` result."""
    measured, chance, margins = {}, {}, {}
    for table in results["tables"].values():
        for task, res in table["tasks"].items():
            m = task_spec(task).metrics[0]
            if m in res:
                measured[task] = res[m]
                if m in res.get("chance", {}):
                    chance[task] = res["chance"][m]
                if m in res.get("margin_ci95", {}):
                    margins[task] = res["margin_ci95"][m]
    return measured, chance, margins


# --------------------------------------------------------------------------------- audio downsampling
def copy_checkpoint(src: Path, dst: Path, how_to_make: str) -> None:
    """Copy a main-run checkpoint into a variant's checkpoints (replacing what is there)."""
    if not (src / "config.json").exists():
        raise FileNotFoundError(f"{src} holds no model: the ablation starts from the main run's checkpoint; "
                                f"{how_to_make}")
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)


def downsample_variant(cfg: Config, n: int, workdir: str | Path, params: str | Path = "params.yaml",
                       audio_stage: str = "1e_audio", tasks: Sequence[str] = ("asr", "asr_real"),
                       profile: str | None = None, results: str | Path = RESULTS_DIR / "downsample") -> dict:
    """Train ``audio_stage`` with Conv-GMLP rate ``n`` and score ASR; writes ``<results>/n<n>.json``.

    The variant starts from ``checkpoints/<init_from of audio_stage>/model`` of the main run (so the LLM and
    the vision side are the recipe's); the stage then builds a fresh audio projector at rate ``n``
    (``train.model_init.match_audio_rate``), as the main pipeline does when ``model.audio.downsample`` changes.
    """
    from omni_core.eval.runner import evaluate
    from omni_core.model.token_counts import audio_tokens_per_second

    started = time.perf_counter()
    variant = f"n{n}"
    over = merge_overrides(variant_overrides(workdir, variant), {"model": {"audio": {"downsample": n}}})
    variant_cfg = load_config(params, overrides=over, profile=profile)
    init_from = cfg.stage(audio_stage).init_from
    if init_from is None:
        raise ValueError(f"stages.{audio_stage}.init_from is null: the downsample ablation needs the checkpoint "
                         "the audio stage starts from")
    copy_checkpoint(Path(cfg.train.checkpoints_dir) / init_from / "model",
                    Path(variant_cfg.train.checkpoints_dir) / init_from / "model",
                    f"run `dvc repro train@{init_from}` first")
    train_stages([audio_stage], params, over, profile, log_file=Path(workdir) / variant / "train.log")
    ckpt = Path(variant_cfg.train.checkpoints_dir) / audio_stage / "model"
    res = evaluate(variant_cfg, ckpt, tasks=[t for t in tasks if t in TASKS])
    audio = res["tables"]["audio"]["tasks"]
    out: dict[str, Any] = {"n": n, "tokens_per_second": audio_tokens_per_second(n)}
    for task in tasks:
        if task in audio:
            sfx = "" if task == "asr" else f"_{task}"
            out[f"wer{sfx}"], out[f"cer{sfx}"] = audio[task]["wer"], audio[task]["cer"]
            rows = res["predictions"][task]
            out[f"wer{sfx}_ci95"] = score_ci("wer", [r["prediction"] for r in rows], [r["reference"] for r in rows],
                                             seed=variant_cfg.eval.seed)
            if "chance" in audio[task]:
                out[f"chance_wer{sfx}"] = audio[task]["chance"]["wer"]
    out["seconds"] = round(time.perf_counter() - started, 1)   # what one more rate costs on this machine
    out["settings"] = res["settings"]
    return _write(Path(results) / f"{variant}.json", out)


def collect_downsample(results: str | Path = RESULTS_DIR / "downsample") -> dict[int, dict]:
    """``{n: result}`` of every rate that has a result (input of ``plots.plot_downsample_ablation``)."""
    found = {int(f.stem[1:]): json.loads(f.read_text()) for f in Path(results).glob("n*.json") if f.stem[1:].isdigit()}
    return dict(sorted(found.items()))


# -------------------------------------------------------------------------------------------- staging
def recipe_stages(cfg: Config) -> list[str]:
    """Enabled stages in params order (the recipe)."""
    return [name for name, st in cfg.stages.items() if st.enabled]


def pretraining_stages(cfg: Config) -> list[str]:
    """The leading enabled stages named ``0_*``: the tiny profile's stand-ins for the pretrained weights the
    paper starts from (``0_text``: the LLM). Both variants of the staging ablation share them, since the paper's
    question is what comes after them: stages, or one joint mixture."""
    return list(takewhile(lambda name: name.startswith("0_"), recipe_stages(cfg)))


def stage_tokens(stage: StageConfig) -> int:
    """A stage's token budget, the unit the staging ablation holds equal: steps x batch x grad_accum x seq_len."""
    return stage.steps * stage.batch_size * stage.grad_accum * stage.seq_len


def joint_stage(cfg: Config) -> dict:
    """Overrides for a ``joint`` stage with the compute of the recipe's stages after the stand-ins: their
    last stage's mixture (every task), each module at the highest lr any of them gives it, the same audio
    projector warm-up, starting from the last stand-in's checkpoint (or fresh, like the recipe's first
    stage, when there is none)."""
    pre = pretraining_stages(cfg)
    names = recipe_stages(cfg)[len(pre):]
    if not names:
        raise ValueError("no enabled stages after the stand-ins (0_*) in the config; nothing to compare against")
    stages = [cfg.stages[n] for n in names]
    last = stages[-1]
    tokens = sum(stage_tokens(s) for s in stages)
    seq_len = max(s.seq_len for s in stages)
    mixture: dict[str, float] = {}
    for s in stages:
        for task, w in s.mixture.items():
            mixture[task] = max(mixture.get(task, 0.0), w)
    lr = {m: max(s.lr.get(m, 0.0) for s in stages) for m in MODULES}
    return {"init_from": pre[-1] if pre else cfg.stages[names[0]].init_from, "mixture": mixture,
            "steps": math.ceil(tokens / (last.batch_size * last.grad_accum * seq_len)),
            "batch_size": last.batch_size, "grad_accum": last.grad_accum, "seq_len": seq_len,
            "lr": {m: v for m, v in lr.items() if v > 0}, "warmup_ratio": last.warmup_ratio,
            "packing": last.packing, "audio_projector_ctc_steps": max(s.audio_projector_ctc_steps for s in stages)}


STAGING_VARIANTS = ("staged", "joint")


def variant_name(variant: str, seed: int | None = None) -> str:
    """``staged`` / ``joint``, or ``staged-seed1`` for a variant drawn with another ``train.seed``."""
    return variant if seed is None else f"{variant}-seed{seed}"


def staging_variant(cfg: Config, variant: str, workdir: str | Path, params: str | Path = "params.yaml",
                    profile: str | None = None, reuse_checkpoint: str | Path | None = None,
                    seed: int | None = None, results: str | Path = RESULTS_DIR / "staging") -> dict:
    """Run one variant (``staged``: every recipe stage; ``joint``: :func:`joint_stage`) and evaluate it on every
    task; writes ``<results>/<variant_name(variant, seed)>.json``. ``reuse_checkpoint`` evaluates an
    existing model instead of training (the main pipeline's ``checkpoints/2_sft/model`` is the staged variant);
    ``seed`` overrides ``train.seed`` for the variant's stages."""
    from omni_core.eval.runner import evaluate

    started = time.perf_counter()
    if variant not in STAGING_VARIANTS:
        raise ValueError(f"staging variant {variant!r}: choose 'staged' or 'joint'")
    if seed is not None and reuse_checkpoint is not None:
        raise ValueError("staging: --seed retrains the variant with that seed, --reuse evaluates a trained one; "
                         "give one of them")
    name = variant_name(variant, seed)
    over = variant_overrides(workdir, name)
    if seed is not None:
        over = merge_overrides(over, {"train": {"seed": seed}})
    if variant == "joint":
        over = merge_overrides(over, {"stages": {"joint": joint_stage(cfg)}})
    variant_cfg = load_config(params, overrides=over, profile=profile)
    pre = pretraining_stages(variant_cfg)
    stages = ["joint"] if variant == "joint" else recipe_stages(variant_cfg)[len(pre):]
    if reuse_checkpoint is None:
        for pre_stage in pre:    # the stand-ins for pretraining are the main run's, copied, not trained again
            copy_checkpoint(Path(cfg.train.checkpoints_dir) / pre_stage / "model",
                            Path(variant_cfg.train.checkpoints_dir) / pre_stage / "model",
                            f"run `dvc repro train@{pre_stage}` first")
        train_stages(stages, params, over, profile, log_file=Path(workdir) / name / "train.log")
        ckpt: str | Path = Path(variant_cfg.train.checkpoints_dir) / stages[-1] / "model"
    else:
        ckpt = reuse_checkpoint
    res = evaluate(variant_cfg, ckpt, write=reuse_checkpoint is None)   # a reused model's metrics are the main run's
    measured, chance, margins = _headlines(res)
    # "arm": the key of every result the ablations have written (collect_seeds reads it)
    return _write(Path(results) / f"{name}.json",
                  {"arm": variant, "seed": variant_cfg.train.seed, "stages": stages, "measured": measured,
                   "chance": chance, "margin_ci95": margins,
                   "tokens": sum(stage_tokens(variant_cfg.stages[s]) for s in stages),
                   "seconds": round(time.perf_counter() - started, 1), "settings": res["settings"]})


def collect_staging(results: str | Path = RESULTS_DIR / "staging") -> dict[str, dict[str, float]]:
    """``{"staged": {task: v}, "joint": {task: v}, "chance": {task: v}}`` (input of ``plot_staging_ablation``)."""
    out: dict[str, dict[str, float]] = {}
    for variant in STAGING_VARIANTS:
        f = Path(results) / f"{variant}.json"
        if f.exists():
            r = json.loads(f.read_text())
            out[variant] = r["measured"]
            out.setdefault("chance", {}).update(r["chance"])
    return out


def collect_seeds(results: Iterable[str | Path] = (RESULTS_DIR / "staging", RESULTS_DIR / "seeds"),
                  variant: str = "staged") -> dict[str, dict]:
    """``{"seeds": {seed: {task: v}}, "chance": {task: v}, "margins": {seed: {task: [low, high]}}}`` from every
    ``<results>/*.json`` of ``variant`` (the main run's staged variant is seed 0; the ``seeds`` stages add
    the others)."""
    seeds: dict[int, dict[str, float]] = {}
    margins: dict[int, dict[str, list[float]]] = {}
    chance: dict[str, float] = {}
    for folder in results:
        for f in sorted(Path(folder).glob("*.json")):
            r = json.loads(f.read_text())
            if r.get("arm") == variant and "seed" in r:
                seeds[int(r["seed"])] = r["measured"]
                margins[int(r["seed"])] = r.get("margin_ci95", {})
                chance.update(r["chance"])
    return {"seeds": dict(sorted(seeds.items())), "chance": chance, "margins": dict(sorted(margins.items()))}


def seed_summary(per_seed: dict[int, dict[str, float]], chance: dict[str, float],
                 margins: dict[int, dict[str, list[float]]] | None = None) -> list[dict[str, Any]]:
    """Per task (in TASKS order): its headline metric's min / mean / max over the seeds, chance, and in how
    many seeds it beats chance (``worst_margin``: the smallest lead over chance, in the metric's units,
    positive = better; negative when some draw is at or below chance). With ``margins`` (``collect_seeds``)
    also ``clearly_above_chance``: the seeds whose margin's 95 % interval lies above 0."""
    rows = []
    for task in TASKS:
        values = [m[task] for m in per_seed.values() if task in m]
        if not values:
            continue
        metric = task_spec(task).metrics[0]
        higher = higher_is_better(metric)
        row: dict[str, Any] = {"task": task, "metric": metric, "higher_is_better": higher, "seeds": len(values),
                               "min": min(values), "mean": sum(values) / len(values), "max": max(values),
                               "chance": chance.get(task)}
        if row["chance"] is not None:
            leads = [relative_to_chance(v, row["chance"], higher) for v in values]
            row["above_chance"] = sum(m > 0 for m in leads)
            row["worst_margin"] = min(leads)
        intervals = [ci[task] for ci in (margins or {}).values() if ci.get(task) is not None]
        if intervals:
            row["clearly_above_chance"] = sum(lo > 0 for lo, _ in intervals)
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------- token budget
def token_budget(cfg: Config, max_seconds: int = 120, rates: Iterable[int] = DOWNSAMPLE_RATES) -> dict:
    """LLM tokens per modality for ``cfg``'s model (pass the full profile for the paper's scale), as curves for
    the figure, counted by `omni_core.model.token_counts` (the processor's and the model's own functions):
    image tiles x tokens per tile, video frames x tokens per frame (a square frame is one tile, the widest
    frame ``video_max_tiles`` tiles + the global view), audio 50 / n tokens per second."""
    from omni_core.model.token_counts import audio_num_tokens
    from omni_core.model.token_counts import token_budget as unit_budget

    v, a = cfg.model.vision, cfg.model.audio
    unit = unit_budget(v, a)
    per_tile = unit["image_tile_tokens"]
    seconds = list(range(1, max_seconds + 1))
    tiles = list(range(1, v.max_tiles + 1))
    frames = [min(v.video_max_frames, max(1, math.floor(s * v.video_fps))) for s in seconds]
    return {
        "scale": cfg.profile,
        # an image that fits one tile is that tile; a larger one is its AnyRes grid + 1 global thumbnail
        "image": {"tiles": tiles, "tokens": [per_tile if t == 1 else (t + 1) * per_tile for t in tiles],
                  "tokens_per_tile": per_tile},
        "video": {"seconds": seconds, "fps": v.video_fps, "max_frames": v.video_max_frames,
                  "tokens_per_frame": [unit["video_frame_tokens_min"], unit["video_frame_tokens_max"]],
                  "tokens_min": [f * unit["video_frame_tokens_min"] for f in frames],
                  "tokens": [f * unit["video_frame_tokens_max"] for f in frames]},
        "audio": {"seconds": seconds, "tokens": {str(n): [audio_num_tokens(s * a.sampling_rate, n) for s in seconds]
                                                 for n in rates}},
    }


# ------------------------------------------------------------------------------------------------ CLI
def main(argv: list[str] | None = None) -> None:
    """``python -m omni_core.eval.ablation downsample --n 4`` / ``... staging --variant joint`` (one DVC stage each)."""
    import argparse

    from omni_core.config import REPO_ROOT

    ap = argparse.ArgumentParser(prog="python -m omni_core.eval.ablation", description=__doc__.split("\n")[0])
    ap.add_argument("kind", choices=["downsample", "staging"])
    ap.add_argument("--n", type=int, help="Conv-GMLP rate (downsample): the paper's 2, 4, 8 or any rate "
                                          "model.audio.downsample accepts")
    ap.add_argument("--variant", dest="variant", choices=STAGING_VARIANTS, help="staging variant")
    ap.add_argument("--reuse", default=None, help="staging: evaluate this checkpoint instead of training the variant")
    ap.add_argument("--seed", type=int, default=None, help="staging: retrain the variant with this train.seed")
    ap.add_argument("--workdir", default=None, help="checkpoints and logs (default: ablations/<kind>)")
    ap.add_argument("--results", default=None, help="result JSON folder (default: metrics/ablations/<workdir's name>)")
    ap.add_argument("--params", default=str(REPO_ROOT / "params.yaml"))
    ap.add_argument("--profile", default=None)
    args = ap.parse_args(argv)
    cfg = load_config(args.params, profile=args.profile)
    workdir = args.workdir or f"ablations/{args.kind}"
    results = args.results or RESULTS_DIR / Path(workdir).name
    if args.kind == "downsample":
        if args.n is None:
            raise SystemExit("downsample needs --n (the paper's: 2, 4 or 8)")
        res = downsample_variant(cfg, args.n, workdir, args.params, profile=args.profile, results=results)
    else:
        if args.variant is None:
            raise SystemExit("staging needs --variant staged|joint")
        res = staging_variant(cfg, args.variant, workdir, args.params, args.profile, args.reuse, args.seed, results)
    print(json.dumps({k: v for k, v in res.items() if k != "settings"}, indent=1))


if __name__ == "__main__":
    main()
