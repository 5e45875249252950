"""Stage `0_vision`: the stand-in for the pretrained SigLIP that the paper's vision branch starts from
(why: `encoders.py`).

Objective `digit_classification`: the vision tower classifies the *train* split of the MNIST source (never
a val/test digit) with a linear head on its mean-pooled features, each batch shifted by up to 3 px;
`val/accuracy` is measured on the source's val split. Objective `digit_word_classification` (the tiny
profile's) also reads printed words, as SigLIP can: fresh renderings of the tasks' closed vocabulary, drawn
as the OCR task draws them and seen as the model sees them (the AnyRes thumbnail), are classes 10 and up
of the same head; `val/word_accuracy` is measured on other renderings. The OCR task's own images (any
split) are never used. Objective `digit_word_shape_classification` (the tiny and small profiles')
also knows shapes and colours, as SigLIP does: single drawn shapes (`shape_image`: any size, position and
colour, never a scene's quadrant layout) with two more softmaxes, one for the shape and one for the colour,
so the tower learns each attribute on its own (with the twelve pairs as classes, a scratch run's VQA read
colour and not shape; benchmarks/bench_scene_reading.py compares the objectives); `val/shape_accuracy`
counts both right. The recipe then keeps the tower frozen, as the paper keeps SigLIP in stage 1a.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from omni_core.config import Config, StageConfig
from omni_core.train.warmup.objective import EncoderObjective

MAX_SHIFT = 3     # pixels: random translation, so the tower learns the digit rather than its position
TRAIN_WORDS, VAL_WORDS = 2000, 400     # renderings of printed words: digits (4,000) keep two thirds of a batch
TRAIN_SHAPES, VAL_SHAPES = 2000, 400   # drawn shapes (objective digit_word_shape_classification)


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


def printed_words(n: int, image_size: int, split: str, max_tiles: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` renderings of the tasks' words as the OCR task prints one (a 2:1 strip, `render_text`), seen as
    the model's AnyRes thumbnail; labels are 10 + the word's index in `TASK_WORDS` (0-9 are the digits).
    The renderings of `split` ("train" or "val") come from their own random stream."""
    import numpy as np

    from omni_core.data import sources as S
    from omni_core.data.tasks import TASK_WORDS
    from omni_core.model.vision import anyres_tiles, to_pixel_values

    rng = np.random.default_rng([0x0C2, ("train", "val").index(split)])
    labels = rng.integers(len(TASK_WORDS), size=n)
    strips = [S.render_text(TASK_WORDS[k], 2 * image_size, image_size, rng) for k in labels]
    return to_pixel_values([anyres_tiles(im, image_size, max_tiles)[0] for im in strips]), torch.as_tensor(labels + 10)


def drawn_shapes(n: int, image_size: int, split: str, first_label: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` single shapes (`shape_image`: any colour, size and position, never a scene's quadrant layout);
    the label is `first_label` + shape index * len(COLOURS) + colour index, which `vision_encoder_objective` splits
    into the two softmaxes. Each split has its own random stream."""
    import numpy as np

    from omni_core.data import sources as S
    from omni_core.model.vision import to_pixel_values

    rng = np.random.default_rng([0x5A9, ("train", "val").index(split)])
    colours = list(S.COLOURS)
    labels = rng.integers(len(S.SHAPES) * len(colours), size=n)
    images = [S.shape_image(S.SHAPES[k // len(colours)], colours[k % len(colours)], image_size, rng) for k in labels]
    return to_pixel_values(images), torch.as_tensor(labels + first_label)


def vision_encoder_objective(cfg: Config, stage: StageConfig, model: nn.Module, device: torch.device) -> EncoderObjective:
    """The `EncoderObjective` of objectives `digit_classification`, `digit_word_classification` and
    `digit_word_shape_classification` around `model.vision_encoder`."""
    from omni_core.data.sources import COLOURS, SHAPES
    from omni_core.data.tasks import TASK_WORDS

    words = stage.objective in ("digit_word_classification", "digit_word_shape_classification")
    shapes = stage.objective == "digit_word_shape_classification"
    first_shape = 10 + len(TASK_WORDS) * words
    n_shapes, n_colours = len(SHAPES), len(COLOURS)
    classifier = DigitClassifier(model.vision_encoder, first_shape + (n_shapes + n_colours) * shapes).to(device)
    size = cfg.model.vision.image_size
    train_pix, train_y = mnist_split("train", size)
    val_pix, val_y = mnist_split("val", size)
    facts = {"train_images": len(train_y), "val_images": len(val_y)}
    extra = []     # (train, val) pairs of (pixels, labels) beside the digits
    if words:
        tiles = cfg.model.vision.max_tiles
        extra.append((printed_words(TRAIN_WORDS, size, "train", tiles), printed_words(VAL_WORDS, size, "val", tiles)))
        facts.update(train_words=TRAIN_WORDS, val_words=VAL_WORDS, vocabulary=len(TASK_WORDS))
    if shapes:
        extra.append((drawn_shapes(TRAIN_SHAPES, size, "train", first_shape),
                      drawn_shapes(VAL_SHAPES, size, "val", first_shape)))
        facts.update(train_shapes=TRAIN_SHAPES, val_shapes=VAL_SHAPES)
    for (tx, ty), (vx, vy) in extra:
        train_pix, train_y = torch.cat([train_pix, tx]), torch.cat([train_y, ty])
        val_pix, val_y = torch.cat([val_pix, vx]), torch.cat([val_y, vy])
    train_pix, train_y, val_pix, val_y = (t.to(device) for t in (train_pix, train_y, val_pix, val_y))

    def losses(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-sample loss, right): digits and words are one softmax; a drawn shape is two, its shape and
        its colour, so the tower learns each attribute on its own rather than their pairs."""
        main = y < first_shape
        loss, right = torch.zeros(len(y), device=y.device), torch.zeros(len(y), device=y.device)
        loss[main] = F.cross_entropy(logits[main, :first_shape], y[main], reduction="none")
        right[main] = (logits[main, :first_shape].argmax(-1) == y[main]).float()
        if (~main).any():                      # labels from first_shape on are drawn shapes
            k = y[~main] - first_shape
            sl, cl = logits[~main, first_shape:first_shape + n_shapes], logits[~main, first_shape + n_shapes:]
            loss[~main] = (F.cross_entropy(sl, k // n_colours, reduction="none")
                           + F.cross_entropy(cl, k % n_colours, reduction="none"))
            right[~main] = ((sl.argmax(-1) == k // n_colours) & (cl.argmax(-1) == k % n_colours)).float()
        return loss, right

    def loss(step: int) -> torch.Tensor:
        pix, y = _batch(train_pix, train_y, stage.batch_size, cfg.train.seed, step)
        return losses(classifier(pix), y)[0].mean()

    def validate(chunk: int = 256) -> dict[str, float]:      # unshifted
        logits = torch.cat([classifier(val_pix[i:i + chunk]) for i in range(0, len(val_pix), chunk)])
        per_sample, right = losses(logits, val_y)
        metrics = {"val/loss": float(per_sample.mean()),
                   "val/accuracy": 100.0 * float(right[val_y < 10].mean())}      # digits
        if words:
            metrics["val/word_accuracy"] = 100.0 * float(right[(val_y >= 10) & (val_y < first_shape)].mean())
        if shapes:
            metrics["val/shape_accuracy"] = 100.0 * float(right[val_y >= first_shape].mean())
        return metrics

    return EncoderObjective(module=classifier, loss=loss, validate=validate, headline="val/accuracy", chance=10.0, facts=facts)
