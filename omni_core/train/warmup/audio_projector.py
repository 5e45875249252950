"""The audio projector's CTC warm-up (`stages.<name>.audio_projector_ctc_steps`): before a stage's
first step, the Conv-GMLP learns to put each spoken word where the LLM keeps that word's embedding.

Why: a 7B LLM learns to read soft tokens from the answer loss alone; the tiny profile's 4-layer LM does
not, or only late. With the projector trained from scratch by stage 1e's answer loss, it transcribed the
asr task's phrases from their template while it read each spoken digit 6-14 % of the time (chance 10 %)
after 120 steps, and only after ~300 steps began to read them (`benchmarks/bench_audio_reading.py`).
Here the projector's output tokens are scored against the LLM's own input-embedding matrix (plus a learned
blank), as if it were a CTC output layer over the LLM's vocabulary, on the *train* clips of the transcription
tasks in the stage's mixture (asr; asr_open, open-vocabulary, in the small profile) and their transcripts in the
LLM's tokens. The LLM, its embeddings and the audio encoder do not change; the
projector's tokens then look to the LLM like the words it already knows how to copy (LegoSLM and other
CTC-bridged speech LLMs use the same idea). `val/wer` is the greedy CTC transcript's WER on the same tasks' val
clips. The warm-up runs only when the stage starts fresh (a resumed stage has its projector already), on
every process alike (same seed, same batches), before the optimizer or DeepSpeed engine exists.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import jiwer
import torch
import torch.nn.functional as F
from torch import nn

from omni_core.config import Config, StageConfig
from omni_core.model.audio import whisper_encode
from omni_core.train.schedule import build_scheduler, clip_and_step
from omni_core.train.warmup.audio_encoder import BLANK, SpeechClips, best_paths

log = logging.getLogger(__name__)


class ProjectorCTC(nn.Module):
    """Encoder frames -> audio projector -> scores against [blank; the LLM's input embeddings]."""

    def __init__(self, model: nn.Module, token_ids: torch.Tensor | None = None):
        """``token_ids``: the LLM tokens scored (class i + 1 is ``token_ids[i]``); None scores all of them."""
        super().__init__()
        self.model = model
        width = model.get_input_embeddings().weight.shape[1]
        self.blank = nn.Parameter(torch.zeros(1, width))
        self.scale = nn.Parameter(torch.tensor(1.0))
        self.token_ids = token_ids

    def forward(self, encoded: torch.Tensor, windows_per_clip: list[int], frames: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder's frames of some clips' windows -> (T, B, 1 + vocab) log-probs over blank + the LLM's
        tokens, and each clip's token count (``frames``: each clip's real frame count)."""
        tokens = torch.tensor([self.model.audio_projector.num_output_tokens(int(f)) for f in frames])
        feats = self.model.project_audio(encoded, torch.tensor(windows_per_clip), tokens)
        embeddings = self.model.get_input_embeddings().weight.detach()
        table = torch.cat([self.blank, embeddings if self.token_ids is None else embeddings[self.token_ids]])
        logits = self.scale * feats @ table.T
        return nn.utils.rnn.pad_sequence(torch.split(logits, tokens.tolist())).log_softmax(-1), tokens


# the tasks whose answer is the audio's transcript: the warm-up reads those of its stage's mixture
TRANSCRIPTION_TASKS = ("asr", "asr_open")


def encode_clips(model: nn.Module, clips: SpeechClips, device: torch.device, chunk: int = 64) -> list[torch.Tensor]:
    """Each clip's windows through the (frozen) audio encoder, once: the warm-up draws every asr clip about
    ten times, and the encoder's pass was ~40 % of a warm-up step. (On CPU in fp32 a window's frames came out
    bit-identical whatever else shared its batch, so the warm-up trains as it did with a pass per step.)
    Clips cropped to their own length (``crop_to_clip``) run in batches of equal length."""
    out: list[torch.Tensor | None] = [None] * len(clips)
    by_shape: dict[tuple, list[int]] = {}
    for i, w in enumerate(clips.windows):
        by_shape.setdefault(tuple(w.shape), []).append(i)
    with torch.no_grad():
        for idx in by_shape.values():
            for lo in range(0, len(idx), chunk):
                part = idx[lo:lo + chunk]
                windows, per_clip, _ = clips.batch(part, device)
                full = windows.shape[-1] == 2 * model.config.audio_config.max_source_positions
                encoded = model.encode_audio(windows) if full else whisper_encode(model.audio_encoder, windows)
                for i, e in zip(part, torch.split(encoded, per_clip)):
                    out[i] = e
    return out


def warm_up_audio_projector(cfg: Config, stage: StageConfig, model: nn.Module, tokenizer,
                          device: torch.device) -> dict[str, float]:
    """Train `model.audio_projector` alone for `stage.audio_projector_ctc_steps` steps (at the stage's
    audio_projector lr, batch size and schedule shape); returns the summary's `projector_ctc_*` entries."""
    a, root = cfg.model.audio, Path(cfg.data.root)
    tasks = tuple(t for t in TRANSCRIPTION_TASKS if stage.mixture.get(t, 0) > 0) or ("asr",)
    crop = model.config.audio_downsample if model.config.audio_crop_to_clip else None
    train, val = (SpeechClips(root / f"{split}.jsonl", a.num_mel_bins, a.window_seconds, tasks, crop)
                  for split in ("train", "val"))
    # the training transcripts in the LLM's tokens, tokenized once, as CTC classes: shifted past the blank (vocab
    # "seen": numbered among the tokens those transcripts use; a val word made of others cannot be produced)
    train_ids = [torch.tensor(tokenizer(" " + t, add_special_tokens=False)["input_ids"]) for t in train.texts]
    token_ids = torch.unique(torch.cat(train_ids)) if stage.audio_projector_ctc_vocab == "seen" else None
    train_tg = [ids + 1 if token_ids is None else torch.searchsorted(token_ids, ids) + 1 for ids in train_ids]
    ctc = ProjectorCTC(model, token_ids).to(device)
    trainable = {p: p.requires_grad for p in model.parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    params = [*model.audio_projector.parameters(), ctc.blank, ctc.scale]
    for p in params:
        p.requires_grad_(True)
    steps = stage.audio_projector_ctc_steps
    optimizer = torch.optim.AdamW(params, lr=stage.lr["audio_projector"])
    scheduler = build_scheduler(optimizer, dataclasses.replace(stage, steps=steps))

    def scores(data: SpeechClips, encoded: list[torch.Tensor], idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        longest = max(encoded[i].shape[1] for i in idx)     # cropped clips differ in length: pad, project_audio cuts
        frames = torch.cat([F.pad(encoded[i], (0, 0, 0, longest - encoded[i].shape[1])) for i in idx])
        return ctc(frames, [len(data.windows[i]) for i in idx], torch.tensor([data.frames[i] for i in idx]))

    def loss_of(idx: list[int]) -> torch.Tensor:
        log_probs, lengths = scores(train, train_enc, idx)
        tg = [train_tg[i] for i in idx]
        return F.ctc_loss(log_probs, torch.cat(tg).to(device), lengths, torch.tensor([len(t) for t in tg]),
                          blank=BLANK, zero_infinity=True)

    def val_wer(chunk: int = 64) -> float:
        hyps = []
        with torch.no_grad():
            for lo in range(0, len(val), chunk):
                log_probs, lengths = scores(val, val_enc, list(range(lo, min(lo + chunk, len(val)))))
                for path in best_paths(log_probs, lengths):
                    hyps.append(tokenizer.decode(path if token_ids is None else token_ids[path].tolist()).strip())
        return 100.0 * jiwer.wer(val.texts, hyps)

    t0 = time.perf_counter()
    train_enc, val_enc = (encode_clips(model, d, device) for d in (train, val))
    out = {"projector_ctc_val_wer_start": val_wer()}
    gen = torch.Generator().manual_seed(cfg.train.seed)
    from tqdm.auto import tqdm

    for _ in tqdm(range(steps), desc="audio projector CTC warm-up", leave=False, dynamic_ncols=True):
        idx = torch.randint(len(train), (stage.batch_size,), generator=gen).tolist()
        loss = loss_of(idx)
        loss.backward()
        clip_and_step(params, optimizer, scheduler, stage.max_grad_norm)
    for p, flag in trainable.items():
        p.requires_grad_(flag)
    out.update(projector_ctc_loss_end=float(loss.detach()), projector_ctc_val_wer_end=val_wer(),
               projector_ctc_steps=steps, projector_ctc_wall_s=time.perf_counter() - t0)
    log.info("audio projector CTC warm-up: val WER %.1f -> %.1f %% over the LLM's embeddings (%d steps, %.0f s)",
             out["projector_ctc_val_wer_start"], out["projector_ctc_val_wer_end"], steps, out["projector_ctc_wall_s"])
    return out
