"""`OmniForConditionalGeneration`: encoders + projectors + a causal LM, with features spliced at pad tokens.

Reading order: the modules (``__init__``), media features (``get_*_features``), splicing
(``embed_inputs``), ``forward`` (loss only at supervised positions), generation, then ``build_model``
which makes the three profiles from one typed config.
"""
from __future__ import annotations

import contextlib
import logging

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    GenerationMixin,
    PreTrainedConfig,
    PreTrainedModel,
    Qwen2Config,
    SiglipVisionConfig,
    WhisperConfig,
)
from transformers.modeling_outputs import CausalLMOutputWithPast

from omni_core.config import MODULES, Config, ModelConfig
from omni_core.model.audio import ConvGMLP, build_audio_encoder, load_audio_encoder, whisper_encode
from omni_core.model.configuration import MEDIA, SPECIAL_TOKENS, OmniConfig, omni_config_fields
from omni_core.model.labels import IGNORE_INDEX
from omni_core.model.pretrained import check_backbones, check_remote_code, resolve_path
from omni_core.model.token_counts import source_positions
from omni_core.model.tokenizer import prepare_tokenizer
from omni_core.model.vision import VisionProjector, build_vision_encoder, load_vision_encoder

MEDIA_KEYS = {"image": "pixel_values", "video": "video_values", "audio": "audio_features"}
MEDIA_MODULES = {"image": ("vision_encoder", "vision_projector"), "video": ("vision_encoder", "video_projector"),
                 "audio": ("audio_encoder", "audio_projector")}


class OmniPreTrainedModel(PreTrainedModel):
    config_class = OmniConfig
    base_model_prefix = "omni"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True


LOSS_WEIGHTINGS = ("token", "sample", "sqrt")


def sample_ids(labels: torch.Tensor, position_ids: torch.Tensor | None) -> torch.Tensor:
    """(B, T) id of the sample each token of ``labels`` belongs to: one per row, or one per packed sample
    (its ``position_ids`` restart at 0)."""
    b, t = labels.shape
    rows = torch.arange(b, device=labels.device)[:, None] * (t + 1)
    if position_ids is None:
        return rows.expand(b, t)
    return rows + (position_ids == 0).cumsum(-1)


def weighted_loss(per_token: torch.Tensor, samples: torch.Tensor, weighting: str = "token") -> torch.Tensor:
    """Average supervised-token losses: ``token`` = every token alike (long answers dominate); ``sample`` =
    every sample alike (mean of per-sample means); ``sqrt`` = tokens weighted 1/sqrt(answer length), the
    middle way InternVL 2.5 uses. Short answers (VQA: one word) get a fair share of the gradient only with
    the last two."""
    if weighting == "token":
        return per_token.mean()
    if weighting not in LOSS_WEIGHTINGS:
        raise ValueError(f"loss_weighting {weighting!r}: choose one of {', '.join(LOSS_WEIGHTINGS)}")
    _, which, counts = torch.unique(samples, return_inverse=True, return_counts=True)
    n = counts[which].to(per_token.dtype)
    w = 1.0 / n if weighting == "sample" else n.rsqrt()
    return (per_token * w).sum() / w.sum()


