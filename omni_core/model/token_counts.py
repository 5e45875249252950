"""How many LLM tokens a medium costs: image tiles, video frames and audio clips, counted in plain integers.

The processor (pad counts), the model (feature shapes) and the figures (the paper's token budget) use these
same functions; they need neither torch nor transformers, so a notebook that only counts does not import
either (~4 s).
"""
from __future__ import annotations

import math

SAMPLING_RATE = 16000
MEL_HOP = 160                      # samples per mel frame (100 frames/s)
FRAME_SAMPLES = 2 * MEL_HOP        # samples per encoder frame (the stride-2 conv: 50 frames/s)


# ------------------------------------------------------------------------------------------------ vision
POOL_TYPES = ("paper", "bilinear", "none")


def num_patches(image_size: int, patch_size: int) -> int:
    return (image_size // patch_size) ** 2


def pool_groups(length: int, pool: int, remainder: str) -> list[range]:
    """Patch indices along one axis of the grid that each pooled token averages, as runs of ``pool``.

    ``remainder="own"`` gives a leftover run its own (narrower) group: the axis is padded to a multiple of
    ``pool`` and the padding is left out of the mean. ``remainder="merge"`` folds the leftover patches into
    the last group. Either way every patch feeds exactly one group and no group spans a gap."""
    if pool <= 1 or length <= pool:
        return [range(i, i + 1) for i in range(length)] if pool <= 1 else [range(length)]
    starts = list(range(0, length, pool))
    if remainder == "merge" and length % pool:
        starts.pop()
    return [range(a, b) for a, b in zip(starts, starts[1:] + [length])]


def pooled_grid(side: int, pool: int, pool_type: str = "paper") -> tuple[int, int]:
    """(rows, cols) of tokens that a ``side`` x ``side`` patch grid pools to.

    ``paper``: means of ``pool`` x ``pool`` neighbourhoods, rows padded (a leftover row is its own group),
    a leftover column merged into the last group: 27 x 27 -> 14 x 13 = 182 at pool 2, the paper's count.
    ``bilinear``: the grid resized to ceil(side / pool) squared (LLaVA-OneVision: 14 x 14 = 196).
    ``none``: every patch is a token (729)."""
    if pool_type == "none":
        return side, side
    if pool_type == "bilinear":
        return -(-side // pool), -(-side // pool)
    if pool_type == "paper":
        return len(pool_groups(side, pool, "own")), len(pool_groups(side, pool, "merge"))
    raise ValueError(f"pool_type {pool_type!r}: choose one of {', '.join(POOL_TYPES)}")


def tokens_per_tile(image_size: int, patch_size: int, pool: int, pool_type: str = "paper") -> int:
    """LLM tokens for one tile: an AnyRes image tile, the global view, or a tile of a video frame."""
    rows, cols = pooled_grid(image_size // patch_size, pool, pool_type)
    return rows * cols


def tile_grid(width: int, height: int, tile: int, max_tiles: int) -> tuple[int, int]:
    """(rows, cols) of the AnyRes tile grid for an image of this size: the grid that keeps most of its
    resolution, then wastes the least canvas (LLaVA-NeXT's rule, as transformers' `select_best_resolution`;
    written out here so that counting imports neither torch nor transformers, and checked against it in
    tests/test_geometry.py)."""
    longest = tile * max_tiles
    if max(width, height) > longest:        # anyres_tiles shrinks huge images first; the grid follows that size
        scale = longest / max(width, height)
        width, height = max(1, round(width * scale)), max(1, round(height * scale))
    best, best_key = (1, 1), None
    for rows in range(1, max_tiles + 1):
        for cols in range(1, max_tiles // rows + 1):
            h, w = rows * tile, cols * tile
            scale = min(w / width, h / height)
            kept = min(int(width * scale) * int(height * scale), width * height)
            key = (kept, -(w * h - kept))
            if best_key is None or key > best_key:
                best, best_key = (rows, cols), key
    return best


def num_tiles(width: int, height: int, tile: int, max_tiles: int) -> int:
    """Tiles the encoder sees: the global view alone when the grid is one tile, else the grid + the global view."""
    if max_tiles <= 1:
        return 1
    rows, cols = tile_grid(width, height, tile, max_tiles)
    return 1 if rows * cols == 1 else rows * cols + 1


def image_tokens(width: int, height: int, vision) -> int:
    """LLM tokens of an image of this size under ``vision`` (`omni_core.config.VisionConfig`)."""
    v = vision
    return num_tiles(width, height, v.image_size, v.max_tiles) * tokens_per_tile(v.image_size, v.patch_size, v.pool,
                                                                                 v.pool_type)


def video_frame_tokens(width: int, height: int, vision) -> int:
    """LLM tokens of one video frame of this size: the image path with ``video_max_tiles`` and ``video_pool``."""
    v = vision
    return num_tiles(width, height, v.image_size, v.video_max_tiles) * tokens_per_tile(v.image_size, v.patch_size,
                                                                                       v.video_pool, v.pool_type)


def video_num_frames(seconds: float, fps: float, max_frames: int) -> int:
    """Frames the processor samples from a clip of ``seconds``: one at t = 0, then one every 1 / fps, and at
    most ``max_frames`` (a longer clip is thinned to that many)."""
    return min(max_frames, max(1, math.ceil(seconds * fps)))


# ------------------------------------------------------------------------------------------------- audio
def source_positions(window_seconds: float) -> int:
    """Encoder frames per window: Whisper's ``max_source_positions`` (1500 for 30 s)."""
    return round(window_seconds * SAMPLING_RATE / FRAME_SAMPLES)


def window_samples(window_seconds: float) -> int:
    return source_positions(window_seconds) * FRAME_SAMPLES


def audio_num_windows(num_samples: int, window_seconds: float) -> int:
    return max(1, math.ceil(num_samples / window_samples(window_seconds)))


def audio_num_frames(num_samples: int) -> int:
    """Encoder frames that cover real audio (the rest of the last window is padding)."""
    return max(1, math.ceil(num_samples / FRAME_SAMPLES))


def audio_num_tokens(num_samples: int, downsample: int) -> int:
    """LLM tokens of one clip: ceil(frames / n)."""
    return math.ceil(audio_num_frames(num_samples) / downsample)


ENCODER_FRAMES_PER_SECOND = SAMPLING_RATE / FRAME_SAMPLES     # 50


def audio_tokens_per_second(downsample: int) -> float:
    return ENCODER_FRAMES_PER_SECOND / downsample


# ------------------------------------------------------------------------------------------ the budget
def token_budget(vision, audio, frames: int = 48) -> dict:
    """What a run of this model config spends per medium (``vision``/``audio``: `omni_core.config` sections)."""
    v = vision
    tile = tokens_per_tile(v.image_size, v.patch_size, v.pool, v.pool_type)
    frame_min = video_frame_tokens(v.image_size, v.image_size, v)                    # a square frame: one tile
    widest = (v.image_size, v.image_size * v.video_max_tiles)                         # 384 x 768 at full scale
    frame_max = max(frame_min, video_frame_tokens(widest[1], widest[0], v))
    side = v.image_size // v.patch_size
    return {
        "patch_grid": [side, side], "pool_type": v.pool_type, "pool": v.pool, "video_pool": v.video_pool,
        "image_tile_grid": list(pooled_grid(side, v.pool, v.pool_type)),
        "image_tile_tokens": tile,
        "image_tokens_max": (v.max_tiles + 1 if v.max_tiles > 1 else 1) * tile,
        "video_frame_grid": list(pooled_grid(side, v.video_pool, v.pool_type)),
        "video_frame_tokens_min": frame_min,
        "video_frame_tokens_max": frame_max,
        f"video_tokens_{frames}_frames": frames * frame_max,
        "video_max_frames": v.video_max_frames,
        "video_tokens_max_frames": v.video_max_frames * frame_max,
        "audio_tokens_per_s": {n: audio_tokens_per_second(n) for n in (2, 4, 8)},
        "audio_downsample": audio.downsample,
        "audio_tokens_30s": audio_num_tokens(30 * SAMPLING_RATE, audio.downsample),
    }


def main(argv: list[str] | None = None) -> None:
    import argparse
    import json

    from omni_core.config import load_config

    parser = argparse.ArgumentParser(prog="python -m omni_core.model.token_counts",
                                     description="LLM tokens per image tile, video frame and second of audio, as JSON")
    parser.add_argument("--profile", default=None, help="tiny | small | full (default: params.yaml's)")
    parser.add_argument("--params", default=None, help="params file (default: the repo's params.yaml)")
    parser.add_argument("--frames", type=int, default=48, help="frames for the video_tokens_<N>_frames entry")
    args = parser.parse_args(argv)
    cfg = load_config(args.params, profile=args.profile) if args.params else load_config(profile=args.profile)
    print(json.dumps({"profile": cfg.profile, **token_budget(cfg.model.vision, cfg.model.audio, args.frames)}, indent=2))


if __name__ == "__main__":
    main()
