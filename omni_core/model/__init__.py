"""The Baichuan-Omni model: `build_model(cfg, tokenizer)` and its HF classes (registered with the Auto classes).

Names load on first use (PEP 562): `omni_core.model.token_counts` is used where nothing else of the model is
(the figures' token budget), and importing torch's and transformers' modeling code takes ~4 s (the package
itself imports only `transformers.utils`, 0.7 s).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from omni_core.import_speedups import hide_sklearn_from_generation

_WHERE = {"OmniConfig": "configuration", "OmniForConditionalGeneration": "omni", "build_model": "omni",
          "load_tokenizer": "tokenizer", "prepare_tokenizer": "tokenizer", "train_tokenizer": "tokenizer"}
__all__ = ["OmniConfig", "OmniForConditionalGeneration", "build_model", "load_tokenizer", "prepare_tokenizer",
           "train_tokenizer"]


hide_sklearn_from_generation()   # omni_core/import_speedups.py: 0.8 s of every process that builds the model

if TYPE_CHECKING:
    from omni_core.model.configuration import OmniConfig
    from omni_core.model.omni import OmniForConditionalGeneration, build_model
    from omni_core.model.tokenizer import load_tokenizer, prepare_tokenizer, train_tokenizer


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
