"""`OmniConfig`: the composite HF config of the Baichuan-Omni model.

Three sub-configs (any causal-LM config for the text side, `SiglipVisionConfig`, `WhisperConfig` whose
encoder is used) plus the projector settings and the ids of the media special tokens. Registered with
`AutoConfig` / `AutoModel*` so `from_pretrained` on a saved checkpoint works without our code being named.
An LLM that ships its own code (Baichuan: ``auto_map`` in its config) is rebuilt from that code only when the
config's ``trust_remote_code`` is set; `OmniForConditionalGeneration.save_pretrained` copies the code into the
checkpoint, which then loads without the LLM's directory.
"""
from __future__ import annotations

from pathlib import Path

from transformers import AutoConfig, PreTrainedConfig, SiglipVisionConfig, WhisperConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from omni_core.model.pretrained import RemoteCodeError
from omni_core.model.token_counts import POOL_TYPES

# The media special tokens, in a fixed order: the processor adds them to the tokenizer, the model splices
# features in place of the `pad` tokens, the streaming code watches `start`/`end`.
MEDIA = ("image", "video", "audio")
SPECIAL_TOKENS = {m: {k: f"<|{m}_{k}|>" for k in ("start", "pad", "end")} for m in MEDIA}

# The OmniConfig fields a run's config sets, and the project key (params.yaml, `omni_core.config.ModelConfig`)
# each comes from. The two sides keep their own names: config.json files hold OmniConfig's, params.yaml the
# project's, and only `omni_config_fields` / `project_config_values` translate, through this table.
PROJECT_KEYS = {
    "vision_pool": "model.vision.pool",
    "video_pool": "model.vision.video_pool",
    "vision_pool_type": "model.vision.pool_type",
    "max_tiles": "model.vision.max_tiles",
    "video_max_tiles": "model.vision.video_max_tiles",
    "audio_downsample": "model.audio.downsample",
    "audio_crop_to_clip": "model.audio.crop_to_clip",
    "trust_remote_code": "model.trust_remote_code",
}


