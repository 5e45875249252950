"""The Baichuan-Omni model: `build_model(cfg, tokenizer)` and its HF classes (registered with the Auto classes).

Names load on first use (PEP 562): `omni_core.model.token_counts` is used where nothing else of the model is
(the figures' token budget), and importing torch's and transformers' modeling code takes ~4 s (the package
itself imports only `transformers.utils`, 0.7 s).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_WHERE = {"OmniConfig": "configuration", "OmniForConditionalGeneration": "omni", "build_model": "omni",
          "load_tokenizer": "tokenizer", "prepare_tokenizer": "tokenizer", "train_tokenizer": "tokenizer"}
__all__ = ["OmniConfig", "OmniForConditionalGeneration", "build_model", "load_tokenizer", "prepare_tokenizer",
           "train_tokenizer"]


def _hide_sklearn_from_generation() -> None:
    """transformers' generation code imports scikit-learn (0.8 s of every process that builds the model; a
    `dvc repro` starts 13) only to adapt assisted decoding's confidence threshold, which nothing here uses.
    The modules transformers imports from now on see it absent; its own import checks still find it."""
    import sys

    if "transformers.generation.candidate_generator" not in sys.modules:
        import transformers.utils

        transformers.utils.is_sklearn_available = lambda: False


_hide_sklearn_from_generation()

if TYPE_CHECKING:
    from omni_core.model.configuration import OmniConfig
    from omni_core.model.omni import OmniForConditionalGeneration, build_model
    from omni_core.model.tokenizer import load_tokenizer, prepare_tokenizer, train_tokenizer


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
