"""Vision side: SigLIP tile encoder, AnyRes tiling, image / video projectors and their token pooling.

Token pooling follows the paper's count (729 patches -> 182 tokens per 384 tile): the patch sequence is
cut into groups of ``pool**2`` consecutive tokens that are averaged ("Mean Pool" variant), the remainder
(729 - 4 * 182 = 1 patch) is dropped. Video frames are first averaged over runs of ``video_pool**2`` patch
rows, so that with the projector's groups along a row each frame token covers a block of the frame (8 x 8
patches -> 2 x 2 blocks): where things are, and so which way they move, survives the pooling, where two
rounds of consecutive groups would leave horizontal bands (README, "How video frames keep their layout").
The processor and the model count tokens with the same functions (token_counts.py), so pad counts always agree.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from transformers import SiglipVisionConfig, SiglipVisionModel
from transformers.activations import ACT2FN
from transformers.image_processing_utils import select_best_resolution

from omni_core.model.token_counts import pooled_length, tokens_per_tile

IMAGE_MEAN = IMAGE_STD = 0.5     # SigLIP normalisation: pixels in [-1, 1]


# ------------------------------------------------------------------------------------------ token pooling
def pool_tokens(x: torch.Tensor, group: int) -> torch.Tensor:
    """(N, L, D) -> (N, pooled_length(L, group), D) by averaging groups of consecutive tokens."""
    n, length, dim = x.shape
    if group <= 1 or length < group:
        return x
    keep = length // group
    return x[:, : keep * group].reshape(n, keep, group, dim).mean(dim=2)


def pool_rows(x: torch.Tensor, group: int) -> torch.Tensor:
    """(N, side * side, D) -> (N, pooled_length(side, group) * side, D) by averaging runs of ``group`` patch rows."""
    n, length, dim = x.shape
    side = math.isqrt(length)
    if side * side != length:
        raise ValueError(f"pool_rows needs a square patch grid; got {length} patches")
    return pool_tokens(x.reshape(n, side, side * dim), group).reshape(n, -1, dim)   # a row is one token


# --------------------------------------------------------------------------------------------- modules
class VisionProjector(nn.Module):
    """2-layer MLP after ``pool x pool`` token pooling: (N, P, D_vision) -> (N, P // pool**2, D_llm)."""

    def __init__(self, in_dim: int, out_dim: int, pool: int = 2, act: str = "gelu"):
        super().__init__()
        self.pool = pool
        self.linear_1 = nn.Linear(in_dim, out_dim)
        self.act = ACT2FN[act]
        self.linear_2 = nn.Linear(out_dim, out_dim)

    def num_output_tokens(self, num_input_tokens: int) -> int:
        return pooled_length(num_input_tokens, self.pool ** 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(pool_tokens(x, self.pool ** 2))))


def build_vision_encoder(config: SiglipVisionConfig) -> SiglipVisionModel:
    """Random-init SigLIP tower without the attention-pooling head (we use every patch token)."""
    config.vision_use_head = False
    return SiglipVisionModel(config)


class _SiglipTowerLoader(SiglipVisionModel):
    """Loads the vision tower out of a full `SiglipModel` checkpoint without listing its text tower and pooling
    head as unexpected keys (hundreds of lines at so400m); missing keys are still reported."""

    _keys_to_ignore_on_load_unexpected = [r"^text_model\.", r"^logit_(scale|bias)", r"^head\."]


def load_vision_encoder(path: str | Path, dtype: torch.dtype = torch.float32) -> SiglipVisionModel:
    """Load a local SigLIP checkpoint (a `SiglipModel` or `SiglipVisionModel` directory), without the head."""
    config = SiglipVisionConfig.from_pretrained(path)
    config.vision_use_head = False
    tower = _SiglipTowerLoader.from_pretrained(path, config=config, dtype=dtype)
    tower.__class__ = SiglipVisionModel            # a plain SigLIP tower from here on
    return tower


# ------------------------------------------------------------------------------------------------ AnyRes
def anyres_grid(width: int, height: int, tile: int, max_tiles: int) -> tuple[int, int]:
    """(rows, cols) of the tile grid that keeps most of the image's resolution with the least padding."""
    candidates = [(r * tile, c * tile) for r in range(1, max_tiles + 1) for c in range(1, max_tiles + 1)
                  if r * c <= max_tiles]
    best_h, best_w = select_best_resolution((height, width), candidates)
    return best_h // tile, best_w // tile


def anyres_tiles(image: Image.Image, tile: int, max_tiles: int) -> list[Image.Image]:
    """Global thumbnail first, then the grid tiles row by row; an image that fits one tile gets only the thumbnail.

    The grid view keeps the aspect ratio (resize to fit, pad with mid-grey = 0 after normalisation).
    """
    image = image.convert("RGB")
    longest = tile * max_tiles
    if max(image.size) > longest:                     # huge images: shrink once before anything else
        image.thumbnail((longest, longest), Image.Resampling.BICUBIC)
    tiles = [image.resize((tile, tile), Image.Resampling.BICUBIC)]
    rows, cols = anyres_grid(image.width, image.height, tile, max_tiles)
    if rows * cols == 1:
        return tiles
    canvas_w, canvas_h = cols * tile, rows * tile
    scale = min(canvas_w / image.width, canvas_h / image.height)
    new_w, new_h = max(1, round(image.width * scale)), max(1, round(image.height * scale))
    canvas = Image.new("RGB", (canvas_w, canvas_h), (128, 128, 128))
    canvas.paste(image.resize((new_w, new_h), Image.Resampling.BICUBIC),
                 ((canvas_w - new_w) // 2, (canvas_h - new_h) // 2))
    for r in range(rows):
        for c in range(cols):
            tiles.append(canvas.crop((c * tile, r * tile, (c + 1) * tile, (r + 1) * tile)))
    return tiles


def to_pixel_values(images: list[Image.Image]) -> torch.Tensor:
    """List of equal-size RGB images -> (N, 3, S, S) float tensor normalised for SigLIP."""
    arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0 for im in images])
    return torch.from_numpy((arr - IMAGE_MEAN) / IMAGE_STD).permute(0, 3, 1, 2).contiguous()


def square_frame(frame: np.ndarray | Image.Image, size: int) -> Image.Image:
    """A video frame (HxWx3 uint8 or PIL) resized to one ``size`` tile."""
    image = frame if isinstance(frame, Image.Image) else Image.fromarray(np.asarray(frame, dtype=np.uint8))
    return image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)


def max_image_tokens(image_size: int, patch_size: int, pool: int, max_tiles: int) -> int:
    """Upper bound of one image's token count (full grid + thumbnail), for budgeting sequence lengths."""
    return (max_tiles + 1) * tokens_per_tile(image_size, patch_size, pool)
