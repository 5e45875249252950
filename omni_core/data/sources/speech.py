"""Speech sources: Debian flite TTS (several voices and speeds) and real LibriVox recordings.

flite costs ~1 ms (kal16) to ~20 ms (slt, rms, awb) of CPU per utterance when its library is called in
process, ~10 ms more through the `flite` command; tasks.BuildContext runs the unique (text, voice, stretch)
requests in a small process pool and tasks reuse the clips.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


class _FliteLibrary:
    """libflite through ctypes: a voice loads once per process, not once per utterance as with the `flite`
    command. The samples are bit-identical to the command's (tests/test_data_sources.py): the clustergen
    voices (slt, rms, awb) draw noise from libc's rand(), which a fresh `flite` process starts at seed 1, so
    each utterance here starts from srand(1) too."""

    class Wave(ctypes.Structure):             # cst_wave
        _fields_ = [("type", ctypes.c_char_p), ("sample_rate", ctypes.c_int), ("num_samples", ctypes.c_int),
                    ("num_channels", ctypes.c_int), ("samples", ctypes.POINTER(ctypes.c_short))]

    class Voice(ctypes.Structure):            # the head of cst_voice
        _fields_ = [("name", ctypes.c_char_p), ("features", ctypes.c_void_p)]

    def __init__(self, path: str):
        self.lib, self.libc = ctypes.CDLL(path), ctypes.CDLL(None)
        self.lib.flite_init()
        self.lib.flite_text_to_wave.restype = ctypes.POINTER(self.Wave)
        self.lib.flite_text_to_wave.argtypes = [ctypes.c_char_p, ctypes.POINTER(self.Voice)]
        self.lib.feat_set_float.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_float]
        self.lib.delete_wave.argtypes = [ctypes.POINTER(self.Wave)]
        self.voices: dict[str, Any] = {}

    def voice(self, name: str):
        """The registered voice ``name`` (its library libflite_cmu_us_<name>), or None without that library."""
        if name not in self.voices:
            path = ctypes.util.find_library(f"flite_cmu_us_{name}")
            register = getattr(ctypes.CDLL(path), f"register_cmu_us_{name}", None) if path else None
            if register is not None:
                register.restype, register.argtypes = ctypes.POINTER(self.Voice), [ctypes.c_char_p]
            self.voices[name] = register(None) if register is not None else None
        return self.voices[name]

    def synthesize(self, text: str, voice, stretch: float) -> tuple[np.ndarray, int]:
        # the command's `--setf duration_stretch=%.4f`, parsed by atof into a float feature
        self.lib.feat_set_float(voice.contents.features, b"duration_stretch", float(f"{stretch:.4f}"))
        self.libc.srand(1)
        wave = self.lib.flite_text_to_wave(text.encode(), voice)
        try:
            w = wave.contents             # 16-bit mono, read as soundfile reads the command's WAV
            return np.ctypeslib.as_array(w.samples, (w.num_samples,)).astype(np.float32) / 32768.0, w.sample_rate
        finally:
            self.lib.delete_wave(wave)


@functools.lru_cache(maxsize=1)                 # loaded on first use, in each process
def _flite_library() -> _FliteLibrary | None:
    path = ctypes.util.find_library("flite")
    try:
        return _FliteLibrary(path) if path else None
    except (OSError, AttributeError):          # an unusual build of flite: the command still works
        return None


def flite(text: str, voice: str, stretch: float = 1.0, sampling_rate: int = 16000) -> np.ndarray:
    """Synthesise ``text`` with flite's ``voice``; ``stretch`` > 1 speaks slower."""
    lib = _flite_library()
    if lib is not None and (handle := lib.voice(voice)) is not None:
        y, sr = lib.synthesize(text, handle, stretch)
        return _resample(y, sr, sampling_rate)
    return flite_command(text, voice, stretch, sampling_rate)


def flite_command(text: str, voice: str, stretch: float = 1.0, sampling_rate: int = 16000) -> np.ndarray:
    """:func:`flite` through the `flite` command (voices without a library of their own, e.g. a .flitevox file)."""
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
