"""The paper's model at full scale without its weights: the backbones' configs, and the model on the meta device.

Shapes and parameter counts cost neither memory nor a download, so the walkthrough and the memory estimates
show the 7B architecture on any machine.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PretrainedConfig


def paper_backbone_configs() -> tuple[PretrainedConfig, PretrainedConfig, PretrainedConfig]:
    """Configs of the paper's backbones (no weights): a Qwen2-7B-class LLM, siglip-so400m-patch14-384 (without
    its pooling head: every patch token is used) and the whisper-large-v3 encoder."""
    from transformers import Qwen2Config, SiglipVisionConfig, WhisperConfig

    text = Qwen2Config(vocab_size=152064, hidden_size=3584, num_hidden_layers=28, num_attention_heads=28,
                       num_key_value_heads=4, intermediate_size=18944)
    vision = SiglipVisionConfig(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                                image_size=384, patch_size=14, vision_use_head=False)
    audio = WhisperConfig(num_mel_bins=128, d_model=1280, encoder_layers=32, encoder_attention_heads=20,
                          encoder_ffn_dim=5120, max_source_positions=1500)
    return text, vision, audio


def full_scale_model_on_meta(tokenizer, profile: str = "full"):
    """(cfg, model): the full profile's architecture with the paper's backbone sizes, built on the meta device
    (shapes and parameter counts without memory or weights; for teaching and for memory estimates)."""
    import torch

    from omni_core.config import load_config
    from omni_core.model.omni import OmniForConditionalGeneration, omni_config

    cfg = load_config(profile=profile, overrides={"model": {"attn_implementation": "sdpa"}})
    config = omni_config(cfg.model, tokenizer, *paper_backbone_configs())
    with torch.device("meta"):
        return cfg, OmniForConditionalGeneration(config)
