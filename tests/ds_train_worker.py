"""Worker of test_train_deepspeed.py, run as `torchrun --nproc_per_node 2 tests/ds_train_worker.py OUT DATA`.

Trains one stage with ZeRO-2, with ZeRO-3 (gloo on CPU, torch optimizer, no JIT build), and with
ZeRO-2 killed after step 5 and resumed; rank 0 writes each run's losses and full (gathered) weights.
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from train_fixtures import tiny_cfg  # noqa: E402

from omni_core.config import REPO_ROOT  # noqa: E402
from omni_core.train.loop import train_stage  # noqa: E402

STAGE = "1f_omni_alignment"


def stage_override(base_mixture) -> dict:
    mixture = {**{t: 0.0 for t in base_mixture}, "image_caption": 1.0, "asr": 1.0}
    return {STAGE: {"init_from": None, "mixture": mixture, "steps": 8, "batch_size": 2, "warmup_ratio": 0.0,
                    "min_lr_ratio": 1.0, "val_samples": 8, "lr": {m: 2e-3 for m in (
                        "vision_encoder", "vision_projector", "video_projector", "audio_encoder",
                        "audio_projector", "llm")}}}


class Killed(RuntimeError):
    pass


def _kill_at(k):
    def on_step(step, metrics):
        if step == k:
            raise Killed
    return on_step


def gathered(model, zero3: bool) -> dict:
    params = list(model.parameters())
    if zero3:
        import deepspeed
        with deepspeed.zero.GatheredParameters(params):
            return {n: p.detach().clone() for n, p in model.named_parameters()}
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def main(out: Path, data: Path) -> None:
    torch.set_num_threads(1)
    from omni_core.config import load_config
    base = load_config(REPO_ROOT / "params.yaml").stages[STAGE].mixture
    for zero in ("zero2", "zero3", "zero2_resumed"):
        ds_file = REPO_ROOT / f"configs/deepspeed/{zero.split('_')[0]}.json"
        over = stage_override(base)
        if zero == "zero2_resumed":          # killed during step 5 (last save at 4), then resumed
            over[STAGE]["save_every"] = 4
        cfg = tiny_cfg(out / zero, data, stages=over, train={"backend": "deepspeed", "deepspeed_config": str(ds_file)})
        losses = []
        if zero == "zero2_resumed":
            try:
                train_stage(cfg, STAGE, progress=False, on_step=_kill_at(5))
            except Killed:
                pass
        res = train_stage(cfg, STAGE, progress=False, on_step=lambda s, m, out=losses: out.append(m["train/loss"]))
        weights = gathered(res["model"], zero == "zero3")
        if res["rank"] == 0:
            torch.save(weights, out / zero / "weights.pt")
            (out / zero / "result.json").write_text(json.dumps(
                {"losses": losses, "val_loss_start": res["val_loss_start"], "val_loss_end": res["val_loss_end"],
                 "world_size": res["world_size"], "train_loss": res["train_loss"]}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