class OmniConfig(PreTrainedConfig):
    r"""Configuration of [`OmniForConditionalGeneration`].

    The fields a run's config sets keep their own names here (they are config.json keys); each comes from one
    project key (`PROJECT_KEYS`, through `omni_config_fields`): ``vision_pool`` <- ``model.vision.pool``,
    ``video_pool`` <- ``model.vision.video_pool``, ``vision_pool_type`` <- ``model.vision.pool_type``,
    ``max_tiles`` / ``video_max_tiles`` <- ``model.vision.max_tiles`` / ``model.vision.video_max_tiles``,
    ``audio_downsample`` <- ``model.audio.downsample``, ``audio_crop_to_clip`` <- ``model.audio.crop_to_clip``,
    ``trust_remote_code`` <- ``model.trust_remote_code``.

    Args:
        text_config: config of the causal LM (any `AutoModelForCausalLM` architecture).
        vision_config: `SiglipVisionConfig` of the tile encoder (`image_size` = AnyRes tile side).
        audio_config: `WhisperConfig`; only the encoder is used, `max_source_positions` = 50 x window seconds.
        vision_pool: the image projector pools each tile's patch grid in `vision_pool` x `vision_pool` neighbourhoods.
        video_pool: the same for the tiles of video frames, before the video projector.
        vision_pool_type: "paper" (neighbourhood means; 27 x 27 -> 182), "bilinear" (resize) or "none".
        audio_downsample: Conv-GMLP stride n (50/n audio tokens per second).
        audio_crop_to_clip: run the audio encoder over each clip's own length (its tokens x n frames) instead of
            the whole padded window: the same tokens, a fraction of the encoder's work for short clips.
        max_tiles: AnyRes grid tiles (plus one global thumbnail).
        video_max_tiles: AnyRes grid tiles of a video frame (plus a global view when more than one).
        projector_hidden_act: activation of the 2-layer MLP projectors.
        {image,video,audio}_{start,pad,end}_token_id: ids of the media special tokens.
        trust_remote_code: run the code of an LLM that ships its own (its text_config has an ``auto_map``, e.g.
            Baichuan) when the config is read back; set from ``model.trust_remote_code``, so the opt-in
            travels with the checkpoint. The code is read from the checkpoint's directory (where
            ``save_pretrained`` copies it), else from the LLM's directory (``text_config._name_or_path``).
    """

    model_type = "baichuan_omni"
    sub_configs = {"text_config": AutoConfig, "vision_config": SiglipVisionConfig, "audio_config": WhisperConfig}

    text_config: dict | PreTrainedConfig | None = None
    vision_config: dict | PreTrainedConfig | None = None
    audio_config: dict | PreTrainedConfig | None = None
    vision_pool: int = 2
    video_pool: int = 2
    vision_pool_type: str = "paper"
    audio_downsample: int = 4
    audio_crop_to_clip: bool = False
    max_tiles: int = 4
    video_max_tiles: int = 1
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
    trust_remote_code: bool = False

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        # the checkpoint's directory reaches __post_init__ (as AutoConfig passes it): a remote-code LLM's
        # modules are looked up there first
        kwargs.setdefault("name_or_path", str(pretrained_model_name_or_path))
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    def __post_init__(self, **kwargs):
        if isinstance(self.text_config, dict):
            text = dict(self.text_config)
            model_type = text.pop("model_type", "qwen2")
            if (text.get("auto_map") or {}).get("AutoConfig") and self.trust_remote_code:
                # as AutoConfig does with trust_remote_code: the LLM's own config class, from its own code
                text_class = self._remote_text_config_class(model_type, text, kwargs.get("name_or_path"))
            elif model_type in CONFIG_MAPPING:
                text_class = CONFIG_MAPPING[model_type]
            else:
                raise self._unknown_text_model(model_type, text, kwargs.get("name_or_path"))
            self.text_config = text_class(**text)
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
        for name in ("vision_pool", "video_pool", "audio_downsample", "max_tiles", "video_max_tiles"):
            if getattr(self, name) < 1:
                raise ValueError(f"OmniConfig.{name} = {getattr(self, name)} must be >= 1")
        if self.vision_pool_type not in POOL_TYPES:
            raise ValueError(f"OmniConfig.vision_pool_type = {self.vision_pool_type!r}; choose one of {POOL_TYPES}")
        super().__post_init__(**kwargs)

    def to_diff_dict(self) -> dict:
        d = super().to_diff_dict()
        # defaults stay out of config.json: checkpoints that use neither save exactly as they always did
        for key in ("trust_remote_code", "audio_crop_to_clip"):
            if not d.get(key):
                d.pop(key, None)
        return d

    def _remote_text_config_class(self, model_type: str, text: dict, checkpoint: str | None) -> type:
        """The text config class an ``auto_map`` names, imported by transformers' dynamic-module loader from the
        checkpoint's copy of the code, else from the LLM's directory; ``text['_name_or_path']`` is pointed
        at that directory, where ``AutoModelForCausalLM.from_config`` then finds the modeling code too."""
        from transformers.dynamic_module_utils import get_class_from_dynamic_module

        # "repo--module.Class" names code kept in another Hub repo; a local copy is used all the same
        refs = {k: text["auto_map"][k].split("--")[-1] for k in ("AutoConfig", "AutoModelForCausalLM")
                if isinstance(text["auto_map"].get(k), str)}
        files = sorted({ref.split(".")[0] + ".py" for ref in refs.values()})
        ckpt_dir = Path(checkpoint) if checkpoint else None
        if ckpt_dir is not None and not ckpt_dir.is_dir():      # a config.json path
            ckpt_dir = ckpt_dir.parent
        dirs = [Path(d) for d in (ckpt_dir, text.get("_name_or_path")) if d]
        code_dir = next((d for d in dirs if all((d / f).is_file() for f in files)), None)
        if code_dir is None:
            raise FileNotFoundError(
                f"{_config_file(checkpoint)}: text_config (model_type {model_type!r}) runs the LLM's own code, "
                f"{', '.join(files)}, found in none of {[str(d) for d in dirs]}: copy those files from the LLM's "
                f"checkpoint into {ckpt_dir or 'the checkpoint directory'}")
        text["_name_or_path"] = str(code_dir)
        return get_class_from_dynamic_module(refs["AutoConfig"], code_dir)

    def _unknown_text_model(self, model_type: str, text: dict, checkpoint: str | None) -> ValueError:
        """The error for a text_config transformers cannot build: remote code without the opt-in, or unknown."""
        auto_map = text.get("auto_map")
        if not auto_map:
            return ValueError(f"{_config_file(checkpoint)}: text_config has model_type {model_type!r}, which this "
                              "transformers does not know and which ships no code (no auto_map): use an LLM of a "
                              "supported architecture or a transformers version that has it")
        refs = sorted({r for v in auto_map.values() for r in (v if isinstance(v, list) else [v]) if r})
        return RemoteCodeError(
            f"{_config_file(checkpoint)}: text_config has model_type {model_type!r}, which transformers does not "
            f"know: the checkpoint's LLM ships its own code (auto_map: {', '.join(refs)}), which runs only with "
            "trust_remote_code. "
            f"Read that code, then set \"trust_remote_code\": true in that config.json "
            "(models built with `model: {trust_remote_code: true}` in params.yaml save it so)")

    def media_token_id(self, media: str, kind: str = "pad") -> int:
        """Id of ``<|{media}_{kind}|>``; raises if the config was built without a tokenizer."""
        value = getattr(self, f"{media}_{kind}_token_id")
        if value is None:
            raise ValueError(f"OmniConfig.{media}_{kind}_token_id is unset: build the model with build_model(cfg, "
                             "tokenizer) so the media special tokens get ids")
        return value


def omni_config_fields(model_cfg) -> dict:
    """``{OmniConfig field: value}`` of a project's ``cfg.model`` (`omni_core.config.ModelConfig`), by `PROJECT_KEYS`."""
    out = {}
    for field, key in PROJECT_KEYS.items():
        value = model_cfg
        for part in key.split(".")[1:]:          # the keys start at `model`, which model_cfg is
            value = getattr(value, part)
        out[field] = value
    return out


def project_config_values(config: OmniConfig) -> dict:
    """The same values the other way: ``{"model": {...}}`` nested as params.yaml, e.g. for
    ``load_config(overrides=project_config_values(model.config))`` to describe a saved checkpoint."""
    out: dict = {}
    for field, key in PROJECT_KEYS.items():
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = getattr(config, field)
    return out


def _config_file(checkpoint: str | None) -> str:
    """The config.json being read, for messages."""
    if not checkpoint:
        return "the checkpoint's config.json"
    path = Path(checkpoint)
    return str(path / "config.json" if path.is_dir() else path)
