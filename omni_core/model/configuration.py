"""`OmniConfig`: the composite HF config of the Baichuan-Omni model.

Three sub-configs (any causal-LM config for the text side, `SiglipVisionConfig`, `WhisperConfig` whose
encoder is used) plus the projector settings and the ids of the media special tokens. Registered with
`AutoConfig` / `AutoModel*` so `from_pretrained` on a saved checkpoint works without our code being named.
"""
from __future__ import annotations

from transformers import AutoConfig, PreTrainedConfig, SiglipVisionConfig, WhisperConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

# The media special tokens, in a fixed order: the processor adds them to the tokenizer, the model splices
# features in place of the `pad` tokens, the streaming code watches `start`/`end`.
MEDIA = ("image", "video", "audio")
SPECIAL_TOKENS = {m: {k: f"<|{m}_{k}|>" for k in ("start", "pad", "end")} for m in MEDIA}


class OmniConfig(PreTrainedConfig):
    r"""Configuration of [`OmniForConditionalGeneration`].

    Args:
        text_config: config of the causal LM (any `AutoModelForCausalLM` architecture).
        vision_config: `SiglipVisionConfig` of the tile encoder (`image_size` = AnyRes tile side).
        audio_config: `WhisperConfig`; only the encoder is used, `max_source_positions` = 50 x window seconds.
        vision_pool: tokens of `vision_pool**2` consecutive patches are averaged before the image projector.
        video_pool: video frames first average runs of `video_pool**2` patch rows, then the projector's groups.
        audio_downsample: Conv-GMLP stride n (50/n audio tokens per second).
        max_tiles: AnyRes grid tiles (plus one global thumbnail).
        projector_hidden_act: activation of the 2-layer MLP projectors.
        {image,video,audio}_{start,pad,end}_token_id: ids of the media special tokens.
    """

    model_type = "baichuan_omni"
    sub_configs = {"text_config": AutoConfig, "vision_config": SiglipVisionConfig, "audio_config": WhisperConfig}

    text_config: dict | PreTrainedConfig | None = None
    vision_config: dict | PreTrainedConfig | None = None
    audio_config: dict | PreTrainedConfig | None = None
    vision_pool: int = 2
    video_pool: int = 2
    audio_downsample: int = 4
    max_tiles: int = 4
    projector_hidden_act: str = "gelu"
    initializer_range: float = 0.02
    tie_word_embeddings: bool = False
    image_start_token_id: int | None = None
    image_pad_token_id: int | None = None
    image_end_token_id: int | None = None
    video_start_token_id: int | None = None
    video_pad_token_id: int | None = None
    video_end_token_id: int | None = None
    audio_start_token_id: int | None = None
    audio_pad_token_id: int | None = None
    audio_end_token_id: int | None = None

    def __post_init__(self, **kwargs):
        if isinstance(self.text_config, dict):
            text = dict(self.text_config)
            self.text_config = CONFIG_MAPPING[text.pop("model_type", "qwen2")](**text)
        elif self.text_config is None:
            self.text_config = CONFIG_MAPPING["qwen2"]()
        if isinstance(self.vision_config, dict):
            vision = {k: v for k, v in self.vision_config.items() if k != "model_type"}
            self.vision_config = SiglipVisionConfig(**vision)
        elif self.vision_config is None:
            self.vision_config = SiglipVisionConfig(vision_use_head=False)
        if isinstance(self.audio_config, dict):
            audio = {k: v for k, v in self.audio_config.items() if k != "model_type"}
            self.audio_config = WhisperConfig(**audio)
        elif self.audio_config is None:
            self.audio_config = WhisperConfig()
        # the LM's tying decides for the whole model (HF reads it from the top-level config)
        self.tie_word_embeddings = bool(getattr(self.text_config, "tie_word_embeddings", False))
        for name in ("vision_pool", "video_pool", "audio_downsample", "max_tiles"):
            if getattr(self, name) < 1:
                raise ValueError(f"OmniConfig.{name} = {getattr(self, name)} must be >= 1")
        super().__post_init__(**kwargs)

    def media_token_id(self, media: str, kind: str = "pad") -> int:
        """Id of ``<|{media}_{kind}|>``; raises if the config was built without a tokenizer."""
        value = getattr(self, f"{media}_{kind}_token_id")
        if value is None:
            raise ValueError(f"OmniConfig.{media}_{kind}_token_id is unset: build the model with build_model(cfg, "
                             "tokenizer) so the media special tokens get ids")
        return value
