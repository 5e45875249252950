"""Audio side: Whisper encoder over fixed windows and the Conv-GMLP projector (token counts: token_counts.py).

Whisper sees 16 kHz audio as 100 mel frames/s and emits 50 frames/s; its encoder only takes full windows
(30 s at full scale), so audio is split into windows, each padded to the window, and the encoder frames
of one clip are concatenated again and cut to the clip's real length before the projector. The
projector's stride n gives 50/n tokens per second.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import WhisperConfig, WhisperFeatureExtractor
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from omni_core.model.pretrained import EXPECTED
from omni_core.model.token_counts import FRAME_SAMPLES, MEL_HOP, SAMPLING_RATE, source_positions, window_samples


# -------------------------------------------------------------------------------------------- features
def feature_extractor(num_mel_bins: int) -> WhisperFeatureExtractor:
    """Log-mel front end; the mel filters are computed locally (no download)."""
    return WhisperFeatureExtractor(feature_size=num_mel_bins, sampling_rate=SAMPLING_RATE, hop_length=MEL_HOP)


def audio_to_features(wav: np.ndarray, extractor: WhisperFeatureExtractor, window_seconds: float) -> torch.Tensor:
    """16 kHz mono float32 -> (n_windows, n_mels, 2 * max_source_positions), each window padded to its length."""
    size = window_samples(window_seconds)
    chunks = [wav[i:i + size] for i in range(0, max(len(wav), 1), size)]
    out = extractor(chunks, sampling_rate=SAMPLING_RATE, padding="max_length", max_length=size, truncation=True,
                    return_tensors="pt")
    return out["input_features"].float()


# --------------------------------------------------------------------------------------------- modules
class ConvGMLP(nn.Module):
    """Conv-GMLP audio projector (Baichuan-Omni; the block of Baichuan-Omni-1.5's audio bridge).

    Two parallel Conv1d branches with kernel = stride = n each shorten the sequence n-fold and widen it
    n-fold; one goes through SiLU and gates the other; a Linear mixes the product; a residual adds the
    same n frames regrouped into one vector; LayerNorm; then a Linear maps to the LLM width.
    (B, L, d) -> (B, ceil(L / n), d_llm); the tail is zero-padded to a multiple of n.
    """

    def __init__(self, in_dim: int, out_dim: int, downsample: int = 4):
        super().__init__()
        self.n = downsample
        width = in_dim * downsample
        self.gate = nn.Conv1d(in_dim, width, kernel_size=downsample, stride=downsample)
        self.up = nn.Conv1d(in_dim, width, kernel_size=downsample, stride=downsample)
        self.act = nn.SiLU()
        self.mix = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Linear(width, out_dim)

    def num_output_tokens(self, num_frames: int) -> int:
        return math.ceil(num_frames / self.n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, length, d = x.shape
        pad = (-length) % self.n
        if pad:
            x = nn.functional.pad(x, (0, 0, 0, pad))
        xt = x.transpose(1, 2)                                          # (B, d, L) for Conv1d
        gated = self.act(self.gate(xt)) * self.up(xt)                   # (B, n*d, L/n)
        residual = x.reshape(b, -1, self.n * d)                         # n frames regrouped
        return self.proj(self.norm(self.mix(gated.transpose(1, 2)) + residual))


def whisper_encode(encoder: WhisperEncoder, features: torch.Tensor) -> torch.Tensor:
    """``encoder``'s forward over mel ``features`` (B, mels, 2T) of any even length up to its window: the first T
    position rows, and no padding frames to attend to. (Whisper's own forward insists on the whole window.)"""
    x = nn.functional.gelu(encoder.conv1(features))
    x = nn.functional.gelu(encoder.conv2(x)).permute(0, 2, 1)
    x = x + encoder.embed_positions(torch.arange(x.shape[1], device=x.device))
    x = nn.functional.dropout(x, p=encoder.dropout, training=encoder.training)
    for layer in encoder.layers:          # Whisper's LayerDrop is 0 in every released checkpoint; not drawn here
        x = layer(x, None)
    return encoder.layer_norm(x)


def build_audio_encoder(config: WhisperConfig) -> WhisperEncoder:
    return WhisperEncoder(config)


class _WhisperEncoderLoader(WhisperEncoder):
    """Loads the encoder alone out of a `WhisperForConditionalGeneration` / `WhisperModel` checkpoint (the decoder
    is never built), also under ZeRO-3's partitioned load.

    With `HfDeepSpeedConfig` alive, transformers initialises modules after their weights are loaded, and
    Whisper's own init computes sinusoids from ``embed_positions``' local shape, the empty partition (0,):
    ``sinusoids() missing 1 required positional argument: 'channels'`` (loading `WhisperForConditionalGeneration`
    did). transformers skips the init of a weightless module of a class defined outside it, which this is;
    `_init_weights` says the same explicitly, so the load does not hang on that rule: a loaded table needs no init.
    """

    _keys_to_ignore_on_load_unexpected = [r"^(model\.)?decoder\.", r"^proj_out\."]
    _checkpoint_keys = {r"^(model\.)?encoder\.": ""}    # from_pretrained's key_mapping: checkpoint key -> ours

    def _init_weights(self, module: nn.Module) -> None:
        if module is self and getattr(self.embed_positions.weight, "_is_hf_initialized", False):
            return                 # loaded (PreTrainedModel's own init does nothing for the encoder module itself)
        super()._init_weights(module)


def _zero3_partitioned(module: nn.Module) -> bool:
    return any(hasattr(p, "ds_shape") for p in module.parameters())


def load_audio_encoder(path: str | Path, window_seconds: float, dtype: torch.dtype = torch.float32) -> WhisperEncoder:
    """The encoder of a local Whisper checkpoint; a window shorter than 30 s keeps the first position rows."""
    encoder, info = _WhisperEncoderLoader.from_pretrained(path, dtype=dtype, key_mapping=_WhisperEncoderLoader._checkpoint_keys,
                                                          output_loading_info=True)
    if info["missing_keys"]:
        raise ValueError(f"model.audio.path = {str(path)!r}: the checkpoint lacks the Whisper encoder weights "
                         f"{sorted(info['missing_keys'])[:5]}; put {EXPECTED['audio']} there")
    encoder.__class__ = WhisperEncoder             # a plain Whisper encoder from here on
    positions = source_positions(window_seconds)
    if positions > encoder.config.max_source_positions:
        raise ValueError(f"model.audio.window_seconds = {window_seconds} is longer than the {path} encoder's "
                         f"window ({encoder.config.max_source_positions * FRAME_SAMPLES / SAMPLING_RATE:.0f} s)")
    if positions == encoder.config.max_source_positions:
        return encoder
    config = WhisperConfig(**{**encoder.config.to_dict(), "max_source_positions": positions})
    short = WhisperEncoder(config).to(dtype)
    if _zero3_partitioned(encoder):        # ZeRO-3: gather the whole encoder to copy it (DeepSpeed partitions `short`)
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(encoder.parameters())):
            state = {k: v.clone() for k, v in encoder.state_dict().items()}
    else:
        state = encoder.state_dict()
    state["embed_positions.weight"] = state["embed_positions.weight"][:positions]
    short.load_state_dict(state)
    return short
