"""Speech start/end prediction for real-time interaction (paper section 5: "the model initially predicts
the start and end of audio inputs").

A small causal head reads streaming log-mel frames (10 ms hop) and gives a per-frame speech
probability; :class:`SpeechBoundaryDetector` turns it into ``speech_start`` / ``speech_end`` events with
a minimum speech run (rejects clicks) and a silence hangover (a pause inside a sentence is not the end
of the turn). The head is trained on our own data: flite TTS utterances (fortune sentences, several voices and
speeds), placed at random in silence, noise and tones, labelled from the clean speech
(:func:`train_speech_boundary_head`). It is saved next to the model checkpoint (``<checkpoint>/speech_boundary/``)
with ``save_pretrained``; ``python -m omni_core.speech_boundary`` trains and scores it from a shell.

Why log-mel and not the Whisper encoder: Whisper normalises each 30 s window by its own maximum and
attends over the whole window, so its features of a 0.1 s chunk change when the window grows; the head
must decide on each chunk as it arrives, with a fixed, causal receptive field.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torchaudio
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from omni_core.data.sources.media import split_of
from omni_core.data.sources.speech import SPEEDS, flite
from omni_core.data.sources.text import short_sentences
from omni_core.model.token_counts import SAMPLING_RATE

# by convention the head lives in <checkpoint>/speech_boundary/{config.json, model.safetensors}
SPEECH_BOUNDARY_SUBDIR = "speech_boundary"
# salt of the stable hash that splits the sentences into train / held-out: another value would move
# sentences between the splits (and change the trained head)
_SENTENCE_SPLIT_KEY = "vad"
LABEL_HOP_SECONDS = 0.01         # the labels of synth_streams: one per 10 ms log-mel frame


# ------------------------------------------------------------------------------------------- features
class LogMelFrontend:
    """Streaming log-mel: feed chunks of any length, get the frames that became complete.

    Frames are 25 ms windows every 10 ms (no centring, so a frame never needs future samples); the
    samples of an unfinished window are carried over to the next chunk.
    """

    def __init__(self, sampling_rate: int = 16000, n_mels: int = 40, win_seconds: float = 0.025,
                 hop_seconds: float = 0.01):
        self.sampling_rate = sampling_rate
        self.win = int(round(win_seconds * sampling_rate))
        self.hop = int(round(hop_seconds * sampling_rate))
        self.mel = torchaudio.transforms.MelSpectrogram(sampling_rate, n_fft=self.win, hop_length=self.hop,
                                                        n_mels=n_mels, center=False)
        self.reset()

    def reset(self) -> None:
        self._rest = np.zeros(0, dtype=np.float32)

    def __call__(self, chunk: np.ndarray) -> torch.Tensor:
        buf = np.concatenate([self._rest, np.asarray(chunk, dtype=np.float32).reshape(-1)])
        n = 0 if len(buf) < self.win else (len(buf) - self.win) // self.hop + 1
        self._rest = buf[n * self.hop:]
        if n == 0:
            return torch.zeros(0, self.mel.n_mels)
        x = torch.from_numpy(buf[: (n - 1) * self.hop + self.win].copy())
        return torch.log(self.mel(x) + 1e-6).T          # (n, n_mels)

    def offline(self, wave: np.ndarray) -> torch.Tensor:
        """All frames of a whole waveform (same values as feeding it chunk by chunk)."""
        self.reset()
        out = self(wave)
        self.reset()
        return out


# ----------------------------------------------------------------------------------------------- head
class SpeechBoundaryHead(nn.Module, PyTorchModelHubMixin):
    """Causal conv head: log-mel frames (B, T, n_mels) -> speech logits (B, T).

    The receptive field is ``context`` frames of the past (none of the future), so streaming inference
    over chunks gives exactly the offline result.
    """

    def __init__(self, n_mels: int = 40, context: int = 16, hidden: int = 32, sampling_rate: int = 16000,
                 hop_seconds: float = 0.01):
        super().__init__()
        self.n_mels, self.context, self.sampling_rate, self.hop_seconds = n_mels, context, sampling_rate, hop_seconds
        self.register_buffer("mean", torch.zeros(n_mels))
        self.register_buffer("std", torch.ones(n_mels))
        self.conv = nn.Conv1d(n_mels, hidden, kernel_size=context)
        self.out = nn.Sequential(nn.GELU(), nn.Conv1d(hidden, hidden, 1), nn.GELU(), nn.Conv1d(hidden, 1, 1))

    def frontend(self) -> LogMelFrontend:
        return LogMelFrontend(self.sampling_rate, self.n_mels, hop_seconds=self.hop_seconds)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        x = ((feats - self.mean) / self.std).transpose(1, 2)                 # (B, n_mels, T)
        x = nn.functional.pad(x, (self.context - 1, 0))                      # causal: pad the past only
        return self.out(self.conv(x)).squeeze(1)


@dataclass
class BoundaryEvent:
    kind: Literal["speech_start", "speech_end"]
    time: float          # seconds on the stream clock where speech started / stopped
    decided_at: float    # stream time when the detector was sure (end: time + hangover)


class BoundaryDecider:
    """Per-frame speech probabilities -> ``speech_start`` / ``speech_end`` events, chunk by chunk: a run of
    ``min_speech_seconds`` of speech opens an utterance (clicks do not), ``min_silence_seconds`` of silence
    closes it (a pause inside a sentence does not). Subclasses say how a chunk of audio becomes probabilities
    (:meth:`frame_probs`), one every ``hop_seconds``."""

    def __init__(self, hop_seconds: float, threshold: float = 0.5, min_speech_seconds: float = 0.1,
                 min_silence_seconds: float = 0.5):
        self.hop_seconds, self.threshold = hop_seconds, threshold
        self.min_speech = max(1, round(min_speech_seconds / hop_seconds))
        self.min_silence = max(1, round(min_silence_seconds / hop_seconds))
        self.reset()

    def reset(self) -> None:
        self.probs: list[float] = []
        self.in_speech = False
        self._run = 0                    # length of the current run of frames that disagree with the state

    @property
    def time(self) -> float:
        return len(self.probs) * self.hop_seconds

    @property
    def silence_since(self) -> float | None:
        """Inside an utterance, where the current run of silence began: the end of speech, if it lasts the
        hangover. None while speech goes on or outside an utterance."""
        return self.time - self._run * self.hop_seconds if self.in_speech and self._run else None

    def frame_probs(self, chunk: np.ndarray) -> list[float]:
        raise NotImplementedError

    def push(self, chunk: np.ndarray) -> list[BoundaryEvent]:
        events = []
        for prob in self.frame_probs(chunk):
            self.probs.append(prob)
            speech = prob >= self.threshold
            self._run = self._run + 1 if speech != self.in_speech else 0
            need = self.min_silence if self.in_speech else self.min_speech
            if self._run >= need:
                self.in_speech = not self.in_speech
                at = self.time - self._run * self.hop_seconds
                events.append(BoundaryEvent("speech_start" if self.in_speech else "speech_end", at, self.time))
                self._run = 0
        return events


class SpeechBoundaryDetector(BoundaryDecider):
    """The separate detector: :class:`SpeechBoundaryHead` over streaming log-mel frames (10 ms)."""

    def __init__(self, head: SpeechBoundaryHead, threshold: float = 0.5, min_speech_seconds: float = 0.1,
                 min_silence_seconds: float = 0.5):
        self.head, self.frontend = head.eval(), head.frontend()
        super().__init__(head.hop_seconds, threshold, min_speech_seconds, min_silence_seconds)

    def reset(self) -> None:
        super().reset()
        self.frontend.reset()
        self._past = torch.zeros(0, self.head.n_mels)

    @torch.no_grad()
    def frame_probs(self, chunk: np.ndarray) -> list[float]:
        new = self.frontend(chunk)
        if len(new) == 0:
            return []
        feats = torch.cat([self._past, new])
        self._past = feats[-(self.head.context - 1):] if self.head.context > 1 else feats[:0]
        return torch.sigmoid(self.head(feats[None]))[0, -len(new):].tolist()


# ------------------------------------------------------------------------------------- training data
def tts_sentences() -> tuple[list[str], list[str]]:
    """Short fortune sentences for the speech, split into (train, held-out) by a stable hash of the text."""
    sentences = short_sentences(max_words=14, min_words=4)
    held = {t for t in sentences if split_of(_SENTENCE_SPLIT_KEY, t) == "test"}
    return [t for t in sentences if t not in held], sorted(held)


@dataclass
class LabelledStream:
    wave: np.ndarray                       # float32 mono
    labels: np.ndarray                     # (n_frames,) 1 inside an utterance, 0 outside
    segments: list[tuple[float, float]] = field(default_factory=list)   # utterance (start, end) seconds


def synth_streams(n: int, voices: Sequence[str], seed: int, sentences: Sequence[str],
                  sampling_rate: int = SAMPLING_RATE, hop_seconds: float = LABEL_HOP_SECONDS) -> list[LabelledStream]:
    """``n`` streams of 1-2 utterances with silences, background noise, gain changes and tones.

    Labels come from the clean speech: an utterance spans its first to last frame within 40 dB of its
    peak energy, so the short pauses between words count as speech (they are not turn ends).
    """
    rng = np.random.default_rng(seed)
    hop = int(round(hop_seconds * sampling_rate))
    sec = lambda a, b: int(rng.uniform(a, b) * sampling_rate)
    streams = []
    for _ in range(n):
        parts, segments, t = [np.zeros(sec(0.3, 1.2), np.float32)], [], 0
        t = len(parts[0])
        for _u in range(int(rng.integers(1, 3))):
            speech = flite(str(rng.choice(sentences)), str(rng.choice(voices)), float(rng.choice(SPEEDS)), sampling_rate)
            speech = speech * rng.uniform(0.1, 1.0) / max(1e-6, float(np.abs(speech).max()))
            energy = np.convolve(speech ** 2, np.ones(hop) / hop, mode="same")
            active = np.flatnonzero(energy > energy.max() * 1e-4)
            segments.append(((t + active[0]) / sampling_rate, (t + active[-1]) / sampling_rate))
            gap = np.zeros(sec(0.8, 1.5), np.float32)
            parts += [speech.astype(np.float32), gap]
            t += len(speech) + len(gap)
        wave = np.concatenate(parts)
        wave += rng.normal(0, 10 ** rng.uniform(-4, -1.7), len(wave)).astype(np.float32)   # -80..-34 dBFS noise
        if rng.random() < 0.4:                                       # a tone or hum is not speech
            tt = np.arange(len(wave)) / sampling_rate
            on = (tt > rng.uniform(0, tt[-1])) & (tt < rng.uniform(0, tt[-1]) + 1.0)
            wave += (on * rng.uniform(0.02, 0.3) * np.sin(2 * np.pi * rng.uniform(100, 2000) * tt)).astype(np.float32)
        n_frames = (len(wave) - int(0.025 * sampling_rate)) // hop + 1
        times = np.arange(n_frames) * hop_seconds
        labels = np.zeros(n_frames, np.float32)
        for a, b in segments:
            labels[(times + 0.0125 >= a) & (times + 0.0125 <= b)] = 1
        streams.append(LabelledStream(wave.astype(np.float32), labels, segments))
    return streams


# ----------------------------------------------------------------------------------- train / evaluate
def train_speech_boundary_head(streams: Sequence[LabelledStream], steps: int = 150, lr: float = 3e-3, seed: int = 0,
                               batch_size: int = 16, crop: int = 200, **head_kwargs) -> SpeechBoundaryHead:
    """Fit a :class:`SpeechBoundaryHead` on labelled streams (frame-level BCE on random windows, Adam)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)             # convs this small only lose time to thread hand-offs on a busy CPU
    try:
        return _train(streams, steps, lr, seed, batch_size, crop, head_kwargs)
    finally:
        torch.set_num_threads(threads)


