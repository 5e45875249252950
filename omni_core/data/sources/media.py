"""Deterministic media writers and the split rule shared by every source.

Byte-identical output for the same inputs is what lets DVC skip downstream stages: PNGs carry no
time chunks, WAVs are plain PCM-16, MP4s are written with ``+bitexact`` and one x264 thread.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import av
import numpy as np
import soundfile as sf
from PIL import Image

SPLITS = ("train", "val", "test")
# Share of each source's key space per split. A key (an MNIST index, a scene layout, a sentence)
# lands in exactly one split, so train/val/test never share a source item by construction.
SPLIT_FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}


def stable_hash(*parts: object) -> int:
    """A 64-bit hash of ``parts`` that is the same in every process (unlike ``hash``)."""
    h = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(h[:8], "little")


def split_of(source: str, key: object) -> str:
    """The split that owns item ``key`` of ``source``: a fixed bucket of its hash."""
    u = (stable_hash(source, key) % 10_000) / 10_000
    lo = 0.0
    for split in SPLITS:
        lo += SPLIT_FRACTIONS[split]
        if u < lo:
            return split
    return SPLITS[-1]


def short_id(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:12]


def to_rgb(arr: np.ndarray) -> np.ndarray:
    """Any skimage/sklearn/MNIST array (grey, bool, float, RGBA) -> HxWx3 uint8."""
    a = np.asarray(arr)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    elif a.dtype != np.uint8:
        a = a.astype(np.float64)
        a = (255 * (a - a.min()) / max(float(a.max() - a.min()), 1e-9)).astype(np.uint8)
    if a.ndim == 2:
        a = np.stack([a] * 3, -1)
    return np.ascontiguousarray(a[..., :3])


def write_png(path: Path, image: Image.Image | np.ndarray) -> None:
    img = image if isinstance(image, Image.Image) else Image.fromarray(to_rgb(image))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.convert("RGB").save(path, format="PNG", optimize=False, compress_level=6)


def write_wav(path: Path, audio: np.ndarray, sampling_rate: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.clip(audio, -1.0, 1.0), sampling_rate, subtype="PCM_16", format="WAV")


def write_mp4(path: Path, frames: np.ndarray, fps: float, audio: np.ndarray | None = None,
              sampling_rate: int = 16000) -> None:
    """Write (T, H, W, 3) uint8 frames as h264 (+ optional mono FLAC track) reproducibly.

    FLAC rather than AAC: lossless, and half the encode time of AAC at these clip sizes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t, h, w, _ = frames.shape
    with av.open(str(path), "w", format="mp4", options={"fflags": "+bitexact"}) as c:
        vs = c.add_stream("libx264", rate=int(round(fps)) or 1,
                          options={"threads": "1", "preset": "ultrafast", "crf": "12"})
        vs.width, vs.height, vs.pix_fmt = w + (w % 2), h + (h % 2), "yuv420p"
        if audio is not None:
            aus = c.add_stream("flac", rate=sampling_rate)
            aus.layout = "mono"
        for f in frames:
            if f.shape[0] % 2 or f.shape[1] % 2:     # yuv420p needs even sides
                f = np.pad(f, ((0, f.shape[0] % 2), (0, f.shape[1] % 2), (0, 0)), mode="edge")
            c.mux(vs.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")))
        c.mux(vs.encode())
        if audio is not None:
            pcm = (np.clip(audio, -1, 1)[None] * 32767).astype(np.int16)
            af = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
            af.sample_rate, af.pts = sampling_rate, 0
            c.mux(aus.encode(af))
            c.mux(aus.encode())


def read_video_frames(path: str | Path, max_frames: int | None = None) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        out = []
        for f in c.decode(video=0):
            out.append(f.to_ndarray(format="rgb24"))
            if max_frames and len(out) >= max_frames:
                break
    return out
