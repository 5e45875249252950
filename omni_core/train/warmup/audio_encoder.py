"""Stage `0_audio` (objective `speech_ctc`): the stand-in for the pretrained Whisper encoder that the
paper's audio branch starts from (why: `encoders.py`).

The audio encoder + a linear head learn to transcribe the `asr` task's *train* split with a word-level
CTC loss (a blank plus every word of the train transcripts), the objective of CTC speech recognisers.
`val/wer` is the greedy CTC transcript's word error rate (jiwer) on the `asr` val split, `val/loss` its
CTC loss; words never seen in training cannot be produced and count as errors. Clips longer than one encoder window are split
into windows as the model splits them, and their frames concatenated again.
"""
from __future__ import annotations

from pathlib import Path

import jiwer
import torch
import torch.nn.functional as F
from torch import nn

from omni_core.config import Config, StageConfig
from omni_core.data.manifest import answer_text, media_parts, read_manifest
from omni_core.model.audio import audio_to_features, feature_extractor
from omni_core.model.token_counts import audio_num_frames
from omni_core.processing import load_audio
from omni_core.train.warmup.objective import EncoderObjective

TASK = "asr"
BLANK = 0


class SpeechCTC(nn.Module):
    """The audio encoder + a linear head over its frames: per-frame log-probabilities of blank + words."""

    def __init__(self, encoder: nn.Module, vocab_size: int):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.config.d_model, vocab_size + 1)

    def forward(self, windows: torch.Tensor, windows_per_clip: list[int], frames: torch.Tensor) -> torch.Tensor:
        """(sum W, mels, 2P) windows of B clips -> (T, B, V+1) log-probs, T = the longest clip's frames."""
        hidden = self.encoder(input_features=windows).last_hidden_state            # (sum W, P, d)
        clips = [h.reshape(-1, h.shape[-1])[:n] for h, n in
                 zip(torch.split(hidden, windows_per_clip), frames.tolist())]
        padded = nn.utils.rnn.pad_sequence(clips)                                   # (T, B, d)
        return self.head(padded).log_softmax(-1)


class SpeechClips:
    """The clips of ``tasks`` (transcription tasks) in one manifest split: encoder windows, real frame counts
    and transcripts. ``crop_multiple``: keep a one-window clip's mel columns only up to its frames rounded up
    to that multiple (the model's ``crop_to_clip`` encoding; the whole window otherwise)."""

    def __init__(self, manifest: Path, num_mel_bins: int, window_seconds: float, tasks: tuple[str, ...] = (TASK,),
                 crop_multiple: int | None = None):
        records = [r for r in read_manifest(manifest) if r["task"] in tasks]
        if not records:
            raise ValueError(f"{manifest}: no {' or '.join(repr(t) for t in tasks)} samples; the CTC objective trains "
                             f"on them (rerun `python -m omni_core.data prepare` or disable the stage)")
        extractor = feature_extractor(num_mel_bins)
        self.windows, self.frames, self.texts = [], [], []
        for r in records:
            audio = [p for p in media_parts(r) if p["type"] == "audio"]
            wav = load_audio(audio[0], manifest.parent)
            w = audio_to_features(wav, extractor, window_seconds)
            if crop_multiple and w.shape[0] == 1:
                keep = -(-audio_num_frames(len(wav)) // crop_multiple) * crop_multiple
                w = w[..., : 2 * min(keep, w.shape[-1] // 2)].contiguous()
            self.windows.append(w)
            self.frames.append(min(audio_num_frames(len(wav)), w.shape[0] * w.shape[-1] // 2))
            self.texts.append(answer_text(r).lower())

    def __len__(self) -> int:
        return len(self.texts)

    def batch(self, idx: list[int], device: torch.device) -> tuple[torch.Tensor, list[int], torch.Tensor]:
        return (torch.cat([self.windows[i] for i in idx]).to(device), [len(self.windows[i]) for i in idx],
                torch.tensor([self.frames[i] for i in idx]))


def best_paths(log_probs: torch.Tensor, frames: torch.Tensor) -> list[list[int]]:
    """Best path of each (T, B, 1 + V) column: per frame the likeliest symbol, repeats merged, blanks dropped;
    symbols as 0-based indices of the V non-blank classes."""
    return [[t - 1 for t in torch.unique_consecutive(log_probs[:n, b].argmax(-1)).tolist() if t != BLANK]
            for b, n in enumerate(frames.tolist())]


def greedy_decode(log_probs: torch.Tensor, frames: torch.Tensor, vocab: list[str]) -> list[str]:
    """Best-path transcripts over a word vocabulary."""
    return [" ".join(vocab[t] for t in path) for path in best_paths(log_probs, frames)]


def audio_encoder_objective(cfg: Config, stage: StageConfig, model: nn.Module, device: torch.device) -> EncoderObjective:
    """The `EncoderObjective` of objective `speech_ctc` around `model.audio_encoder`."""
    a, root = cfg.model.audio, Path(cfg.data.root)
    train, val = (SpeechClips(root / f"{split}.jsonl", a.num_mel_bins, a.window_seconds) for split in ("train", "val"))
    vocab = sorted({w for t in train.texts for w in t.split()})
    index = {w: i + 1 for i, w in enumerate(vocab)}
    ctc = SpeechCTC(model.audio_encoder, len(vocab)).to(device)

    def ctc_loss(data: SpeechClips, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        windows, per_clip, frames = data.batch(idx, device)
        log_probs = ctc(windows, per_clip, frames)
        targets = [torch.tensor([index[w] for w in data.texts[i].split() if w in index]) for i in idx]
        loss = F.ctc_loss(log_probs, torch.cat(targets), frames, torch.tensor([len(t) for t in targets]),
                          blank=BLANK, zero_infinity=True)
        return loss, log_probs, frames

    def loss(step: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(cfg.train.seed * 1_000_003 + step)
        return ctc_loss(train, torch.randint(len(train), (stage.batch_size,), generator=gen).tolist())[0]

    def validate(chunk: int = 64) -> dict[str, float]:
        hyps, total = [], 0.0
        for i in range(0, len(val), chunk):
            idx = list(range(i, min(i + chunk, len(val))))
            batch_loss, log_probs, frames = ctc_loss(val, idx)
            total += float(batch_loss) * len(idx)
            hyps += greedy_decode(log_probs, frames, vocab)
        return {"val/loss": total / len(val), "val/wer": 100.0 * jiwer.wer(val.texts, hyps)}

    return EncoderObjective(module=ctc, loss=loss, validate=validate, headline="val/wer", chance=100.0,
                   facts={"train_clips": len(train), "val_clips": len(val), "vocabulary": len(vocab)})
