"""A dress rehearsal of the full profile, as a GPU user runs it, on 2 CPU processes.

Miniature backbones of the real HF classes (Qwen2ForCausalLM with spare embedding rows like Qwen2-7B's and an
untied head, its own tokenizer without our media tokens; SiglipVisionModel at 384 px, patch 14; Whisper with 128
mel bins) are saved in a tmp dir; configs/full.yaml runs on them with its paths pointed there, its architecture
as is and stages 1a to 2_sft at 2 steps: 2 gloo ranks, ZeRO-3 with the partitioned load active while the model
is built (`OMNI_CPU_ZERO3_INIT=1`: HfDeepSpeedConfig alive, as on GPUs). Then the 2_sft export is reloaded and
evaluated on a few samples. The run fails on each bug the rehearsal once found: Whisper's init under the
partitioned load, the embedding table shrunk to the tokenizer, media-token rows left untrained, flash_attention_2
without flash-attn.

This file is also the worker: `torchrun --nproc_per_node 2 tests/test_full_rehearsal.py OVERRIDES_JSON OUT`.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from train_fixtures import make_tiny_data  # noqa: E402

from omni_core.config import REPO_ROOT, load_config  # noqa: E402
from omni_core.train.deepspeed_cpu import ZERO3_INIT_ENV, free_port  # noqa: E402

STAGES = ("1a_image_caption", "1b_image_vqa", "1c_image_full", "1d_video_images", "1d_video", "1e_audio",
          "1f_omni_alignment", "2_sft")
SPARE_ROWS = 40            # the LLM's table is longer than its tokenizer, as Qwen2-7B's (152,064 rows, 151,646 tokens)
EVAL_TASKS = ("image_caption", "asr", "text_lm")


# ------------------------------------------------------------------------------------------ backbones
def _base_tokenizer(texts: list[str]):
    """A byte-level BPE with the specials a Qwen2 tokenizer has (and none of our media tokens)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from omni_core.model.tokenizer import EOT, IM_END, IM_START

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainer=trainers.BpeTrainer(
        vocab_size=300, special_tokens=[EOT, IM_START, IM_END], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOT, pad_token=EOT, model_max_length=1 << 20)


def make_backbones(root: Path, data: Path) -> dict[str, Path]:
    """Qwen2 + tokenizer, SigLIP vision tower, Whisper: the full profile's three folders in miniature."""
    from transformers import (
        Qwen2Config,
        Qwen2ForCausalLM,
        SiglipVisionConfig,
        SiglipVisionModel,
        WhisperConfig,
        WhisperForConditionalGeneration,
    )

    torch.manual_seed(0)
    texts = [p["text"] for line in (data / "train.jsonl").read_text().splitlines()
             for m in json.loads(line)["messages"] for p in m["content"] if p["type"] == "text"]
    tok = _base_tokenizer(texts)
    dirs = {"llm": root / "llm-7b", "vision": root / "siglip-so400m", "audio": root / "whisper-large-v3"}
    Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok) + SPARE_ROWS, hidden_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=1, intermediate_size=64,
                                 tie_word_embeddings=False, eos_token_id=tok.eos_token_id)).save_pretrained(dirs["llm"])
    tok.save_pretrained(dirs["llm"])
    SiglipVisionModel(SiglipVisionConfig(image_size=384, patch_size=14, hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2)).save_pretrained(dirs["vision"])
    WhisperForConditionalGeneration(WhisperConfig(
        num_mel_bins=128, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, vocab_size=64, max_source_positions=1500,
        pad_token_id=0, bos_token_id=0, eos_token_id=0, decoder_start_token_id=1)).save_pretrained(dirs["audio"])
    return dirs


def overrides(dirs: dict[str, Path], data: Path, out: Path) -> dict:
    """configs/full.yaml as shipped, but its folders in tmp, short stages and small batches, paths in ``out``."""
    stages = {name: {"steps": 2, "batch_size": 2, "seq_len": 1024, "warmup_ratio": 0.0, "save_every": 1000,
                     "eval_every": 1000, "val_samples": 2} for name in STAGES}
    # float32: DeepSpeed on CPU trains in fp32 (deepspeed_cpu), so ZeRO-3 partitions load in fp32 whatever
    # model.dtype says; the whole-weight path compared with it must load the same bits
    return {"model": {"llm": {"path": str(dirs["llm"])}, "tokenizer": {"path": str(dirs["llm"])},
                      "vision": {"path": str(dirs["vision"])}, "audio": {"path": str(dirs["audio"])},
                      "dtype": "float32"},
            "data": {"root": str(data)}, "stages": stages,
            "train": {"checkpoints_dir": str(out / "checkpoints"), "log_dir": str(out / "logs"), "threads": 1,
                      "nproc": 2},
            "eval": {"metrics_dir": str(out / "metrics"), "max_samples_per_task": 2, "max_new_tokens": 4,
                     "batch_size": 2}}


def rehearsal_cfg(over: dict):
    return load_config(REPO_ROOT / "params.yaml", profile="full", overrides=over)


