"""What a stage starts from: the checkpoint of the stage it follows (`init_from`, passed through the
stages a profile disables) or a fresh model built from the config, with LoRA adapters when the stage
trains the LLM and `train.lora_rank > 0`.

The audio projector's rate (`model.audio.downsample`) is the one architecture knob a stage may change
on the way: the stages before the first one that trains the projector never use it, so DVC does not rerun
them when it changes (dvc.yaml), and that stage rebuilds a fresh projector at the new rate.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from omni_core.config import Config, StageConfig

log = logging.getLogger(__name__)


def apply_lora(model: nn.Module, rank: int) -> nn.Module:
    """Wrap the LLM with peft LoRA adapters (rank r, alpha 2r, every linear layer but the LM head)."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules="all-linear")
    model.llm = get_peft_model(model.llm, lora)
    return model


def match_audio_rate(model, processor, cfg: Config, stage: StageConfig, src: Path) -> None:
    """Give ``model`` a fresh Conv-GMLP at ``model.audio.downsample`` when the checkpoint ``src`` has another
    rate, initialised as a fresh model's would be (seeded by ``train.seed``; the global RNG is left as it was,
    so the rest of the run draws what it would have). Only a stage that trains the projector may do this."""
    from omni_core.model.audio import ConvGMLP

    n, old = cfg.model.audio.downsample, model.config.audio_downsample
    if n == old:
        return
    if stage.lr.get("audio_projector", 0.0) <= 0:
        raise ValueError(
            f"model.audio.downsample = {n}, but {src} was trained with {old} and stages.{stage.name} does not train "
            f"the audio projector (lr 0), so a projector at the new rate would stay untrained: retrain from the "
            f"first stage that trains it (lr.audio_projector > 0), or set model.audio.downsample back to {old}")
    old_proj = model.audio_projector
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)
        fresh = ConvGMLP(old_proj.gate.in_channels, old_proj.proj.out_features, n)
        fresh.apply(model._init_weights)
    model.audio_projector = fresh.to(dtype=old_proj.proj.weight.dtype, device=old_proj.proj.weight.device)
    model.config.audio_downsample = n
    processor.model_cfg = replace(processor.model_cfg, audio=replace(processor.model_cfg.audio, downsample=n))
    log.info("stages.%s: %s has audio projector rate n=%d, model.audio.downsample is %d: a fresh Conv-GMLP at "
             "n=%d, trained by this stage", stage.name, src, old, n, n)


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
        match_audio_rate(model, processor, cfg, stage, src)
    else:
        from omni_core.model.pretrained import check_backbones

        # every pretrained folder first: a missing models/llm-7b then gets the LLM's advice, not the tokenizer's
        check_backbones(cfg.model)
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
