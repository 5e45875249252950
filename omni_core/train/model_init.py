"""What a stage starts from: the checkpoint of the stage it follows (`init_from`, passed through the
stages a profile disables) or a fresh model built from the config, with LoRA adapters when the stage
trains the LLM and `train.lora_rank > 0`.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from omni_core.config import Config, StageConfig


def apply_lora(model: nn.Module, rank: int) -> nn.Module:
    """Wrap the LLM with peft LoRA adapters (rank r, alpha 2r, every linear layer but the LM head)."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules="all-linear")
    model.llm = get_peft_model(model.llm, lora)
    return model


def init_model(cfg: Config, stage: StageConfig, dtype: torch.dtype | None = None):
    """Model and processor a stage starts from: `checkpoints/<init_from>/model`, or a fresh model.

    Returns (model, processor). The LLM gets LoRA adapters when `train.lora_rank > 0` and the stage
    trains it.
    """
    from omni_core.model import OmniForConditionalGeneration, build_model, load_tokenizer
    from omni_core.model.attention import resolve_attn
    from omni_core.processing import OmniProcessor
    from omni_core.train.run_state import stage_dir

    init = cfg.starts_from(stage)
    attn = resolve_attn(cfg.model.attn_implementation)
    dtype = dtype or getattr(torch, cfg.model.dtype)
    if init is not None:
        src = stage_dir(cfg, init) / "model"
        if not (src / "config.json").exists():
            raise FileNotFoundError(
                f"stages.{stage.name} starts from {init!r} but {src} holds no model; train that stage "
                f"first: python -m omni_core.train --stage {init}")
        model = OmniForConditionalGeneration.from_pretrained(src, dtype=dtype, attn_implementation=attn)
        processor = OmniProcessor.from_pretrained(src)
    else:
        tok_dir = cfg.model.tokenizer.path or str(Path(cfg.data.root) / "tokenizer")
        processor = OmniProcessor(load_tokenizer(tok_dir, cfg.model.trust_remote_code), cfg.model)
        model = build_model(replace(cfg, model=replace(cfg.model, attn_implementation=attn)), processor.tokenizer)
        model = model.to(dtype)
    processor.images_as_video = stage.images_as_video
    if stage.init_video_projector:
        from transformers.integrations import is_deepspeed_zero3_enabled

        if is_deepspeed_zero3_enabled():      # weights partitioned at load: gather, copy, re-partition
            import deepspeed

            both = [*model.vision_projector.parameters(), *model.video_projector.parameters()]
            with deepspeed.zero.GatheredParameters(both, modifier_rank=0):
                model.init_video_projector_from_image()
        else:
            model.init_video_projector_from_image()
    if cfg.train.lora_rank > 0 and stage.lr.get("llm", 0.0) > 0:
        apply_lora(model, cfg.train.lora_rank)
    return model, processor
