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
def num_patches(image_size: int, patch_size: int) -> int:
    return (image_size // patch_size) ** 2


def pooled_length(length: int, group: int) -> int:
    """Tokens (or patch rows) left after averaging groups of ``group`` consecutive ones (a tail that does not
    fill a group is dropped)."""
    return length // group if group > 1 and length >= group else length


def tokens_per_tile(image_size: int, patch_size: int, pool: int, video_pool: int = 1) -> int:
    """LLM tokens for one tile (or one video frame when ``video_pool`` > 1)."""
    side = image_size // patch_size
    return pooled_length(pooled_length(side, video_pool ** 2) * side, pool ** 2)


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
