"""The small profile's cost cuts, each measured side by side on the same clips and batches.

1. ``crop``: the Whisper encoder over each clip's own length (``model.audio.crop_to_clip``) against its fixed
   30 s window (the clips last at most 8 s): seconds to encode the clips, seconds per stage-1e training step
   (the LLM's answer loss on the same batches), and how well the audio projector reads each encoding: the
   CTC warm-up's val WER after the same steps (the WER both ways).
2. ``ctc_vocab``: the warm-up's CTC over the tokens the training transcripts use ("seen") against the LLM's
   whole 49K-token vocabulary ("all"): seconds per warm-up step and val WER after the same steps.
3. ``cached frames``: the warm-up encodes each clip once and reuses its frames (the encoder is frozen there);
   the alternative, an encoder pass per step, costs what encoding a batch costs, which arm 1 measures.
4. ``mixed_precision``: stage-1e steps under bf16 autocast (``train.mixed_precision: bf16``) against fp32, on the
   same batches: seconds per step and the training loss.

Frozen modules do no gradient work already: a frozen module's parameters have ``requires_grad=False`` and
the frozen towers come before anything trainable, so autograd records nothing for them
(``omni_core/train/freezing.py``).

Runs on the small pipeline's prepared data and converted weights (``make repro PROFILE=small`` makes them, or
``python -m omni_core.data prepare`` with the small profile), on a subset of the asr_open clips; writes
``benchmarks/results/small_costs.json``. About 30 min on 2 CPU cores.

    python benchmarks/bench_small_costs.py [--clips 1000] [--warmup-steps 200] [--lm-steps 8]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from omni_core.config import REPO_ROOT, load_config  # noqa: E402
from omni_core.data.manifest import read_manifest, write_manifest  # noqa: E402
from omni_core.eval.runner import cpu_model  # noqa: E402
from omni_core.train.loop import train_stage  # noqa: E402
from omni_core.train.model_init import init_model  # noqa: E402
from omni_core.train.warmup.audio_encoder import SpeechClips  # noqa: E402
from omni_core.train.warmup.audio_projector import encode_clips, warm_up_audio_projector  # noqa: E402

STAGE = "1e_audio"


def subset(data: Path, out: Path, clips: int, val: int) -> Path:
    """``out``: the first ``clips`` asr_open train clips and ``val`` val clips of ``data``, the media hard-linked
    (the manifests' media must lie inside their folder)."""
    for split, n in (("train", clips), ("val", val), ("test", 0)):
        rows = [r for r in read_manifest(data / f"{split}.jsonl") if r["task"] == "asr_open"][:n]
        write_manifest(out / f"{split}.jsonl", rows)
        for r in rows:
            for part in r["messages"][0]["content"]:
                if part["type"] == "audio" and not (out / part["path"]).exists():
                    (out / part["path"]).parent.mkdir(parents=True, exist_ok=True)
                    os.link(data / part["path"], out / part["path"])
    shutil.copytree(data / "tokenizer", out / "tokenizer", dirs_exist_ok=True) if (data / "tokenizer").is_dir() else None
    return out


def asr_open_only() -> dict:
    """Stage 1e's mixture with every task but asr_open at weight 0 (the subset holds asr_open alone)."""
    base = load_config(REPO_ROOT / "params.yaml", profile="small").stage(STAGE).mixture
    return {task: float(task == "asr_open") for task in {**base, "asr_open": 1.0}}


def config(root: Path, work: Path, crop: bool, stage: dict, precision: str = "bf16"):
    return load_config(REPO_ROOT / "params.yaml", profile="small", overrides={
        "data": {"root": str(root)}, "model": {"audio": {"crop_to_clip": crop}},
        "train": {"checkpoints_dir": str(work / "checkpoints"), "log_dir": str(work / "logs"),
                  "mixed_precision": precision},
        "stages": {STAGE: {"init_from": None, **stage}}})


def encode_seconds(cfg, clips: int) -> dict:
    """Seconds to encode the subset's train clips with the stage's fresh model (the warm-up's first pass)."""
    st = cfg.stage(STAGE)
    model, _ = init_model(cfg, st, dtype=torch.float32)
    crop = model.config.audio_downsample if cfg.model.audio.crop_to_clip else None
    data = SpeechClips(Path(cfg.data.root) / "train.jsonl", cfg.model.audio.num_mel_bins, cfg.model.audio.window_seconds,
                       ("asr_open",), crop)
    t = time.perf_counter()
    frames = encode_clips(model.eval(), data, torch.device("cpu"))
    seconds = time.perf_counter() - t
    return {"clips": len(data), "encode_seconds": round(seconds, 1),
            "encoder_frames_per_clip": round(sum(f.shape[1] for f in frames) / len(frames), 1)}


def warm_up(cfg) -> dict:
    st = cfg.stage(STAGE)
    model, processor = init_model(cfg, st, dtype=torch.float32)
    out = warm_up_audio_projector(cfg, st, model, processor.tokenizer, torch.device("cpu"))
    return {"val_wer_start": round(out["projector_ctc_val_wer_start"], 1),
            "val_wer_end": round(out["projector_ctc_val_wer_end"], 1), "steps": out["projector_ctc_steps"],
            "seconds": round(out["projector_ctc_wall_s"], 1)}


def lm_steps(cfg) -> dict:
    summary = train_stage(cfg, STAGE)
    return {"steps": summary["steps"], "seconds_per_step": round(summary["wall_s"] / summary["steps"], 2),
            "train_loss": round(summary["train_loss"], 4)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(REPO_ROOT / "data/small"), help="the small profile's prepared data")
    ap.add_argument("--clips", type=int, default=1000, help="asr_open train clips in the subset")
    ap.add_argument("--val", type=int, default=60)
    ap.add_argument("--warmup-steps", type=int, default=200)
    ap.add_argument("--lm-steps", type=int, default=8)
    ap.add_argument("--workdir", default="/tmp/bench_small_costs")
    ap.add_argument("--out", default=str(REPO_ROOT / "benchmarks/results/small_costs.json"))
    args = ap.parse_args(argv)
    needed = [p for p in (Path(args.data) / "train.jsonl", REPO_ROOT / "models/small/smollm2-135m-instruct") if not p.exists()]
    if needed:
        raise SystemExit(f"{', '.join(map(str, needed))} missing: the benchmark runs on the small pipeline's data and "
                         "weights; make them with `dvc repro small/dvc.yaml:prepare_data` (or `make repro PROFILE=small`)")
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    root = subset(Path(args.data), work / "data", args.clips, args.val)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    warm = {"audio_projector_ctc_steps": args.warmup_steps, "mixture": asr_open_only()}
    lm = {"steps": args.lm_steps, "audio_projector_ctc_steps": 0, "mixture": asr_open_only(), "eval_every": 10_000,
          "save_every": 10_000, "val_samples": 16}
    result: dict = {"what": __doc__.split("\n\n")[0], "command": "python benchmarks/bench_small_costs.py "
                    + " ".join(argv if argv is not None else sys.argv[1:]),
                    "host": {"cpu": cpu_model(), "threads": torch.get_num_threads(), "torch": torch.__version__},
                    "note": "every arm in one process, one after the other; arms 1e steps: bf16 unless named fp32"}
    arms = {}
    seen, every = ({**warm, "audio_projector_ctc_vocab": v} for v in ("seen", "all"))
    for crop in (True, False):
        name = "crop" if crop else "window_30s"
        arm = encode_seconds(config(root, work / name, crop, seen), args.clips)
        arm["lm_step"] = lm_steps(config(root, work / f"{name}_lm", crop, lm))
        arm["ctc_warm_up_seen_vocab"] = warm_up(config(root, work / name, crop, seen))
        arms[name] = arm
        print(name, json.dumps(arm), flush=True)
    arms["crop"]["ctc_warm_up_all_vocab"] = warm_up(config(root, work / "crop_all", True, every))
    arms["crop"]["lm_step_fp32"] = lm_steps(config(root, work / "crop_lm_fp32", True, lm, precision="none"))
    print("crop, all vocab; fp32", json.dumps(arms["crop"]), flush=True)
    c, w = arms["crop"], arms["window_30s"]
    result["arms"] = arms
    result["ratios"] = {
        "encode_window_over_crop": round(w["encode_seconds"] / c["encode_seconds"], 2),
        "lm_step_window_over_crop": round(w["lm_step"]["seconds_per_step"] / c["lm_step"]["seconds_per_step"], 2),
        "lm_step_fp32_over_bf16": round(c["lm_step_fp32"]["seconds_per_step"] / c["lm_step"]["seconds_per_step"], 2),
        "warm_up_step_all_over_seen": round(c["ctc_warm_up_all_vocab"]["seconds"] / c["ctc_warm_up_seen_vocab"]["seconds"], 2),
        "ctc_val_wer_crop_minus_window": round(c["ctc_warm_up_seen_vocab"]["val_wer_end"]
                                               - w["ctc_warm_up_seen_vocab"]["val_wer_end"], 1),
        "ctc_val_wer_seen_minus_all": round(c["ctc_warm_up_seen_vocab"]["val_wer_end"]
                                            - c["ctc_warm_up_all_vocab"]["val_wer_end"], 1)}
    text = json.dumps(result, indent=1)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