def _train(streams, steps, lr, seed, batch_size, crop, head_kwargs) -> SpeechBoundaryHead:
    torch.manual_seed(seed)
    head = SpeechBoundaryHead(**head_kwargs)
    front = head.frontend()
    feats = [front.offline(s.wave) for s in streams]
    for f, s in zip(feats, streams):
        if len(f) != len(s.labels):
            raise ValueError(f"stream has {len(f)} frames but {len(s.labels)} labels: build streams with "
                             f"synth_streams(hop_seconds={head.hop_seconds}, sampling_rate={head.sampling_rate})")
    allf = torch.cat(feats)
    head.mean.copy_(allf.mean(0))
    head.std.copy_(allf.std(0) + 1e-3)
    # random windows of ``crop`` frames: cheaper steps than the full batch, same receptive field
    g = torch.Generator().manual_seed(seed)
    ys = [torch.from_numpy(s.labels) for s in streams]
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    for _ in range(steps):
        idx = torch.randint(len(feats), (batch_size,), generator=g).tolist()
        starts = [int(torch.randint(max(1, len(feats[i]) - crop), (1,), generator=g)) for i in idx]
        x = torch.stack([nn.functional.pad(feats[i][a:a + crop], (0, 0, 0, crop - len(feats[i][a:a + crop])))
                         for i, a in zip(idx, starts)])
        y = torch.stack([nn.functional.pad(ys[i][a:a + crop], (0, crop - len(ys[i][a:a + crop]))) for i, a in zip(idx, starts)])
        mask = torch.stack([torch.arange(crop) < len(ys[i]) - a for i, a in zip(idx, starts)]).float()
        loss = (nn.functional.binary_cross_entropy_with_logits(head(x), y, reduction="none") * mask).sum() / mask.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return head.eval()


