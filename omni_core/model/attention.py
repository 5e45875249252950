"""Which attention implementation a model loads with, on the machine at hand."""
from __future__ import annotations

import importlib.util
import logging

import torch

log = logging.getLogger(__name__)


def resolve_attn(requested: str) -> str:
    """The attention implementation to load with: flash_attention_2 only where it is installed and a
    CUDA device exists, else sdpa (with a warning, so a full-profile config still runs on a laptop)."""
    if requested != "flash_attention_2":
        return requested
    if torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
        return requested
    log.warning("attn_implementation=flash_attention_2 needs the flash-attn package and a CUDA GPU; using sdpa")
    return "sdpa"
