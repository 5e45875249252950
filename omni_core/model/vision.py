"""Vision side: SigLIP tile encoder, AnyRes tiling, image / video projectors and their 2-D token pooling.

A tile's patches form a square grid (27 x 27 for SigLIP-so400m at 384 px). The projector pools that grid
spatially before its MLP: with the paper's pool every token is the mean of a ``pool`` x ``pool`` neighbourhood
(27 x 27 -> 14 x 13 = 182 tokens), so a token never mixes patches from distant parts of the tile and every
patch feeds one token. Video frames take the same path: each frame is cut into AnyRes tiles (at most
``video_max_tiles`` plus a global view) and pooled the same way at ``video_pool``, through the video projector.
The pool is a fixed (tokens x patches) averaging matrix, so which patches feed which token can be drawn
(notebook 00). The processor and the model count tokens with the same functions (token_counts.py).
"""
from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from transformers import SiglipVisionConfig, SiglipVisionModel
from transformers.activations import ACT2FN

from omni_core.model.pretrained import EXPECTED
from omni_core.model.token_counts import pool_groups, pooled_grid, tile_grid

IMAGE_MEAN = IMAGE_STD = 0.5     # SigLIP normalisation: pixels in [-1, 1]


# ------------------------------------------------------------------------------------------ token pooling
@functools.lru_cache(maxsize=32)
def pool_matrix(side: int, pool: int, pool_type: str = "paper") -> torch.Tensor:
    """(tokens, side * side) weights: row t says how much each patch (row-major) contributes to token t.

    Rows sum to 1. ``paper``: uniform over a spatial neighbourhood (token_counts.pooled_grid says which);
    ``bilinear``: torch's bilinear resize of the grid (antialiased, so that at strides above 2 no patch is skipped);
    ``none``: the identity."""
    rows, cols = pooled_grid(side, pool, pool_type)
    if pool_type == "none":
        return torch.eye(side * side)
    if pool_type == "bilinear":
        basis = torch.eye(side * side).reshape(side * side, 1, side, side)
        return F.interpolate(basis, size=(rows, cols), mode="bilinear", align_corners=False,
                             antialias=True).reshape(side * side, -1).T
    weights = torch.zeros(rows, cols, side, side)
    for i, r in enumerate(pool_groups(side, pool, "own")):
        for j, c in enumerate(pool_groups(side, pool, "merge")):
            weights[i, j, r.start:r.stop, c.start:c.stop] = 1.0 / (len(r) * len(c))
    return weights.reshape(rows * cols, side * side)


def pool_patches(x: torch.Tensor, pool: int, pool_type: str = "paper") -> torch.Tensor:
    """(N, side * side, D) patch features of square tiles -> (N, tokens, D) pooled tokens."""
    side = math.isqrt(x.shape[1])
    if side * side != x.shape[1]:
        raise ValueError(f"pool_patches needs a square patch grid per tile; got {x.shape[1]} patches")
    if pool_type == "none" or (pool <= 1 and pool_type == "paper"):
        return x
    return torch.matmul(pool_matrix(side, pool, pool_type).to(x.device, x.dtype), x)


def patch_token_map(side: int, pool: int, pool_type: str = "paper") -> np.ndarray:
    """(side, side) index of the token each patch feeds most (under the paper's pool: the only one), for figures."""
    return pool_matrix(side, pool, pool_type).argmax(0).reshape(side, side).numpy()


# --------------------------------------------------------------------------------------------- modules
class VisionProjector(nn.Module):
    """2-D token pooling, then a 2-layer MLP: (N, P, D_vision) -> (N, tokens_per_tile, D_llm)."""

    def __init__(self, in_dim: int, out_dim: int, pool: int = 2, act: str = "gelu", pool_type: str = "paper"):
        super().__init__()
        self.pool, self.pool_type = pool, pool_type
        self.linear_1 = nn.Linear(in_dim, out_dim)
        self.act = ACT2FN[act]
        self.linear_2 = nn.Linear(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(pool_patches(x, self.pool, self.pool_type))))


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
    tower, info = _SiglipTowerLoader.from_pretrained(path, config=config, dtype=dtype, output_loading_info=True)
    if info["missing_keys"]:            # e.g. another architecture's weights: random ones would train silently
        raise ValueError(f"model.vision.path = {str(path)!r}: the checkpoint lacks the SigLIP vision tower's weights "
                         f"{sorted(info['missing_keys'])[:5]}; put {EXPECTED['vision']} there")
    tower.__class__ = SiglipVisionModel            # a plain SigLIP tower from here on
    return tower


# ------------------------------------------------------------------------------------------------ AnyRes
def anyres_tiles(image: Image.Image, tile: int, max_tiles: int) -> list[Image.Image]:
    """Global thumbnail first, then the grid tiles row by row; an image that fits one tile gets only the thumbnail.

    The grid view keeps the aspect ratio (resize to fit, pad with mid-grey = 0 after normalisation).
    """
    image = image.convert("RGB")
    longest = tile * max_tiles
    if max(image.size) > longest:                     # huge images: shrink once before anything else
        image.thumbnail((longest, longest), Image.Resampling.BICUBIC)
    tiles = [image.resize((tile, tile), Image.Resampling.BICUBIC)]
    rows, cols = tile_grid(image.width, image.height, tile, max_tiles) if max_tiles > 1 else (1, 1)
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


def frame_tiles(frame: np.ndarray | Image.Image, tile: int, max_tiles: int) -> list[Image.Image]:
    """The tiles of one video frame (HxWx3 uint8 or PIL) as the encoder sees them: the image path's AnyRes."""
    image = frame if isinstance(frame, Image.Image) else Image.fromarray(np.asarray(frame, dtype=np.uint8))
    return anyres_tiles(image, tile, max_tiles)


def to_pixel_values(images: list[Image.Image]) -> torch.Tensor:
    """List of equal-size RGB images -> (N, 3, S, S) float tensor normalised for SigLIP."""
    arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0 for im in images])
    return torch.from_numpy((arr - IMAGE_MEAN) / IMAGE_STD).permute(0, 3, 1, 2).contiguous()