def detect(head: SpeechBoundaryHead | BoundaryDecider, wave: np.ndarray, chunk_seconds: float = 0.1,
           **detector_kwargs) -> tuple[list[BoundaryEvent], np.ndarray]:
    """Run a detector (a :class:`BoundaryDecider`, reset first, or one built on ``head``) over ``wave`` in
    real-time-sized chunks; return its events and its probabilities (one per ``hop_seconds``)."""
    det = head if isinstance(head, BoundaryDecider) else SpeechBoundaryDetector(head, **detector_kwargs)
    det.reset()
    step = max(1, int(chunk_seconds * SAMPLING_RATE))
    events = [e for i in range(0, len(wave), step) for e in det.push(wave[i:i + step])]
    return events, np.asarray(det.probs)


def evaluate_boundaries(head: SpeechBoundaryHead | BoundaryDecider, streams: Sequence[LabelledStream],
                        tolerance: float = 0.25, chunk_seconds: float = 0.1, **detector_kwargs) -> dict[str, float]:
    """Frame accuracy (at the labels' 10 ms) and boundary precision / recall / F1 (an event matches a true
    boundary of the same kind within ``tolerance`` seconds), plus the mean delay from true end of speech to
    the end event. ``head`` is the separate detector's head or any :class:`BoundaryDecider`."""
    tp = n_pred = n_true = 0
    correct = total = 0
    delays = []
    det = head if isinstance(head, BoundaryDecider) else SpeechBoundaryDetector(head, **detector_kwargs)
    for s in streams:
        events, probs = detect(det, s.wave, chunk_seconds)
        per_label = np.repeat(probs, max(1, round(det.hop_seconds / LABEL_HOP_SECONDS)))[: len(s.labels)]
        correct += int(((per_label >= det.threshold) == (s.labels[: len(per_label)] > 0.5)).sum())
        total += len(per_label)
        truth = [("speech_start", a) for a, _ in s.segments] + [("speech_end", b) for _, b in s.segments]
        n_pred, n_true = n_pred + len(events), n_true + len(truth)
        used = set()
        for kind, t in truth:
            hit = [i for i, e in enumerate(events) if i not in used and e.kind == kind and abs(e.time - t) <= tolerance]
            if hit:
                used.add(hit[0])
                tp += 1
                if kind == "speech_end":
                    delays.append(events[hit[0]].decided_at - t)
    p, r = tp / max(1, n_pred), tp / max(1, n_true)
    return {"frame_accuracy": correct / max(1, total), "boundary_precision": p, "boundary_recall": r,
            "boundary_f1": 2 * p * r / max(1e-9, p + r), "end_decision_delay_s": float(np.mean(delays)) if delays else float("nan"),
            "n_streams": len(streams)}