class OmniForConditionalGeneration(OmniPreTrainedModel, GenerationMixin):
    """Baichuan-Omni: SigLIP (AnyRes tiles, video frames) + Whisper encoder -> projectors -> causal LM.

    Pretrained parts may be passed in (``build_model`` does); otherwise each is built from its sub-config.
    """

    def __init__(self, config: OmniConfig, llm: PreTrainedModel | None = None,
                 vision_encoder: PreTrainedModel | None = None, audio_encoder: PreTrainedModel | None = None):
        super().__init__(config)
        width = config.text_config.hidden_size
        self.llm = llm if llm is not None else AutoModelForCausalLM.from_config(
            config.text_config, trust_remote_code=config.trust_remote_code)       # Baichuan: the LLM's own code
        self.vision_encoder = vision_encoder if vision_encoder is not None else build_vision_encoder(config.vision_config)
        self.vision_projector = VisionProjector(config.vision_config.hidden_size, width, config.vision_pool,
                                                config.projector_hidden_act, config.vision_pool_type)
        self.video_projector = VisionProjector(config.vision_config.hidden_size, width, config.video_pool,
                                               config.projector_hidden_act, config.vision_pool_type)
        self.audio_encoder = audio_encoder if audio_encoder is not None else build_audio_encoder(config.audio_config)
        self.audio_projector = ConvGMLP(config.audio_config.d_model, width, config.audio_downsample)
        self.post_init()

    def save_pretrained(self, save_directory, is_main_process: bool = True, **kwargs):
        """`PreTrainedModel.save_pretrained`, plus the Python modules of an LLM that ships its own code (the ones
        its ``auto_map`` names, with their relative imports): the checkpoint then loads without the LLM's
        directory. Models of built-in architectures save exactly the files they always did."""
        from transformers.dynamic_module_utils import custom_object_save
        from transformers.utils import TRANSFORMERS_DYNAMIC_MODULE_NAME

        super().save_pretrained(save_directory, is_main_process=is_main_process, **kwargs)
        if not is_main_process:
            return
        # the modules that actually ran (config + model classes, also under LoRA wrappers), copied from
        # transformers' module cache: right even if the LLM's directory has changed or gone since loading
        remote = {type(obj).__module__: obj for obj in (self.config.text_config, *self.llm.modules())
                  if type(obj).__module__.startswith(TRANSFORMERS_DYNAMIC_MODULE_NAME + ".")}
        for obj in remote.values():
            custom_object_save(obj, save_directory)

    # ------------------------------------------------------------------------------------- plumbing
    def module_groups(self) -> dict[str, nn.Module]:
        """The six trainable groups by the names of `omni_core.config.MODULES` (freezing, learning rates)."""
        return {name: getattr(self, name) for name in MODULES}

    def get_input_embeddings(self) -> nn.Module:
        return self.llm.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.llm.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.llm.get_output_embeddings()

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.llm.set_output_embeddings(value)

    @torch.no_grad()
    def init_video_projector_from_image(self) -> None:
        """Copy the (trained) image projector into the video projector: the paper's 'enhancement' arrow."""
        self.video_projector.load_state_dict(self.vision_projector.state_dict())

    # --------------------------------------------------------------------------------- media features
    def _encode_frames(self, pixels: torch.Tensor) -> torch.Tensor:
        dtype = next(self.vision_encoder.parameters()).dtype
        return self.vision_encoder(pixel_values=pixels.to(dtype)).last_hidden_state

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(n_tiles, 3, S, S) -> (n_tiles * tokens_per_tile, d_llm)."""
        out = self.vision_projector(self._encode_frames(pixel_values))
        return out.reshape(-1, out.shape[-1])

    def get_video_features(self, video_values: torch.Tensor) -> torch.Tensor:
        """(n_tiles, 3, S, S) tiles of video frames -> (n_tiles * tokens_per_tile at video_pool, d_llm)."""
        out = self.video_projector(self._encode_frames(video_values))
        return out.reshape(-1, out.shape[-1])

    def encode_audio(self, audio_features: torch.Tensor) -> torch.Tensor:
        """(W, mel bins, frames) encoder windows -> (W, F, d_audio) encoder frames."""
        dtype = next(self.audio_encoder.parameters()).dtype
        return self.audio_encoder(input_features=audio_features.to(dtype)).last_hidden_state

    def get_audio_features(self, audio_features: torch.Tensor, audio_window_counts: torch.Tensor,
                           audio_token_counts: torch.Tensor) -> torch.Tensor:
        """Windows -> encoder -> :meth:`project_audio`."""
        if audio_window_counts is None or audio_token_counts is None:
            raise ValueError("audio_features needs audio_window_counts and audio_token_counts (the processor returns both)")
        if self.config.audio_crop_to_clip:
            frames = self.encode_audio_cropped(audio_features, audio_window_counts, audio_token_counts)
        else:
            frames = self.encode_audio(audio_features)
        return self.project_audio(frames, audio_window_counts, audio_token_counts)

    def encode_audio_cropped(self, audio_features: torch.Tensor, audio_window_counts: torch.Tensor,
                             audio_token_counts: torch.Tensor) -> torch.Tensor:
        """:meth:`encode_audio` with each window cut to the frames its clip uses (tokens x n), zero-padded back to
        the window's length for :meth:`project_audio`, which keeps only those frames. Windows of the same length
        run as one batch; a window's frames depend on its clip alone, never on the batch it came in."""
        window = audio_features.shape[-1] // 2                  # encoder frames of a whole window
        n = self.config.audio_downsample
        keep = []
        for nw, nt in zip(audio_window_counts.tolist(), audio_token_counts.tolist()):
            last = nt * n - (nw - 1) * window                      # frames the clip's last window contributes
            keep += [window] * (nw - 1) + [min(window, max(last, n))]
        dtype = next(self.audio_encoder.parameters()).dtype
        out = audio_features.new_zeros(audio_features.shape[0], window, self.config.audio_config.d_model, dtype=dtype)
        for length in sorted(set(keep)):
            rows = [i for i, k in enumerate(keep) if k == length]
            out[rows, :length] = whisper_encode(self.audio_encoder, audio_features[rows, :, : 2 * length].to(dtype))
        return out

    def project_audio(self, frames: torch.Tensor, audio_window_counts: torch.Tensor,
                      audio_token_counts: torch.Tensor) -> torch.Tensor:
        """Encoder frames (W, F, d) -> per clip: concatenate its windows, keep tokens * n frames -> Conv-GMLP."""
        windows, tokens = audio_window_counts.tolist(), audio_token_counts.tolist()
        if sum(windows) != frames.shape[0] or len(windows) != len(tokens):
            raise ValueError(f"audio_window_counts {windows} sum to {sum(windows)} but audio_features has "
                             f"{frames.shape[0]} windows (and {len(tokens)} token counts): they must come "
                             "from the same processor calls, concatenated in the same order")
        n = self.config.audio_downsample
        clips, start = [], 0
        for nw, nt in zip(windows, tokens):
            x = frames[start:start + nw].reshape(-1, frames.shape[-1])
            start += nw
            if nt * n > x.shape[0] + n - 1:
                raise ValueError(f"audio clip with {nw} window(s) ({x.shape[0]} encoder frames) cannot give {nt} tokens "
                                 f"at downsample n={n}: audio_token_counts do not match the model's audio config")
            clips.append(F.pad(x[: nt * n], (0, 0, 0, max(0, nt * n - x.shape[0]))))
        padded = nn.utils.rnn.pad_sequence(clips, batch_first=True)      # stride-n convs never mix clips' tails
        out = self.audio_projector(padded)
        return torch.cat([out[i, :nt] for i, nt in enumerate(tokens)])

    def _needs_dummy_pass(self, media: str) -> bool:
        """Whether an absent modality must still run: with several ranks always (ZeRO-3 gathers even frozen
        weights collectively), alone only if its modules train (so they get a zero gradient, not none)."""
        if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
            return True
        return any(p.requires_grad for name in MEDIA_MODULES[media] for p in getattr(self, name).parameters())

    def _dummy_features(self, media: str) -> torch.Tensor:
        """A tiny pass through a modality's encoder + projector (ZeRO-3 ranks must all run the same modules)."""
        # any parameter's device, not the embedding's: reading that outside its forward makes ZeRO-3 gather it
        # on the ranks that run a dummy pass only, and the ranks' collectives stop matching
        device = next(self.parameters()).device
        if media == "audio":
            cfg = self.config.audio_config
            feats = torch.zeros(1, cfg.num_mel_bins, 2 * cfg.max_source_positions, device=device)
            one = torch.ones(1, dtype=torch.long, device=device)
            return self.get_audio_features(feats, one, one)
        size = self.config.vision_config.image_size
        pixels = torch.zeros(1, 3, size, size, device=device)
        return self.get_image_features(pixels) if media == "image" else self.get_video_features(pixels)

    # ---------------------------------------------------------------------------------------- splicing
    def embed_inputs(self, input_ids: torch.LongTensor, pixel_values: torch.Tensor | None = None,
                     video_values: torch.Tensor | None = None, audio_features: torch.Tensor | None = None,
                     audio_window_counts: torch.Tensor | None = None,
                     audio_token_counts: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings with media features written in place of the ``<|x_pad|>`` tokens (row-major order).

        Modalities absent from the batch still run on a dummy input with weight 0 while training, so every
        rank executes the same modules (ZeRO-3 would otherwise wait forever for the missing gather); one
        process skips the modalities that are frozen.
        """
        embeds = self.get_input_embeddings()(input_ids)
        given = {"image": pixel_values, "video": video_values, "audio": audio_features}
        dummy = None
        for media in MEDIA:
            mask = input_ids == self.config.media_token_id(media, "pad")
            n_pad = int(mask.sum())
            if given[media] is None:
                if n_pad:
                    raise ValueError(f"input_ids hold {n_pad} {SPECIAL_TOKENS[media]['pad']} tokens but no "
                                     f"{MEDIA_KEYS[media]} was given")
                if self.training and torch.is_grad_enabled() and self._needs_dummy_pass(media):
                    zero = self._dummy_features(media).sum() * 0.0
                    dummy = zero if dummy is None else dummy + zero
                continue
            if media == "image":
                feats = self.get_image_features(pixel_values)
            elif media == "video":
                feats = self.get_video_features(video_values)
            else:
                feats = self.get_audio_features(audio_features, audio_window_counts, audio_token_counts)
            if feats.shape[0] != n_pad:
                raise ValueError(f"{n_pad} {SPECIAL_TOKENS[media]['pad']} tokens in input_ids but {MEDIA_KEYS[media]} "
                                 f"{tuple(given[media].shape)} gives {feats.shape[0]} feature vectors: the processor and "
                                 "the model must use the same config (tile size, pooling, downsample), and sequences "
                                 "must not be truncated inside a media span")
            embeds = embeds.masked_scatter(mask.unsqueeze(-1), feats.to(embeds.dtype))
        return embeds if dummy is None else embeds + dummy.to(embeds.dtype)

    # ----------------------------------------------------------------------------------------- forward
    def forward(self, input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
                position_ids: torch.LongTensor | None = None, labels: torch.LongTensor | None = None,
                pixel_values: torch.Tensor | None = None, video_values: torch.Tensor | None = None,
                audio_features: torch.Tensor | None = None, audio_window_counts: torch.Tensor | None = None,
                audio_token_counts: torch.Tensor | None = None, past_key_values=None, use_cache: bool | None = None,
                inputs_embeds: torch.Tensor | None = None, logits_to_keep: int = 0, loss_weighting: str = "token",
                **kwargs) -> CausalLMOutputWithPast:
        """With ``labels``: logits only at supervised positions (shifted), ``loss`` = their cross-entropy,
        averaged as ``loss_weighting`` says (:func:`weighted_loss`).

        ``attention_mask=None`` with ``position_ids`` that restart at 0 = packed samples: the LM's mask
        builder turns the restarts into block-causal attention (no attention across samples).
        """
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("forward needs input_ids or inputs_embeds")
            inputs_embeds = self.embed_inputs(input_ids, pixel_values, video_values, audio_features,
                                              audio_window_counts, audio_token_counts)
        packed = (attention_mask is None and position_ids is not None and past_key_values is None
                  and bool((position_ids[..., 1:] - position_ids[..., :-1] != 1).any()))
        if labels is not None or packed:
            use_cache = False                   # a cache over packed or training rows is never reused
        out = self.llm.get_decoder()(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                     position_ids=position_ids, past_key_values=past_key_values,
                                     use_cache=use_cache, **kwargs)
        hidden = out.last_hidden_state
        head = self.get_output_embeddings()
        loss = None
        if labels is not None:
            targets = labels[:, 1:]
            supervised = targets != IGNORE_INDEX
            if not bool(supervised.any()):
                raise ValueError(f"no supervised token in this batch (all labels are {IGNORE_INDEX}): every training "
                                 "conversation needs an assistant turn; check the data's messages")
            logits = head(hidden[:, :-1][supervised]).float()
            per_token = F.cross_entropy(logits, targets[supervised], reduction="none")
            loss = weighted_loss(per_token, sample_ids(labels, position_ids)[:, 1:][supervised], loss_weighting)
        else:
            keep = slice(-logits_to_keep, None) if logits_to_keep else slice(None)
            logits = head(hidden[:, keep])
        return CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=out.past_key_values,
                                      hidden_states=out.hidden_states, attentions=out.attentions)

    # -------------------------------------------------------------------------------------- generation
    def prepare_inputs_for_generation(self, input_ids, past_key_values=None, attention_mask=None, inputs_embeds=None,
                                      pixel_values=None, video_values=None, audio_features=None,
                                      audio_window_counts=None, audio_token_counts=None, is_first_iteration=False,
                                      **kwargs):
        inputs = super().prepare_inputs_for_generation(input_ids, past_key_values=past_key_values,
                                                       attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                                                       is_first_iteration=is_first_iteration, **kwargs)
        if is_first_iteration or not kwargs.get("use_cache", True):     # media only at prefill
            inputs.update(pixel_values=pixel_values, video_values=video_values, audio_features=audio_features,
                          audio_window_counts=audio_window_counts, audio_token_counts=audio_token_counts)
        return inputs

    @torch.no_grad()
    def generate(self, input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
                 labels=None, position_ids=None, **kwargs):
        """`generate(**processor_output)` or on a collated batch: 1-D inputs get a batch dim, right padding
        is moved to the left (decoder-only generation appends at the end), labels/position_ids are dropped."""
        if input_ids is not None and input_ids.dim() == 1:
            input_ids = input_ids.unsqueeze(0)
            attention_mask = attention_mask.unsqueeze(0) if attention_mask is not None else None
        if input_ids is not None and attention_mask is not None and bool((attention_mask[:, -1] == 0).any()):
            shifts = (attention_mask == 0).sum(dim=1)
            input_ids = torch.stack([row.roll(int(s)) for row, s in zip(input_ids, shifts)])
            attention_mask = torch.stack([row.roll(int(s)) for row, s in zip(attention_mask, shifts)])
        if input_ids is not None:
            kwargs["input_ids"] = input_ids
        return super().generate(attention_mask=attention_mask, **kwargs)


AutoConfig.register(OmniConfig.model_type, OmniConfig, exist_ok=True)
AutoModel.register(OmniConfig, OmniForConditionalGeneration, exist_ok=True)
AutoModelForCausalLM.register(OmniConfig, OmniForConditionalGeneration, exist_ok=True)


# ------------------------------------------------------------------------------------------- builders
def omni_config(m: ModelConfig, tokenizer, text_config: PreTrainedConfig | None = None,
                vision_config: SiglipVisionConfig | None = None,
                audio_config: WhisperConfig | None = None) -> OmniConfig:
    """`OmniConfig` of ``cfg.model``: the given sub-configs (pretrained parts), random-init ones from the sizes in
    ``m`` otherwise; special-token ids from ``tokenizer`` (already prepared)."""
    if text_config is None:
        text_config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=m.llm.hidden_size,
                                  num_hidden_layers=m.llm.num_layers, num_attention_heads=m.llm.num_heads,
                                  num_key_value_heads=m.llm.num_kv_heads, intermediate_size=m.llm.intermediate_size,
                                  max_position_embeddings=m.llm.max_position_embeddings, tie_word_embeddings=True,
                                  eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    if vision_config is None:
        vision_config = SiglipVisionConfig(hidden_size=m.vision.hidden_size, intermediate_size=m.vision.intermediate_size,
                                           num_hidden_layers=m.vision.num_layers, num_attention_heads=m.vision.num_heads,
                                           image_size=m.vision.image_size, patch_size=m.vision.patch_size,
                                           vision_use_head=False)
    if (vision_config.image_size, vision_config.patch_size) != (m.vision.image_size, m.vision.patch_size):
        raise ValueError(f"model.vision: image_size/patch_size = {m.vision.image_size}/{m.vision.patch_size} but the "
                         f"vision encoder has {vision_config.image_size}/{vision_config.patch_size}; make them equal")
    if audio_config is None:
        audio_config = WhisperConfig(num_mel_bins=m.audio.num_mel_bins, d_model=m.audio.hidden_size,
                                     encoder_layers=m.audio.num_layers, encoder_attention_heads=m.audio.num_heads,
                                     encoder_ffn_dim=m.audio.ffn_size, decoder_layers=1,
                                     decoder_attention_heads=m.audio.num_heads, decoder_ffn_dim=m.audio.ffn_size,
                                     max_source_positions=source_positions(m.audio.window_seconds))
    if audio_config.num_mel_bins != m.audio.num_mel_bins:
        raise ValueError(f"model.audio.num_mel_bins = {m.audio.num_mel_bins} but the audio encoder expects "
                         f"{audio_config.num_mel_bins}; make them equal")
    ids = {f"{media}_{kind}_token_id": tokenizer.convert_tokens_to_ids(tok)
           for media, kinds in SPECIAL_TOKENS.items() for kind, tok in kinds.items()}
    return OmniConfig(text_config=text_config, vision_config=vision_config, audio_config=audio_config,
                      **omni_config_fields(m), attn_implementation=m.attn_implementation,  # reaches sub-configs
                      **ids)


@contextlib.contextmanager
def _quiet(logger: str):
    """``logger``'s warnings off for the block (errors still show)."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def embedding_rows(model: PreTrainedModel) -> int:
    """Rows of the LM's input embedding; under ZeRO-3 the local tensor is this rank's partition (often 0 rows),
    so the real count comes from DeepSpeed's ``ds_shape``."""
    weight = model.get_input_embeddings().weight
    return int(weight.ds_shape[0]) if hasattr(weight, "ds_shape") else int(weight.shape[0])


def added_token_ids(m: ModelConfig, tokenizer) -> tuple[list[int], int]:
    """(ids of the special tokens `prepare_tokenizer` added to the pretrained LLM's tokenizer, that tokenizer's
    own length): the rows the pretrained LLM never trained. ([], 0) without a pretrained LLM and tokenizer."""
    if not (m.llm.path and m.tokenizer.path):
        return [], 0
    from transformers import AutoTokenizer

    own = AutoTokenizer.from_pretrained(resolve_path(m.tokenizer.path, "tokenizer"), trust_remote_code=m.trust_remote_code)
    known = own.get_vocab()
    return sorted(i for t, i in tokenizer.get_vocab().items() if t not in known), len(own)


@torch.no_grad()
def mean_init_rows(model: PreTrainedModel, ids: list[int], trained: int) -> None:
    """Rows ``ids`` of the input and output embeddings (and an output bias) := the mean of their first
    ``trained`` rows, the HF mean initialisation (without its 1e-9-scaled noise, so that every rank and every
    back end writes the same bits). Under ZeRO-3 the rows are gathered, written on rank 0 and re-partitioned."""
    from contextlib import nullcontext

    head = model.get_output_embeddings()
    params = {id(p): p for p in (model.get_input_embeddings().weight, getattr(head, "weight", None),
                                 getattr(head, "bias", None)) if p is not None}.values()     # tied: one tensor
    gather = nullcontext()
    if any(hasattr(p, "ds_shape") for p in params):
        import deepspeed

        gather = deepspeed.zero.GatheredParameters(list(params), modifier_rank=0)
    with gather:
        for p in params:
            p.data[ids] = p.data[:trained].float().mean(0).to(p.dtype)


def build_model(cfg: Config, tokenizer) -> OmniForConditionalGeneration:
    """The omni model of ``cfg.model``: pretrained parts from their local paths, the rest random-init.

    ``tokenizer`` gets the special tokens + chat template (idempotent). The LM's embeddings never shrink: they
    grow to the tokenizer if it is longer (new rows: HF mean resizing), and the special tokens the pretrained
    LLM's tokenizer lacks get the mean of its trained rows also where they land in its spare rows (Qwen2-7B:
    152,064 rows for 151,646 tokens), with or without ZeRO-3. Every named folder is checked before anything
    loads (`check_backbones`); an LLM that ships its own code (Baichuan) loads only with ``model.trust_remote_code``;
    flash_attention_2 falls back to sdpa where it cannot run (`resolve_attn`).
    """
    from dataclasses import replace

    from omni_core.model.attention import resolve_attn

    m = replace(cfg.model, attn_implementation=resolve_attn(cfg.model.attn_implementation))
    dtype = getattr(torch, m.dtype)
    tokenizer = prepare_tokenizer(tokenizer)
    folders = check_backbones(m)         # every named folder exists and holds its kind, before anything loads
    parts: dict[str, PreTrainedModel] = {}
    if m.llm.path:
        check_remote_code(folders["llm"], m.trust_remote_code, "model.llm.path", "config.json")
        parts["llm"] = AutoModelForCausalLM.from_pretrained(folders["llm"], dtype=dtype, attn_implementation=m.attn_implementation,
                                                            trust_remote_code=m.trust_remote_code)
    if m.vision.path:
        parts["vision_encoder"] = load_vision_encoder(folders["vision"], dtype)
    if m.audio.path:
        parts["audio_encoder"] = load_audio_encoder(folders["audio"], m.audio.window_seconds, dtype)
    config = omni_config(m, tokenizer, *(parts[k].config if k in parts else None
                                         for k in ("llm", "vision_encoder", "audio_encoder")))
    model = OmniForConditionalGeneration(config, **parts)
    rows = embedding_rows(model)
    if rows < len(tokenizer):
        with _quiet("transformers.modeling_utils"):     # its note on mean resizing, on every build
            model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    added, trained = added_token_ids(m, tokenizer)
    spare = [i for i in added if i < rows]           # added tokens inside the pretrained table's spare rows
    if spare:
        mean_init_rows(model, spare, min(trained, rows))
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
    return model.to(dtype)