# --------------------------------------------------------------------------------------------- worker
def worker(over_file: Path, out: Path) -> None:
    """Every stage of the full profile in this process (one of 2 ranks); rank 0 writes what the test checks."""
    import omni_core.model as model_pkg
    from omni_core.train.loop import train_stage

    torch.set_num_threads(1)
    cfg = rehearsal_cfg(json.loads(over_file.read_text()))
    built = {}
    build_model = model_pkg.build_model

    def spy(*args, **kwargs):          # how the LLM sat in memory right after loading: partitioned or whole
        model = build_model(*args, **kwargs)
        from omni_core.model.omni import embedding_rows

        weight = model.get_input_embeddings().weight
        built.update(partitioned=hasattr(weight, "ds_shape"), local_rows=int(weight.shape[0]),
                     rows=embedding_rows(model), attn=model.config.text_config._attn_implementation)
        return model

    model_pkg.build_model = spy
    results = {}
    for name in STAGES:
        t0 = time.perf_counter()
        res = train_stage(cfg, name, progress=False)
        results[name] = {k: res.get(k) for k in ("steps", "world_size", "train_loss", "val_loss_start", "val_loss_end")}
        results[name]["seconds"] = time.perf_counter() - t0
    if torch.distributed.get_rank() == 0:
        (out / "result.json").write_text(json.dumps({"stages": results, "built": built}, indent=1))


# ---------------------------------------------------------------------------------------------- tests
@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("full_rehearsal")
    data = make_tiny_data(tmp / "data", n_train=2, n_val=2)
    dirs = make_backbones(tmp / "models", data)
    over = overrides(dirs, data, tmp)
    (tmp / "overrides.json").write_text(json.dumps(over))
    env = {**os.environ, "DS_ACCELERATOR": "cpu", ZERO3_INIT_ENV: "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
           str(Path(__file__).resolve()), str(tmp / "overrides.json"), str(tmp)]
    t0 = time.perf_counter()
    try:    # a collective mismatch between ranks would hang forever: the timeout turns it into a failure
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=420, cwd=REPO_ROOT)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"2-process full-profile rehearsal hung (>420 s):\n{(e.stderr or b'')[-3000:]}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    result = json.loads((tmp / "result.json").read_text())
    print(f"rehearsal: {time.perf_counter() - t0:.0f} s for 8 stages on 2 ranks;",
          {k: round(v["seconds"], 1) for k, v in result["stages"].items()})
    return tmp, dirs, over, result


def test_full_rehearsal_trains_every_stage_with_the_partitioned_load(rehearsal):
    tmp, dirs, over, result = rehearsal
    built = result["built"]
    # stage 1a built the model with HfDeepSpeedConfig alive: the LLM came out of from_pretrained partitioned,
    # and its real row count (not the partition's) decided the resize: nothing shrank
    assert built["partitioned"] and built["local_rows"] < built["rows"], built
    from transformers import AutoConfig
    llm_rows = AutoConfig.from_pretrained(dirs["llm"]).vocab_size
    assert built["rows"] == llm_rows
    assert built["attn"] == "sdpa"                          # full.yaml's flash_attention_2, without flash-attn
    for name in STAGES:
        res = result["stages"][name]
        assert res["world_size"] == 2 and res["steps"] == 2, (name, res)
        losses = [res[k] for k in ("train_loss", "val_loss_start", "val_loss_end")]
        assert all(v is not None and math.isfinite(v) for v in losses), (name, res)
        assert (tmp / "checkpoints" / name / "model" / "config.json").is_file(), name


def test_full_rehearsal_media_token_rows_get_the_mean_in_both_paths(rehearsal):
    """The LLM is frozen in 1a, so its export holds the rows as built under ZeRO-3; the whole-weight path
    (build_model in this process, no DeepSpeed) writes the same bits: the spare rows of our added tokens hold
    the mean of the pretrained rows, the other rows are the checkpoint's."""
    from transformers import AutoTokenizer, Qwen2ForCausalLM

    from omni_core.model import OmniForConditionalGeneration, build_model, load_tokenizer
    from omni_core.model.tokenizer import MEDIA_TOKENS

    tmp, dirs, over, _ = rehearsal
    cfg = rehearsal_cfg(over)
    exported = OmniForConditionalGeneration.from_pretrained(tmp / "checkpoints" / "1a_image_caption" / "model",
                                                            dtype=torch.float32)
    tok = load_tokenizer(dirs["llm"])
    whole = build_model(cfg, tok)
    llm = Qwen2ForCausalLM.from_pretrained(dirs["llm"], dtype=torch.float32)
    n_own = len(AutoTokenizer.from_pretrained(dirs["llm"]))
    added = tok.convert_tokens_to_ids(MEDIA_TOKENS)
    assert min(added) == n_own and max(added) < llm.config.vocab_size      # they landed in the spare rows
    for get in ("get_input_embeddings", "get_output_embeddings"):
        pretrained = getattr(llm, get)().weight
        for model in (exported, whole):
            w = getattr(model, get)().weight.detach()
            assert w.shape == pretrained.shape                              # never shrunk
            assert torch.equal(w[:n_own], pretrained[:n_own])
            assert torch.equal(w[added], pretrained[:n_own].mean(0).expand(len(added), -1)), get
        assert torch.equal(getattr(exported, get)().weight, getattr(whole, get)().weight), get


def test_full_rehearsal_export_reloads_and_evaluates(rehearsal):
    from omni_core.eval.runner import evaluate

    tmp, _, over, _ = rehearsal
    cfg = rehearsal_cfg(over)
    results = evaluate(cfg, tmp / "checkpoints" / "2_sft" / "model", tasks=EVAL_TASKS, device="cpu")
    assert results["settings"]["attn_implementation"] == "sdpa"
    tasks = {t: r for table in results["tables"].values() for t, r in table["tasks"].items()}
    assert set(tasks) == set(EVAL_TASKS)
    assert all(r["n"] == 2 for r in tasks.values())
    ppl = tasks["text_lm"]
    assert torch.isfinite(torch.tensor([ppl["perplexity"], ppl["perplexity_before"]])).all(), ppl


if __name__ == "__main__":
    worker(Path(sys.argv[1]), Path(sys.argv[2]))