def held_out_streams(n: int = 24) -> list[LabelledStream]:
    """Streams no boundary decider trains on: voice ``awb``, sentences of the held-out split."""
    return synth_streams(n, ("awb",), seed=1, sentences=tts_sentences()[1])


def load_or_train_speech_boundary(path: str | Path | None = None, voices: Sequence[str] = ("slt", "kal16", "rms"),
                                  n_streams: int = 48, steps: int = 150, seed: int = 0) -> SpeechBoundaryHead:
    """The head saved in directory ``path`` (by convention ``<checkpoint>/speech_boundary``); if there is none,
    train one (seconds) and save it there. ``path=None``: train and keep it in memory only."""
    path = Path(path) if path is not None else None
    if path is not None and (path / "config.json").exists():
        return SpeechBoundaryHead.from_pretrained(str(path)).eval()
    head = train_speech_boundary_head(synth_streams(n_streams, voices, seed, tts_sentences()[0]),
                                      steps=steps, seed=seed)
    if path is not None:
        head.save_pretrained(str(path))
    return head


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m omni_core.speech_boundary --out checkpoints/speech_boundary``: train the head, save it, and
    score it on held-out streams (voice ``awb``, sentences never trained on)."""
    import argparse

    from omni_core.config import REPO_ROOT, load_config

    ap = argparse.ArgumentParser(description=main.__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="directory of the head, e.g. checkpoints/speech_boundary")
    ap.add_argument("--params", default=str(REPO_ROOT / "params.yaml"))
    ap.add_argument("--metrics", default=None, help="JSON file for the held-out metrics (default: print only)")
    ap.add_argument("--retrain", action="store_true", help="train even if --out holds a head")
    args = ap.parse_args(argv)
    cfg = load_config(args.params).stream
    path = Path(args.out)
    if args.retrain and (path / "config.json").exists():
        (path / "config.json").unlink()
    head = load_or_train_speech_boundary(path)
    held_out = held_out_streams()
    metrics = evaluate_boundaries(head, held_out, chunk_seconds=cfg.chunk_seconds, threshold=cfg.end_threshold,
                                  min_speech_seconds=cfg.min_speech_seconds, min_silence_seconds=cfg.min_silence_seconds)
    report(metrics, args.metrics)


def report(metrics: dict, path: str | Path | None = None) -> None:
    """Print held-out boundary metrics as JSON, and write them to ``path`` when one is given."""
    print(json.dumps(metrics, indent=2))
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(metrics, indent=2) + "\n")


if __name__ == "__main__":
    main()
