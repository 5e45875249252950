"""Speech sources: Debian flite TTS (several voices and speeds) and real LibriVox recordings.

flite costs ~1 ms (kal16) to ~25 ms (slt, rms, awb) of CPU per utterance; tasks.BuildContext runs
the unique (text, voice, stretch) requests in a small process pool and tasks reuse the clips.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

FLITE_LICENSE = "BSD-style (CMU flite voices)"
LIBRIVOX_LICENSE = "Public-Domain"
POCKETSPHINX_DATA = Path("/usr/share/pocketsphinx/test/data")
SPEEDS = (0.85, 1.0, 1.15)          # flite duration_stretch values: faster, normal, slower


class SpeechError(RuntimeError):
    """flite or the real-speech package is missing, or a clip cannot be made short enough."""


@dataclass(frozen=True)
class SpeechRequest:
    text: str
    voice: str
    stretch: float = 1.0


def _resample(y: np.ndarray, sr: int, target: int) -> np.ndarray:
    if sr == target:
        return y
    from math import gcd

    from scipy.signal import resample_poly
    g = gcd(sr, target)
    return resample_poly(y, target // g, sr // g).astype(np.float32)


def flite(text: str, voice: str, stretch: float = 1.0, sampling_rate: int = 16000) -> np.ndarray:
    """Synthesise ``text`` with flite's ``voice``; ``stretch`` > 1 speaks slower."""
    exe = shutil.which("flite")
    if exe is None:
        raise SpeechError("flite is not installed; run `apt-get install flite` (see README 'Setup')")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "a.wav")
        r = subprocess.run([exe, "-voice", voice, "--setf", f"duration_stretch={stretch:.4f}", "-t", text,
                            "-o", out], capture_output=True, text=True)
        if r.returncode != 0 or not os.path.exists(out):
            raise SpeechError(f"flite -voice {voice} failed for {text!r}: {r.stderr.strip()[:200]} "
                              f"(voices available: `flite -lv`)")
        y, sr = sf.read(out, dtype="float32")
    return _resample(y, sr, sampling_rate)


def fit_speech(req: SpeechRequest, sampling_rate: int, max_seconds: float) -> np.ndarray:
    """flite speech no longer than ``max_seconds``: speak faster rather than cut words off."""
    y = flite(req.text, req.voice, req.stretch, sampling_rate)
    dur = len(y) / sampling_rate
    if dur > max_seconds:
        y = flite(req.text, req.voice, req.stretch * max_seconds / dur * 0.95, sampling_rate)
    if len(y) > max_seconds * sampling_rate:
        raise SpeechError(f"{req.text!r} takes {len(y) / sampling_rate:.2f} s with voice {req.voice}, more "
                          f"than data.max_audio_seconds = {max_seconds}; use shorter text or raise it")
    return y


@dataclass(frozen=True)
class RealClip:
    id: str
    path: Path
    transcript: str
    source: str


def real_speech() -> list[RealClip]:
    """LibriVox (Sense and Sensibility) and spoken card names from Debian pocketsphinx-testdata."""
    clips = []
    for sub, trans, source in (("librivox", "transcription", "librivox"),
                               ("cards", "cards.transcription", "pocketsphinx-cards")):
        tfile = POCKETSPHINX_DATA / sub / trans
        if not tfile.exists():
            raise SpeechError(f"{tfile} is missing; run `apt-get install pocketsphinx-testdata`")
        for line in tfile.read_text().splitlines():
            if not line.strip():
                continue
            words, _, fid = line.rpartition("(")
            fid = fid.strip().rstrip(")")
            text = " ".join(w for w in words.split() if w not in ("<s>", "</s>"))
            clips.append(RealClip(f"{source}-{fid}", POCKETSPHINX_DATA / sub / f"{fid}.wav", text, source))
    return sorted(clips, key=lambda c: c.id)


def load_wav(path: Path, sampling_rate: int) -> np.ndarray:
    y, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return _resample(y.mean(1), sr, sampling_rate)
