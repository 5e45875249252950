"""Where visual tokens come from: the 2-D pool over each tile's patch grid, for image tiles and video frames.

The paper pools 2x2 spatial neighbourhoods of SigLIP's 27x27 patch grid (182 tokens a 384 tile); video frames
of up to 384x768 take the same path (182-546 tokens a frame). These tests read the pool on grids of distinct
values, so a token that mixed distant patches, or a patch that fed no token, would show.
"""
import dataclasses

import numpy as np
import pytest
import torch

from omni_core.config import ConfigError, load_config
from omni_core.model import train_tokenizer
from omni_core.model.token_counts import pool_groups, pooled_grid, tokens_per_tile, video_frame_tokens
from omni_core.model.vision import VisionProjector, pool_matrix, pool_patches
from omni_core.processing import OmniProcessor


def _distinct_grid(side: int) -> torch.Tensor:
    """(1, side * side, 2) patch features: feature 0 = the patch's row, feature 1 = its column."""
    rows, cols = torch.meshgrid(torch.arange(side, dtype=torch.float64), torch.arange(side, dtype=torch.float64),
                                indexing="ij")
    return torch.stack([rows, cols], -1).reshape(1, side * side, 2)


@pytest.mark.parametrize("side,pool", [(27, 2), (8, 2), (8, 4), (27, 4), (5, 2)])
def test_geometry_each_pooled_token_is_the_mean_of_its_spatial_neighbourhood(side, pool):
    x = _distinct_grid(side)
    tokens = pool_patches(x, pool, "paper")[0]
    row_groups, col_groups = pool_groups(side, pool, "own"), pool_groups(side, pool, "merge")
    assert tokens.shape[0] == len(row_groups) * len(col_groups) == tokens_per_tile(side, 1, pool)
    grid = x[0].reshape(side, side, 2)
    for i, r in enumerate(row_groups):
        for j, c in enumerate(col_groups):
            block = grid[r.start:r.stop, c.start:c.stop].reshape(-1, 2)
            assert torch.allclose(tokens[i * len(col_groups) + j], block.mean(0))
    # the weights say the same: each token reads one rectangle of adjacent rows and adjacent columns
    weights = pool_matrix(side, pool, "paper").reshape(-1, side, side)
    for w in weights:
        rows = torch.nonzero(w.sum(1)).flatten().tolist()
        cols = torch.nonzero(w.sum(0)).flatten().tolist()
        assert rows == list(range(rows[0], rows[-1] + 1)) and len(rows) <= pool      # no row break crossed
        assert cols == list(range(cols[0], cols[-1] + 1)) and len(cols) < 2 * pool
        assert torch.allclose(w[w > 0], w[w > 0][0])                                    # a plain mean


def test_geometry_every_patch_of_a_tile_and_of_a_video_frame_feeds_a_token():
    full = load_config(profile="full").model.vision
    tiny = load_config().model.vision
    for v in (full, tiny):
        side = v.image_size // v.patch_size
        for pool in (v.pool, v.video_pool):
            for pool_type in ("paper", "bilinear"):
                fed = (pool_matrix(side, pool, pool_type) > 0).sum(0)
                assert int(fed.min()) >= 1, (side, pool, pool_type)
        assert (pool_matrix(side, v.pool, "paper") > 0).sum(0).max() == 1        # and exactly one under the paper's


def test_geometry_full_scale_counts_182_per_tile_and_182_to_546_per_frame():
    cfg = load_config(profile="full")
    v = cfg.model.vision
    assert pooled_grid(27, 2, "paper") == (14, 13) and tokens_per_tile(384, 14, 2) == 182
    assert tokens_per_tile(384, 14, 2, "bilinear") == 196 and tokens_per_tile(384, 14, 2, "none") == 729
    assert video_frame_tokens(384, 384, v) == 182 and video_frame_tokens(768, 384, v) == 546
    assert video_frame_tokens(640, 360, v) == 546 and video_frame_tokens(384, 768, v) == 546
    # through the processor, as training sees it: a wide frame is 2 tiles + the global view, a square one 1 tile
    processor = OmniProcessor(train_tokenizer(["Describe the video."] * 4, 300), cfg.model)
    frames = [np.zeros((384, 768, 3), np.uint8), np.zeros((384, 384, 3), np.uint8)]
    out = processor([{"role": "user", "content": [{"type": "video", "frames": frames}]},
                     {"role": "assistant", "content": "ok"}])
    assert out["video_values"].shape[0] == 4
    assert int((out["input_ids"] == processor.pad_ids["video"]).sum()) == 546 + 182


def test_geometry_the_projector_pools_before_its_mlp():
    # ink in one 2x2 block of an 8x8 grid lights exactly the token of that block (a 1x4 strip would smear it)
    proj = VisionProjector(1, 1, pool=2)
    for top, left in ((0, 0), (2, 6), (6, 2)):
        grid = torch.zeros(1, 8, 8, 1)
        grid[0, top:top + 2, left:left + 2] = 1.0
        pooled = pool_patches(grid.reshape(1, 64, 1), 2).flatten()
        assert pooled.tolist() == [float(i == (top // 2) * 4 + left // 2) for i in range(16)]
    assert proj(torch.zeros(3, 64, 1)).shape == (3, 16, 1)
    assert proj(torch.zeros(1, 729, 1)).shape == (1, 182, 1)
    with pytest.raises(ValueError, match="square patch grid"):
        pool_patches(torch.zeros(1, 30, 1), 2)


def test_geometry_pool_type_is_a_config_choice():
    base = load_config()
    for pool_type, tokens in (("paper", 16), ("bilinear", 16), ("none", 64)):
        cfg = load_config(overrides={"model": {"vision": {"pool_type": pool_type}}})
        assert tokens_per_tile(cfg.model.vision.image_size, cfg.model.vision.patch_size, cfg.model.vision.pool,
                               cfg.model.vision.pool_type) == tokens
    assert dataclasses.replace(base.model.vision, pool_type="none").pool_type == "none"
    with pytest.raises(ConfigError, match="pool_type.*choose one of"):
        load_config(overrides={"model": {"vision": {"pool_type": "mean"}}})


def test_geometry_tile_grid_is_transformers_select_best_resolution():
    """token_counts writes LLaVA-NeXT's grid rule out (counting imports neither torch nor transformers): it must
    pick what transformers picks, for every shape from thin strips to huge pages."""
    from transformers.image_processing_utils import select_best_resolution

    from omni_core.model.token_counts import tile_grid

    rng = np.random.default_rng(0)
    sizes = [(int(w), int(h)) for w, h in rng.integers(8, 4000, (300, 2))] + [(768, 384), (384, 768), (32, 64), (64, 64)]
    for tile, max_tiles in ((384, 9), (384, 2), (32, 4)):
        candidates = [(r * tile, c * tile) for r in range(1, max_tiles + 1) for c in range(1, max_tiles + 1)
                      if r * c <= max_tiles]
        for w, h in sizes:
            longest = tile * max_tiles
            if max(w, h) > longest:
                scale = longest / max(w, h)
                w, h = max(1, round(w * scale)), max(1, round(h * scale))
            best_h, best_w = select_best_resolution((h, w), candidates)
            assert tile_grid(w, h, tile, max_tiles) == (best_h // tile, best_w // tile), (w, h, tile, max_tiles)
