"""Speech boundaries predicted by the omni model itself (paper section 5: "the model initially predicts the
start and end of audio inputs").

The streamed audio goes through the model's own audio path, Whisper encoder and Conv-GMLP projector, and
the first ``layer`` layers of its LLM, over a sliding window of ``context_seconds``; a linear head on the
hidden state of each new audio token (80 ms at downsample 4) gives its speech probability. The same rules
as the separate detector (:class:`omni_core.speech_boundary.BoundaryDecider`: a minimum speech run, a
silence hangover) turn these into start and end events. The window moves ``hop_tokens`` tokens at a time;
its start is padded with silence, in training as when streaming, so both see the same windows.

The head is trained after stage 2 with the model frozen, on the boundary data the project already
builds (:func:`omni_core.speech_boundary.synth_streams`); ``python -m omni_core.model_boundary`` trains it
and scores it beside the separate detector on held-out streams (an unseen voice and unseen sentences).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn
from tqdm.auto import tqdm

from omni_core.model.audio import audio_to_features, feature_extractor
from omni_core.model.token_counts import FRAME_SAMPLES, SAMPLING_RATE, audio_num_tokens
from omni_core.speech_boundary import LABEL_HOP_SECONDS, BoundaryDecider, LabelledStream

MODEL_BOUNDARY_SUBDIR = "model_boundary"     # by convention beside the stage checkpoints


class ModelBoundaryHead(nn.Module, PyTorchModelHubMixin):
    """Linear speech / non-speech head on the LLM's hidden state at ``layer`` (standardised first)."""

    def __init__(self, hidden_size: int, layer: int, downsample: int, context_seconds: float = 1.0,
                 hop_tokens: int = 2):
        super().__init__()
        self.hidden_size, self.layer, self.downsample = hidden_size, layer, downsample
        self.context_seconds, self.hop_tokens = context_seconds, hop_tokens
        self.register_buffer("mean", torch.zeros(hidden_size))
        self.register_buffer("std", torch.ones(hidden_size))
        self.proj = nn.Linear(hidden_size, 1)

    @property
    def token_samples(self) -> int:
        return self.downsample * FRAME_SAMPLES

    @property
    def step_samples(self) -> int:
        return self.hop_tokens * self.token_samples

    @property
    def context_samples(self) -> int:
        """The window: ``context_seconds`` rounded up to whole steps."""
        return int(np.ceil(self.context_seconds * SAMPLING_RATE / self.step_samples)) * self.step_samples

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.proj((hidden.float() - self.mean) / self.std).squeeze(-1)


class _StopForward(Exception):
    pass


@torch.no_grad()
def audio_hidden_states(model, windows: np.ndarray, layer: int, extractor=None) -> torch.Tensor:
    """The LLM's hidden states after ``layer`` layers (0: the projected audio itself) at the audio tokens of
    each window, read as a user turn's audio span (``<|audio_start|>`` then the pads): (B, tokens, d).
    The layers after ``layer`` never run."""
    mc = model.config
    extractor = extractor or feature_extractor(mc.audio_config.num_mel_bins)
    window_seconds = mc.audio_config.max_source_positions * FRAME_SAMPLES / SAMPLING_RATE
    feats = [audio_to_features(w, extractor, window_seconds) for w in windows]
    n_tok = audio_num_tokens(windows.shape[1], mc.audio_downsample)
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    ids = torch.tensor([[mc.media_token_id("audio", "start")] + [mc.media_token_id("audio", "pad")] * n_tok]
                       * len(windows), device=device)
    embeds = model.embed_inputs(ids, audio_features=torch.cat(feats).to(device, dtype),
                                audio_window_counts=torch.tensor([f.shape[0] for f in feats]),
                                audio_token_counts=torch.tensor([n_tok] * len(windows)))
    if layer == 0:
        return embeds[:, 1:]
    captured = {}

    def stop(_module, _args, output):
        captured["hidden"] = output[0] if isinstance(output, tuple) else output
        raise _StopForward

    handle = model.llm.get_decoder().layers[layer - 1].register_forward_hook(stop)
    try:
        model(inputs_embeds=embeds, use_cache=False)
    except _StopForward:
        pass
    finally:
        handle.remove()
    return captured["hidden"][:, 1:]


