"""Worker of test_train_deepspeed.py, run as `torchrun --nproc_per_node 2 tests/ds_train_worker.py OUT DATA`.

Trains one stage with ZeRO-2, then with ZeRO-3 (gloo on CPU, torch optimizer, no JIT build), and
rank 0 writes each run's losses and the full (gathered) weights for the test to check.
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from omni_core.config import REPO_ROOT  # noqa: E402
from omni_core.train.loop import train_stage  # noqa: E402
from train_fixtures import tiny_cfg  # noqa: E402

STAGE = "1f_omni_alignment"


def stage_override(base_mixture) -> dict:
    mixture = {**{t: 0.0 for t in base_mixture}, "image_caption": 1.0, "asr": 1.0}
    return {STAGE: {"init_from": None, "mixture": mixture, "steps": 8, "batch_size": 2, "warmup_ratio": 0.0,
                    "min_lr_ratio": 1.0, "val_samples": 8, "lr": {m: 2e-3 for m in (
                        "vision_encoder", "vision_projector", "video_projector", "audio_encoder",
                        "audio_projector", "llm")}}}


def main(out: Path, data: Path) -> None:
    torch.set_num_threads(1)
    from omni_core.config import load_config
    base = load_config(REPO_ROOT / "params.yaml").stages[STAGE].mixture
    for zero in ("zero2", "zero3"):
        cfg = tiny_cfg(out / zero, data, stages=stage_override(base),
                       train={"backend": "deepspeed", "deepspeed_config": str(REPO_ROOT / f"configs/deepspeed/{zero}.json")})
        losses = []
        res = train_stage(cfg, STAGE, progress=False, on_step=lambda s, m: losses.append(m["train/loss"]))
        model = res["model"]
        params = list(model.parameters())
        if zero == "zero3":
            import deepspeed
            with deepspeed.zero.GatheredParameters(params):
                weights = {n: p.detach().clone() for n, p in model.named_parameters()}
        else:
            weights = {n: p.detach().clone() for n, p in model.named_parameters()}
        if res["rank"] == 0:
            torch.save(weights, out / zero / "weights.pt")
            (out / zero / "result.json").write_text(json.dumps(
                {"losses": losses, "val_loss_start": res["val_loss_start"], "val_loss_end": res["val_loss_end"],
                 "world_size": res["world_size"]}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
