"""Typed configuration: every knob of the project, loaded from params.yaml.

One place defines defaults (the dataclasses below). ``params.yaml`` holds the tiny profile's values;
``profile: small|full|smoke`` merges ``configs/<profile>.yaml`` on top. Notebooks, the CLI and tests all
call :func:`load_config` and read the same objects.

Errors are meant for humans: an unknown key names its file and the closest valid name, a wrong type
or out-of-range value names the key and what is allowed.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from . import task_registry

REPO_ROOT = Path(__file__).resolve().parent.parent
MODULES = ("vision_encoder", "vision_projector", "video_projector", "audio_encoder", "audio_projector", "llm")
# an encoder warm-up's objective (train/warmup/encoders.py) -> the one module it trains
ENCODER_OBJECTIVES = {"digit_classification": "vision_encoder", "digit_word_classification": "vision_encoder",
                      "digit_word_shape_classification": "vision_encoder",
                      "speech_ctc": "audio_encoder"}


class ConfigError(ValueError):
    """A params file names an unknown key or holds a value of the wrong type or range."""


def _range(lo=None, hi=None):
    return {"range": (lo, hi)}


# --------------------------------------------------------------------------------------------- model
@dataclass
class LLMConfig:
    path: str | None = None          # local HF directory of a pretrained causal LM; None = random init
    hidden_size: int = field(default=256, metadata=_range(8))
    num_layers: int = field(default=4, metadata=_range(1))
    num_heads: int = field(default=4, metadata=_range(1))
    num_kv_heads: int = field(default=2, metadata=_range(1))
    intermediate_size: int = field(default=768, metadata=_range(8))
    max_position_embeddings: int = field(default=4096, metadata=_range(64))


@dataclass
class VisionConfig:
    path: str | None = None          # local HF directory of a SigLIP vision model; None = random init
    image_size: int = field(default=32, metadata=_range(8))   # tile side in pixels (384 at full scale)
    patch_size: int = field(default=4, metadata=_range(1))
    hidden_size: int = field(default=128, metadata=_range(8))
    num_layers: int = field(default=2, metadata=_range(1))
    num_heads: int = field(default=4, metadata=_range(1))
    intermediate_size: int = field(default=256, metadata=_range(8))
    max_tiles: int = field(default=4, metadata=_range(1, 64))  # AnyRes grid tiles, plus one global thumbnail
    # how the projector pools the patch grid of a tile (token_counts.py): "paper" = means of pool x pool spatial
    # neighbourhoods (27x27 -> 14 x 13 = 182 at pool 2), "bilinear" = resized to ceil(side / pool) squared
    # (LLaVA-OneVision's 196), "none" = every patch is a token (729)
    pool_type: Literal["paper", "bilinear", "none"] = "paper"
    pool: int = field(default=2, metadata=_range(1, 8))        # image tiles: pool x pool neighbourhoods
    video_pool: int = field(default=2, metadata=_range(1, 8))  # video frames: the same pool, its own size
    video_max_tiles: int = field(default=2, metadata=_range(1, 64))  # AnyRes tiles per video frame (+1 global if > 1)
    video_fps: float = field(default=1.0, metadata=_range(0.01, 60))
    video_max_frames: int = field(default=48, metadata=_range(1, 1024))


@dataclass
class AudioConfig:
    path: str | None = None          # local HF directory of a Whisper model (encoder used); None = random init
    num_mel_bins: int = field(default=80, metadata=_range(1))
    window_seconds: float = field(default=30.0, metadata=_range(0.5, 30.0))  # Whisper window; long audio = several
    hidden_size: int = field(default=128, metadata=_range(8))
    num_layers: int = field(default=2, metadata=_range(1))
    num_heads: int = field(default=4, metadata=_range(1))
    ffn_size: int = field(default=256, metadata=_range(8))
    downsample: int = field(default=4, metadata=_range(1, 16))  # Conv-GMLP n: 50/n tokens per second
    crop_to_clip: bool = field(default=False, metadata={"omit_default": True})   # encode each clip over its own
                                     # length, not the whole padded window: the same tokens, less work
    sampling_rate: int = field(default=16000, metadata=_range(8000, 48000))


@dataclass
class TokenizerConfig:
    path: str | None = None          # local tokenizer directory; None = train one on the prepared data
    vocab_size: int = field(default=2048, metadata=_range(64))  # size of the trained tokenizer


@dataclass
class ModelConfig:
    llm: LLMConfig = field(default_factory=LLMConfig)
    vision: VisionConfig = field(default_factory=VisionConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    # run the Python code a checkpoint ships (a Baichuan-family LLM or tokenizer); off unless you trust its source
    trust_remote_code: bool = False
    dtype: Literal["float32", "bfloat16"] = "float32"   # fp32 on CPU (bf16 there is emulated, or slower: README)


# ---------------------------------------------------------------------------------------------- data
PREPARED_SOURCE = "prepared"      # the built-in source: the manifests `prepare` writes under data.root


@dataclass
class SourceConfig:
    """A dataset of its own (one manifest per split, e.g. from `python -m omni_core.data import-llava`) that
    stages mix with the prepared data; paths are relative to the working directory, as data.root is."""
    name: str = ""
    train: str | None = None         # JSONL manifest; media paths inside are relative to its folder
    val: str | None = None           # None: the source takes no part in validation
    test: str | None = None
    license: str = ""                # the dataset's licence (SPDX id), on record beside the mix
    weight: float = field(default=1.0, metadata=_range(0.0))   # default share of a stage's samples (see stages.<name>.sources)


@dataclass
class DataConfig:
    root: str = "data/prepared"
    seed: int = 0
    # samples per task and split; tasks with a finite source (real speech, photos) take what exists
    train_per_task: int = field(default=400, metadata=_range(1))
    val_per_task: int = field(default=40, metadata=_range(1))
    test_per_task: int = field(default=50, metadata=_range(1))
    image_size: int = field(default=32, metadata=_range(8))       # side of synthetic scenes and digits
    highres_size: int = field(default=64, metadata=_range(16))    # composites that need AnyRes
    video_frames: int = field(default=4, metadata=_range(1))
    video_size: int = field(default=32, metadata=_range(8))
    voices: list[str] = field(default_factory=lambda: ["slt", "kal16", "rms", "awb"])
    # flite voices no training sample speaks: they read asr_heldout_voice, the test of an unheard voice
    heldout_voices: list[str] = field(default_factory=list, metadata={"omit_default": True})
    # per-task sample counts over the *_per_task ones, e.g. {asr_open: {train: 6000, test: 300}}; the opt-in tasks
    # (asr_open, asr_heldout_voice) are built only when named here
    task_samples: dict[str, dict[str, int]] = field(default_factory=dict, metadata={"omit_default": True})
    max_audio_seconds: float = field(default=3.0, metadata=_range(0.5))
    num_workers: int = field(default=0, metadata=_range(0, 64))
    on_bad_sample: Literal["error", "skip"] = "error"
    # datasets mixed with the prepared one (source "prepared", weight 1), each drawn by its weight: docs/interfaces.md
    sources: list[SourceConfig] = field(default_factory=list, metadata={"omit_default": True})


def _validate_sources(cfg: Config, source: str) -> None:
    """The source list and each stage's source weights (the manifests' existence is checked when a stage
    reads them: `prepare` or an import may write them after the config is loaded)."""
    names = [PREPARED_SOURCE]
    for i, src in enumerate(cfg.data.sources):
        key = f"data.sources[{i}]"
        if not src.name:
            raise ConfigError(f"{source}: {key}.name is empty; name the source (stages weight it under "
                              f"stages.<stage>.sources.<name>)")
        if src.name == PREPARED_SOURCE:
            raise ConfigError(f"{source}: {key}.name {PREPARED_SOURCE!r} is the built-in data under data.root; "
                              f"pick another name, and weight the built-in data with stages.<stage>.sources.prepared")
        if src.name in names:
            raise ConfigError(f"{source}: {key}.name {src.name!r} names two sources; give each its own name")
        if not src.train:
            raise ConfigError(f"{source}: {key}.train is missing; set it to the source's train manifest (JSONL)")
        if not src.license.strip():
            raise ConfigError(f"{source}: {key}.license is empty; name the dataset's licence (e.g. CC-BY-4.0), so "
                              f"the mix's terms are on record")
        names.append(src.name)
    for name, st in cfg.stages.items():
        for src_name, w in st.sources.items():
            if src_name not in names:
                raise ConfigError(f"{source}: stages.{name}.sources.{src_name} is not a data source"
                                  f"{_suggest(src_name, names)}; sources: {', '.join(names)} (add it to data.sources)")
            if w < 0:
                raise ConfigError(f"{source}: stages.{name}.sources.{src_name} = {w} is out of range; allowed [0, inf)")
        if st.sources and st.objective != "lm":
            raise ConfigError(f"{source}: stages.{name}.sources is not used by objective {st.objective} (it reads "
                              f"its own data); remove it")


# ------------------------------------------------------------------------------------------ training
@dataclass
class StageConfig:
    # the stage's key under `stages:`, filled in by Config (not a params key): code that receives a
    # StageConfig needs no name beside it
    name: str = field(default="", metadata={"set_by_loader": True})
    enabled: bool = True                 # small/full skip stage 0 (their LLM is already pretrained)
    init_from: str | None = None      # previous stage name; None = fresh model
    mixture: dict[str, float] = field(default_factory=dict)   # task -> sampling weight
    # data source -> weight, over data.sources[].weight (the prepared data: 1); 0 leaves a source out
    sources: dict[str, float] = field(default_factory=dict, metadata={"omit_default": True})
    steps: int = field(default=100, metadata=_range(1))
    batch_size: int = field(default=8, metadata=_range(1))
    grad_accum: int = field(default=1, metadata=_range(1))
    seq_len: int = field(default=512, metadata=_range(16))
    lr: dict[str, float] = field(default_factory=dict)        # module -> lr; 0 or absent = frozen
    warmup_ratio: float = field(default=0.05, metadata=_range(0.0, 1.0))
    min_lr_ratio: float = field(default=0.1, metadata=_range(0.0, 1.0))
    weight_decay: float = field(default=0.0, metadata=_range(0.0, 1.0))
    max_grad_norm: float = field(default=1.0, metadata=_range(0.0))
    packing: bool = True
    loss_weighting: Literal["token", "sample", "sqrt"] = "token"   # how answers of different lengths share the loss
    save_every: int = field(default=50, metadata=_range(1))
    eval_every: int = field(default=50, metadata=_range(1))
    val_samples: int = field(default=64, metadata=_range(1))   # val-split samples of the mixture's tasks for val loss
    init_video_projector: bool = False   # copy the image projector into the video projector first (paper)
    images_as_video: bool = False        # images go through the video path as one-frame videos (stage 1d's first step)
    # >0: the paper's SFT data filter: score every sample of the mixture with the starting model and keep those whose
    # loss lies within mean +/- k standard deviations (train/loss_filter.py); 0 = off
    loss_filter_k: float = field(default=0.0, metadata=_range(0.0))
    # >0: first train the audio projector alone this many steps with CTC over the LLM's input embeddings
    # (train/warmup/audio_projector.py; tiny profile: its LM reads soft tokens only once they look like its words)
    audio_projector_ctc_steps: int = field(default=0, metadata=_range(0))
    # the warm-up's CTC classes: every token of the LLM ("all"), or the tokens its transcripts use ("seen": a
    # 49K-token vocabulary costs most of a step, benchmarks/bench_small_costs.py)
    audio_projector_ctc_vocab: Literal["all", "seen"] = field(default="all", metadata={"omit_default": True})
    # "lm": next-token loss on the mixture's answers. The others pre-train one encoder as a stand-in for
    # the paper's pretrained one (train/warmup/encoders.py): "digit_classification" (the vision tower classifies MNIST
    # train-split digits), "digit_word_classification" (and printed words), "digit_word_shape_classification"
    # (and drawn shapes: their shape and colour), "speech_ctc" (the audio encoder
    # transcribes the asr train split with CTC)
    objective: Literal["lm", "digit_classification", "digit_word_classification", "digit_word_shape_classification",
                       "speech_ctc"] = "lm"


@dataclass
class TrainConfig:
    seed: int = 0
    backend: Literal["torch", "deepspeed"] = "torch"
    deepspeed_config: str = "configs/deepspeed/zero2.json"
    nproc: int = field(default=1, metadata=_range(1))
    gradient_checkpointing: bool = False
    lora_rank: int = field(default=0, metadata=_range(0))      # >0: LoRA on the LLM via peft, merged on export
    resume: Literal["auto", "never"] = "auto"
    keep_states: int = field(default=2, metadata=_range(1))   # resumable states kept per stage (older ones are the fallback)
    checkpoints_dir: str = "checkpoints"
    log_dir: str = "logs"
    threads: int = field(default=0, metadata=_range(0))       # torch CPU threads; 0 = torch default
    # bf16: matmuls in bfloat16 under torch.autocast, weights and optimizer in fp32, also on a CPU with native bf16
    # (avx512_bf16 or AMX): 1.6x faster steps at the small profile's sizes; none: fp32 (a CUDA run with
    # model.dtype bfloat16 autocasts either way)
    mixed_precision: Literal["none", "bf16"] = field(default="none", metadata={"omit_default": True})


# ---------------------------------------------------------------------------------------- evaluation
@dataclass
class EvalConfig:
    checkpoint: str = "2_sft"
    batch_size: int = field(default=8, metadata=_range(1))
    max_new_tokens: int = field(default=32, metadata=_range(1))
    max_samples_per_task: int = field(default=50, metadata=_range(1))
    seed: int = 0
    metrics_dir: str = "metrics"
    figures_dir: str = "figures"
    # text perplexity (before and after) also per source of the test texts: the real prose apart from the
    # sentences in the tasks' words, which the recipe trains on
    perplexity_by_source: bool = field(default=False, metadata={"omit_default": True})


@dataclass
class StreamConfig:
    chunk_seconds: float = field(default=0.5, metadata=_range(0.05, 10.0))   # audio chunk of the real-time demo
    end_threshold: float = field(default=0.5, metadata=_range(0.0, 1.0))    # speech probability threshold
    max_new_tokens: int = field(default=32, metadata=_range(1))
    min_speech_seconds: float = field(default=0.1, metadata=_range(0.01, 5.0))    # shorter bursts are not speech
    min_silence_seconds: float = field(default=0.5, metadata=_range(0.05, 5.0))   # hangover before end of turn
    preroll_seconds: float = field(default=0.2, metadata=_range(0.0, 2.0))        # audio kept around the utterance
    # audio encoded and prefilled in chunks of this length while the user speaks; 0 = the whole utterance at its end.
    # Each chunk is encoded alone: 1 s chunks doubled the trained tiny model's ASR WER (stream_latency.chunked_wer)
    audio_chunk_seconds: float = field(default=2.0, metadata=_range(0.0, 30.0))
    # close and prefill the turn while the silence hangover runs, taken back if speech resumes: the end of speech
    # then only has the answer's first token left to compute
    prefill_in_hangover: bool = True
    # what decides speech start and end: the separate log-mel detector, or the model's own head (model_boundary.py)
    boundary: Literal["detector", "model"] = "detector"
    # labelled flite streams the model's own boundary head trains on (half as many score it, held out)
    boundary_streams: int = field(default=48, metadata=_range(4, 10000))
    video_fps: float = field(default=1.0, metadata=_range(0.01, 60))              # frames encoded while the user speaks
    max_frames: int = field(default=16, metadata=_range(1, 1024))                 # frames per turn at most


@dataclass
class Config:
    profile: Literal["tiny", "small", "full", "smoke"] = "tiny"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    stages: dict[str, StageConfig] = field(default_factory=dict)
    eval: EvalConfig = field(default_factory=EvalConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    # the user's own tasks: name -> declaration (omni_core/task_registry.py); the built-ins need none
    tasks: dict[str, dict] | None = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, stage in self.stages.items():
            stage.name = name
        self.tasks = self.tasks or {}         # `tasks:` left empty in YAML reads as None

    def task_registry(self) -> dict[str, task_registry.TaskSpec]:
        """Every task this config knows: the built-ins, then the declarations under `tasks:` (validated)."""
        return task_registry.merge(self.tasks)

    def stage(self, name: str) -> StageConfig:
        if name not in self.stages:
            raise ConfigError(f"unknown stage {name!r}{_suggest(name, self.stages)}; stages: {', '.join(self.stages)}")
        return self.stages[name]

    def starts_from(self, stage: StageConfig) -> str | None:
        """The stage whose model `stage` starts from: its `init_from`, passed through the stages the profile
        disables (small and full skip the encoder warm-ups, so 1a starts from what they would have started
        from); None = a fresh model built from the config."""
        init, seen = stage.init_from, [stage.name]
        while init is not None and not self.stage(init).enabled:
            if init in seen:
                raise ConfigError(f"stages.{stage.name}.init_from loops through disabled stages: "
                                  f"{' -> '.join(seen + [init])}")
            seen.append(init)
            init = self.stage(init).init_from
        return init

    def to_dict(self) -> dict:
        """The config as a params file would hold it (`load_config` reads it back; no loader-set fields)."""
        d = params_dict(self)
        for stage in d["stages"].values():
            del stage["name"]
        return d


def params_dict(obj: Any) -> Any:
    """``dataclasses.asdict``, less the fields marked ``omit_default`` while they hold their default: a key
    added later leaves the dict, and so every config hash of a run that does not use it, as it was."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if f.metadata.get("omit_default") and value == (f.default_factory() if callable(f.default_factory)
                                                            else f.default):
                continue
            out[f.name] = params_dict(value)
        return out
    if isinstance(obj, dict):
        return {k: params_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(params_dict(v) for v in obj)
    return copy.deepcopy(obj)


# -------------------------------------------------------------------------------------------- loader
def _suggest(name: str, valid) -> str:
    close = difflib.get_close_matches(str(name), [str(v) for v in valid], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def merge_overrides(base: dict, over: dict) -> dict:
    """``base`` with ``over`` merged in, key by key at every depth (a new dict; neither input changes)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge_overrides(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_overrides(items: list[str]) -> dict:
    """``a.b.c=value`` strings (the CLIs' ``--set``) -> a nested dict for ``load_config(overrides=...)``;
    values are parsed as YAML, so ``--set stages.2_sft.steps=10`` gives an int."""
    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set stages.2_sft.steps=10")
        node = out
        *parents, leaf = key.strip().split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
    return out


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it (ints are accepted where floats are)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key, source)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{source}: {key} = {value!r} is not allowed; choose one of {list(allowed)}"
                              f"{_suggest(value, allowed)}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{source}: {key} must be a list, got {type(value).__name__} {value!r}")
        return [_coerce(v, typing.get_args(tp)[0], f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key} must be a mapping, got {type(value).__name__} {value!r}")
        kt, vt = typing.get_args(tp)
        return {str(k): _coerce(v, vt, f"{key}.{k}", source) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key, source)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):          # YAML 1.1 reads "1e-3" as a string
        try:
            return float(value)
        except ValueError:
            pass
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ConfigError(f"{source}: {key} must be {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def _build(cls, raw: Any, prefix: str, source: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {prefix or 'top level'} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("set_by_loader")}
    kwargs = {}
    for k, v in raw.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in fields:
            raise ConfigError(f"{source}: unknown key {key!r}{_suggest(k, fields)}; valid keys here: "
                              f"{', '.join(fields)}")
        val = _coerce(v, hints[k], key, source)
        lo, hi = fields[k].metadata.get("range", (None, None))
        if val is not None and ((lo is not None and val < lo) or (hi is not None and val > hi)):
            allowed = f"[{lo}, {'inf' if hi is None else hi}]"
            raise ConfigError(f"{source}: {key} = {val!r} is out of range; allowed {allowed}")
        kwargs[k] = val
    return cls(**kwargs)


def _validate_speech_data(cfg: Config, tasks, source: str) -> None:
    """Held-out voices never train, and per-task sample counts name tasks and splits that exist."""
    both = sorted(set(cfg.data.voices) & set(cfg.data.heldout_voices))
    if both:
        raise ConfigError(f"{source}: data.heldout_voices {both} also in data.voices: a held-out voice must never "
                          f"speak a training sample; remove it from one of them")
    for task, counts in cfg.data.task_samples.items():
        if task not in tasks:
            raise ConfigError(f"{source}: data.task_samples.{task}: unknown task{_suggest(task, tasks)}")
        for split, n in counts.items():
            if split not in ("train", "val", "test"):
                raise ConfigError(f"{source}: data.task_samples.{task}.{split}: unknown split{_suggest(split, ('train', 'val', 'test'))}; "
                                  "use train, val or test")
            if n < 0:
                raise ConfigError(f"{source}: data.task_samples.{task}.{split} = {n} is out of range; allowed [0, inf)")
    if "asr_heldout_voice" in cfg.data.task_samples and not cfg.data.heldout_voices:
        raise ConfigError(f"{source}: data.task_samples names asr_heldout_voice but data.heldout_voices is empty; "
                          "name the flite voices to hold out of training, e.g. heldout_voices: [rms]")


def _validate(cfg: Config, source: str) -> None:
    try:
        tasks = cfg.task_registry()
    except task_registry.TaskDeclarationError as e:
        raise ConfigError(f"{source}: {e}") from None
    _validate_speech_data(cfg, tasks, source)
    for name, st in cfg.stages.items():
        for mod, lr in st.lr.items():
            if mod not in MODULES:
                raise ConfigError(f"{source}: unknown module stages.{name}.lr.{mod}{_suggest(mod, MODULES)}; "
                                  f"modules: {', '.join(MODULES)}")
            if lr < 0:
                raise ConfigError(f"{source}: stages.{name}.lr.{mod} = {lr} is out of range; allowed [0, inf)")
        if st.init_from is not None and st.init_from not in cfg.stages:
            raise ConfigError(f"{source}: stages.{name}.init_from = {st.init_from!r} is not a stage"
                              f"{_suggest(st.init_from, cfg.stages)}")
        if st.objective in ENCODER_OBJECTIVES:
            enc = ENCODER_OBJECTIVES[st.objective]
            extra = [f"lr.{m}" for m, lr in st.lr.items() if lr > 0 and m != enc]
            if extra:
                raise ConfigError(f"{source}: stages.{name} has objective {st.objective}, which trains only "
                                  f"{enc}; set stages.{name}.{', '.join(extra)} to 0")
            if st.lr.get(enc, 0) <= 0:
                raise ConfigError(f"{source}: stages.{name} has objective {st.objective} but "
                                  f"stages.{name}.lr.{enc} is 0 or absent; give it an lr > 0")
            if st.mixture:
                raise ConfigError(f"{source}: stages.{name}.mixture is not used by objective {st.objective} "
                                  f"(it reads its own train split); remove it")
        if st.audio_projector_ctc_steps and (st.objective != "lm" or st.lr.get("audio_projector", 0) <= 0):
            raise ConfigError(f"{source}: stages.{name}.audio_projector_ctc_steps warms up the audio projector of "
                              f"an lm stage that trains it; give stages.{name}.lr.audio_projector an lr > 0 "
                              f"or set audio_projector_ctc_steps to 0")
        if st.loss_filter_k > 0 and st.objective != "lm":
            raise ConfigError(f"{source}: stages.{name}.loss_filter_k filters the samples of an lm stage's mixture; "
                              f"objective {st.objective} reads its own data, so set it to 0")
        for task, w in st.mixture.items():
            if w < 0:
                raise ConfigError(f"{source}: stages.{name}.mixture.{task} = {w} must be >= 0")
            if task not in tasks:
                raise ConfigError(f"{source}: stages.{name}.mixture.{task}: "
                                  f"{task_registry.undeclared_task(task, tasks)}")
            if tasks[task].eval_only and w > 0:
                raise ConfigError(f"{source}: stages.{name}.mixture.{task}: {task} has no training split (test "
                                  f"only); drop it from the mixture")
    _validate_sources(cfg, source)


def load_config(params: str | Path = REPO_ROOT / "params.yaml", overrides: dict | None = None,
                profile: str | None = None) -> Config:
    """Load ``params.yaml``, merge the profile overlay and ``overrides`` (a nested dict), validate."""
    params = Path(params)
    if not params.exists():
        raise ConfigError(f"{params}: no such params file")
    raw = yaml.safe_load(params.read_text()) or {}
    source = str(params)
    profile = profile or (overrides or {}).get("profile") or raw.get("profile", "tiny")
    overlay = params.parent / "configs" / f"{profile}.yaml"
    _build(Config, raw, "", source)          # errors in params.yaml name params.yaml
    if overlay.exists():
        extra = yaml.safe_load(overlay.read_text()) or {}
        _build(Config, merge_overrides(raw, extra), "", str(overlay))   # ... and errors in the overlay name it
        raw = merge_overrides(raw, extra)
        source = f"{params} + {overlay}"
    elif profile not in ("tiny",):
        raise ConfigError(f"{source}: profile {profile!r} needs {overlay}, which does not exist")
    if overrides:
        raw = merge_overrides(raw, overrides)
        source += " + overrides"
    raw["profile"] = profile
    cfg = _build(Config, raw, "", source)
    _validate(cfg, source)
    task_registry.activate(cfg.task_registry())   # what tables and figures, which get no config, look tasks up in
    return cfg
