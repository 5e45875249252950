"""Stage `0_vision`: a stand-in for the pretrained SigLIP that the paper's vision branch starts from.

The paper never trains its vision encoder from scratch: SigLIP arrives pretrained and stage 1a only
maps its features into the LLM. The tiny and small profiles have no pretrained vision tower, and
`benchmarks/bench_media_reading.py` measured what that costs: the answer loss of a few hundred steps
leaves a random-init ViT at chance on the simplest content there is (which digit is in the image).
So, before any multimodal stage, this stage gives the tower what pre-training would: it classifies the
*train* split of the MNIST source (never a val/test digit) with a linear head on its mean-pooled
features, and the recipe then keeps the tower frozen, as the paper keeps SigLIP in stage 1a.

`stages.<name>.objective: digit_classification` selects this loop; the stage trains only
`vision_encoder` (its lr) for `steps` steps of `batch_size` digits, each batch shifted by up to 3 px.
It resumes like every stage (`checkpoints/<name>/state`), logs `train/loss`, `val/loss` and
`val/accuracy` with dvclive, and exports the whole model (the head is dropped) to `checkpoints/<name>/model`.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from omni_core.config import Config, ConfigError
from omni_core.train.stage_run import StageRun, prepare_process
from omni_core.train.stages import build_scheduler, count_params, init_model, param_groups

log = logging.getLogger(__name__)
MAX_SHIFT = 3     # pixels: random translation, so the tower learns the digit rather than its position


class DigitClassifier(nn.Module):
    """The vision tower + a linear head over its mean-pooled patch features."""

    def __init__(self, encoder: nn.Module, num_classes: int = 10):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.config.hidden_size, num_classes)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(pixel_values=pixel_values).last_hidden_state.mean(1))


def mnist_split(split: str, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel values (N, 3, S, S) and labels of one split of the MNIST source, as the data prep splits it."""
    from omni_core.data import sources as S
    from omni_core.model.vision import to_pixel_values

    x, y = S.mnist()
    idx = [i for i in range(len(x)) if S.split_of("mnist", i) == split]
    images = [S.digit_image(x[i], image_size).convert("RGB") for i in idx]
    return to_pixel_values(images), torch.as_tensor(y[idx])


def _batch(pix: torch.Tensor, labels: torch.Tensor, size: int, seed: int, step: int):
    """The digits and shift of optimizer step `step`: a pure function of (seed, step), so a resume is exact."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
    pick = torch.randint(len(pix), (size,), generator=gen)
    dy, dx = (int(v) for v in torch.randint(-MAX_SHIFT, MAX_SHIFT + 1, (2,), generator=gen))
    return torch.roll(pix[pick], shifts=(dy, dx), dims=(2, 3)), labels[pick]


@torch.no_grad()
def accuracy_and_loss(classifier: DigitClassifier, pix: torch.Tensor, labels: torch.Tensor,
                      chunk: int = 256) -> tuple[float, float]:
    """(% correct, mean cross-entropy) on unshifted digits."""
    was = classifier.training
    classifier.eval()
    logits = torch.cat([classifier(pix[i:i + chunk]) for i in range(0, len(pix), chunk)])
    classifier.train(was)
    return 100.0 * float((logits.argmax(-1) == labels).float().mean()), float(F.cross_entropy(logits, labels))


def train_vision_stand_in(cfg: Config, name: str, *, on_step: Callable[[int, dict], None] | None = None,
                          progress: bool = True) -> dict[str, Any]:
    """Train stage `name` (objective `digit_classification`); the counterpart of `loop.train_stage`,
    with the same checkpoints, logs, resume and `on_step(step, metrics)` hook."""
    stage = cfg.stage(name)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(f"stages.{name} (objective digit_classification) runs in one process; "
                          f"launch it with train.nproc = 1")
    prepare_process(cfg)
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    run = StageRun(cfg, name)

    torch.manual_seed(cfg.train.seed)
    model, processor = init_model(cfg, name, dtype=torch.float32)
    param_groups(model, stage, name)                  # freezes all but the tower (config checked it)
    classifier = DigitClassifier(model.vision_encoder).to(device)
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=stage.lr["vision_encoder"],
                                  weight_decay=stage.weight_decay)
    scheduler = build_scheduler(optimizer, stage)
    size = cfg.model.vision.image_size
    train_pix, train_y = (t.to(device) for t in mnist_split("train", size))
    val_pix, val_y = (t.to(device) for t in mnist_split("val", size))

    step = run.start_step
    if run.state is not None:
        run.load(model=classifier, optimizer=optimizer, scheduler=scheduler)
        log.info("resuming %s from %s (step %d)", name, run.state_dir, step)
    run.open_log({"objective": stage.objective})
    summary = run.summary
    summary.update(rank=0, world_size=1, backend="torch", objective=stage.objective, train_images=len(train_y),
                   val_images=len(val_y))

    def validate(s: int) -> tuple[float, float]:
        acc, loss = accuracy_and_loss(classifier, val_pix, val_y)
        run.log(s, {"val/loss": loss, "val/accuracy": acc})
        return acc, loss

    if step == 0:
        summary["val_accuracy_start"], summary["val_loss_start"] = validate(0)

    def save(finished: bool) -> None:
        run.save(step, step * stage.batch_size, finished, state_model=classifier, optimizer=optimizer,
                 scheduler=scheduler, export_model=model, processor=processor)

    from tqdm.auto import tqdm

    bar = tqdm(total=stage.steps, initial=step, desc=name, disable=not progress, dynamic_ncols=True)
    classifier.train()
    t_start = time.perf_counter()
    while step < stage.steps:
        pix, y = _batch(train_pix, train_y, stage.batch_size, cfg.train.seed, step)
        loss = F.cross_entropy(classifier(pix), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip = stage.max_grad_norm if stage.max_grad_norm > 0 else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(classifier.parameters(), clip))
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        step += 1
        summary["train_loss"] = float(loss.detach())
        metrics = {"train/loss": summary["train_loss"], "train/lr": lr, "train/grad_norm": grad_norm}
        run.log(step, metrics)
        if step % stage.eval_every == 0 and step < stage.steps:
            validate(step)
        bar.set_postfix(loss=f"{summary['train_loss']:.3f}", lr=f"{lr:.1e}")
        bar.update(1)
        if step % stage.save_every == 0 and step < stage.steps:
            save(finished=False)
        if on_step is not None:
            on_step(step, metrics)
    bar.close()
    summary["wall_s"] = time.perf_counter() - t_start
    if run.trains_anew:
        summary["val_accuracy_end"], summary["val_loss_end"] = validate(step)
    summary.update(steps=step, params=count_params(model))
    if run.needs_final_save():
        save(finished=True)
    run.close(("val_loss_start", "val_loss_end", "val_accuracy_start", "val_accuracy_end", "train_loss"))
    log.info("%s: the vision tower reads %.1f %% of %d held-out MNIST digits (chance 10 %%)", name,
             summary.get("val_accuracy_end", float("nan")), len(val_y))
    summary.update(chance_accuracy=10.0, model=model)
    return summary
