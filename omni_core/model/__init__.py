"""The Baichuan-Omni model: `build_model(cfg, tokenizer)` and its HF classes (registered with the Auto classes)."""
from omni_core.model.configuration import OmniConfig
from omni_core.model.omni import OmniForConditionalGeneration, build_model
from omni_core.model.tokenizer import load_tokenizer, prepare_tokenizer, train_tokenizer

__all__ = ["OmniConfig", "OmniForConditionalGeneration", "build_model", "load_tokenizer", "prepare_tokenizer",
           "train_tokenizer"]
