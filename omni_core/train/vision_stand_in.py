"""Stage `0_vision` (objective `digit_classification`): the stand-in for the pretrained SigLIP that the
paper's vision branch starts from (why: `stand_in.py`).

The vision tower classifies the *train* split of the MNIST source (never a val/test digit) with a
linear head on its mean-pooled features, each batch shifted by up to 3 px; `val/accuracy` is measured on
the source's val split. The recipe then keeps the tower frozen, as the paper keeps SigLIP in stage 1a.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from omni_core.config import Config, StageConfig
from omni_core.train.stand_in import StandIn

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


def digit_stand_in(cfg: Config, stage: StageConfig, model: nn.Module, device: torch.device) -> StandIn:
    """The `StandIn` of objective `digit_classification` around `model.vision_encoder`."""
    classifier = DigitClassifier(model.vision_encoder).to(device)
    size = cfg.model.vision.image_size
    train_pix, train_y = (t.to(device) for t in mnist_split("train", size))
    val_pix, val_y = (t.to(device) for t in mnist_split("val", size))

    def loss(step: int) -> torch.Tensor:
        pix, y = _batch(train_pix, train_y, stage.batch_size, cfg.train.seed, step)
        return F.cross_entropy(classifier(pix), y)

    def validate(chunk: int = 256) -> dict[str, float]:      # unshifted digits
        logits = torch.cat([classifier(val_pix[i:i + chunk]) for i in range(0, len(val_pix), chunk)])
        return {"val/loss": float(F.cross_entropy(logits, val_y)),
                "val/accuracy": 100.0 * float((logits.argmax(-1) == val_y).float().mean())}

    return StandIn(module=classifier, loss=loss, validate=validate, headline="val/accuracy", chance=10.0,
                   facts={"train_images": len(train_y), "val_images": len(val_y)})