def _whole_windows(buffer: np.ndarray, ctx: int, step: int) -> np.ndarray:
    n = max(0, (len(buffer) - ctx) // step + 1)
    return np.stack([buffer[i * step:i * step + ctx] for i in range(n)]) if n else np.zeros((0, ctx), np.float32)


def stream_windows(wave: np.ndarray, head: ModelBoundaryHead) -> np.ndarray:
    """The windows a streaming detector evaluates over ``wave``: one per whole step, each ending at that step,
    the stream's start padded with silence. (n_steps, context_samples)."""
    ctx, step = head.context_samples, head.step_samples
    return _whole_windows(np.concatenate([np.zeros(ctx - step, np.float32), np.asarray(wave, np.float32)]), ctx, step)


def new_token_states(model, head: ModelBoundaryHead, windows: np.ndarray, batch_size: int = 32,
                     extractor=None) -> torch.Tensor:
    """Hidden states of each window's last ``hop_tokens`` tokens (the audio that is new in it): (n * hop_tokens, d)."""
    out = [audio_hidden_states(model, windows[i:i + batch_size], head.layer, extractor)[:, -head.hop_tokens:]
           for i in range(0, len(windows), batch_size)]
    return torch.cat(out).reshape(-1, head.hidden_size).float() if out else torch.zeros(0, head.hidden_size)


def token_labels(stream: LabelledStream, head: ModelBoundaryHead, n_tokens: int) -> np.ndarray:
    """Speech (1) / not (0) per audio token of the stream: the majority of the 10 ms labels in its span."""
    per = round(head.token_samples / (LABEL_HOP_SECONDS * SAMPLING_RATE))
    labels = np.pad(stream.labels, (0, max(0, n_tokens * per - len(stream.labels))))[: n_tokens * per]
    return (labels.reshape(n_tokens, per).mean(1) > 0.5).astype(np.float32)


class ModelBoundaryDetector(BoundaryDecider):
    """Streaming decider on :class:`ModelBoundaryHead`: one probability per audio token, evaluated a step at a time."""

    def __init__(self, model, head: ModelBoundaryHead, threshold: float = 0.5, min_speech_seconds: float = 0.1,
                 min_silence_seconds: float = 0.5, extractor=None):
        self.model, self.head = model.eval(), head.eval()
        self.extractor = extractor or feature_extractor(model.config.audio_config.num_mel_bins)
        super().__init__(head.token_samples / SAMPLING_RATE, threshold, min_speech_seconds, min_silence_seconds)

    def reset(self) -> None:
        super().reset()
        self._buffer = np.zeros(self.head.context_samples - self.head.step_samples, np.float32)

    @torch.no_grad()
    def frame_probs(self, chunk: np.ndarray) -> list[float]:
        buffer = np.concatenate([self._buffer, np.asarray(chunk, np.float32).reshape(-1)])
        windows = _whole_windows(buffer, self.head.context_samples, self.head.step_samples)
        self._buffer = buffer[len(windows) * self.head.step_samples:]     # the next window's history, and the rest
        if len(windows) == 0:
            return []
        return torch.sigmoid(self.head(new_token_states(self.model, self.head, windows, extractor=self.extractor))).tolist()


# ---------------------------------------------------------------------------------------------- training
def train_model_boundary_head(model, streams: Sequence[LabelledStream], layer: int | None = None,
                              context_seconds: float = 1.0, hop_tokens: int = 2, steps: int = 300, lr: float = 1e-2,
                              seed: int = 0) -> ModelBoundaryHead:
    """Fit the head on labelled streams with the model frozen (its hidden states are computed once)."""
    mc = model.config
    n_layers = mc.text_config.num_hidden_layers
    layer = max(1, n_layers // 4) if layer is None else layer
    if not 0 <= layer <= n_layers:
        raise ValueError(f"layer {layer}: the LLM has {n_layers} layers (0 = the projected audio itself)")
    torch.manual_seed(seed)
    head = ModelBoundaryHead(mc.text_config.hidden_size, layer, mc.audio_downsample, context_seconds, hop_tokens)
    extractor = feature_extractor(mc.audio_config.num_mel_bins)
    xs, ys = [], []
    for s in tqdm(streams, desc="model boundary features", leave=False):
        x = new_token_states(model.eval(), head, stream_windows(s.wave, head), extractor=extractor)
        xs.append(x)
        ys.append(torch.from_numpy(token_labels(s, head, len(x))))
    x, y = torch.cat(xs), torch.cat(ys)
    head.mean.copy_(x.mean(0))
    head.std.copy_(x.std(0) + 1e-3)
    opt = torch.optim.Adam(head.proj.parameters(), lr=lr)
    for _ in range(steps):                 # a linear probe on a few thousand tokens: full-batch steps
        loss = nn.functional.binary_cross_entropy_with_logits(head(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return head.eval()


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m omni_core.model_boundary --checkpoint checkpoints/2_sft/model --out checkpoints/model_boundary``:
    train the head on the model, save it, and score it beside the separate detector on held-out streams."""
    import argparse

    from omni_core.config import REPO_ROOT, load_config
    from omni_core.eval.runner import load_checkpoint
    from omni_core.speech_boundary import (
        evaluate_boundaries,
        held_out_streams,
        load_or_train_speech_boundary,
        report,
        synth_streams,
        tts_sentences,
    )

    ap = argparse.ArgumentParser(description=main.__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", required=True, help="the trained model, e.g. checkpoints/2_sft/model")
    ap.add_argument("--out", required=True, help="directory of the head, e.g. checkpoints/model_boundary")
    ap.add_argument("--speech-boundary", default=None, help="the separate detector's head, scored beside it")
    ap.add_argument("--params", default=str(REPO_ROOT / "params.yaml"))
    ap.add_argument("--profile", default=None)
    ap.add_argument("--layer", type=int, default=None, help="LLM layer the head reads (default: a quarter of the depth)")
    ap.add_argument("--streams", type=int, default=None, help="training streams (default: stream.boundary_streams; "
                    "half as many are held out to score both deciders)")
    ap.add_argument("--metrics", default=None, help="JSON file for the held-out comparison")
    args = ap.parse_args(argv)
    cfg = load_config(args.params, profile=args.profile)
    model, _ = load_checkpoint(cfg, args.checkpoint)
    n_streams = args.streams or cfg.stream.boundary_streams
    train = synth_streams(n_streams, ("slt", "kal16", "rms"), seed=0, sentences=tts_sentences()[0])
    head = train_model_boundary_head(model, train, args.layer)
    head.save_pretrained(args.out)
    rules = dict(threshold=cfg.stream.end_threshold, min_speech_seconds=cfg.stream.min_speech_seconds,
                 min_silence_seconds=cfg.stream.min_silence_seconds)
    held_out = held_out_streams(max(4, n_streams // 2))
    deciders = {"model": ModelBoundaryDetector(model, head, **rules),
                "detector": load_or_train_speech_boundary(args.speech_boundary)}
    metrics = {"layer": head.layer, "context_seconds": head.context_seconds, "hop_tokens": head.hop_tokens,
               **{name: evaluate_boundaries(d, held_out, chunk_seconds=cfg.stream.chunk_seconds,
                                            **({} if name == "model" else rules))
                  for name, d in deciders.items()}}
    report(metrics, args.metrics)


if __name__ == "__main__":
    main()
