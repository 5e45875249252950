"""Training throughput of the tiny profile: our model versus HF reference models of the same size.

On the same real samples from `data/prepared/train.jsonl`, with the same trainable modules, each model
is trained the way its users train it:

- image (stage 1a: vision encoder + projector train, LLM frozen): ours = OmniProcessor + PackCollator
  (2x2-pooled tokens, logits only at supervised positions) vs `LlavaForConditionalGeneration` with the
  same SigLIP + Qwen2 sizes, one image token per patch, right-padded batches, logits everywhere;
- audio (stage 1e: audio encoder + projector train, LLM frozen): ours (Conv-GMLP n tokens) vs
  `Qwen2AudioForConditionalGeneration` with the same Whisper-encoder + Qwen2 sizes, padded batches;
- packing vs padding of our model on the SFT mixture (stage 2_sft, all modules train);
- ZeRO-2/3 model-state memory for the full profile (7B LLM + SigLIP-so400m + Whisper-large-v3 encoder)
  on 1 x 80 GB and 8 x 80 GB, from DeepSpeed's estimate_* functions (a markdown table for the README).

Throughput = supervised (answer) tokens per CPU second of forward + backward + AdamW step, fp32 on CPU
(bf16 matmuls are ~400x slower on CPUs without avx512_bf16), one torch thread; wall-clock rates are reported too.
Rounds alternate ours / theirs; each keeps its best round. Peak memory = peak RSS during the run.

    python benchmarks/bench_train.py [--data data/prepared] [--batch 16] [--steps 4] [--out benchmarks/results/train.json]
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import soundfile as sf
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from omni_core.config import REPO_ROOT, load_config  # noqa: E402
from omni_core.data.collate import PackCollator, non_pad_fraction, pad_collate  # noqa: E402
from omni_core.data.dataset import MixtureSampler, OmniDataset  # noqa: E402
from omni_core.model import build_model, load_tokenizer  # noqa: E402
from omni_core.model.configuration import SPECIAL_TOKENS  # noqa: E402
from omni_core.model.labels import IGNORE_INDEX  # noqa: E402
from omni_core.model.vision import to_pixel_values  # noqa: E402
from omni_core.processing import OmniProcessor  # noqa: E402
from omni_core.train.freezing import param_groups  # noqa: E402


# ------------------------------------------------------------------------------------------ measuring
class PeakRSS:
    """Peak resident memory of this process while the block runs (sampled every 5 ms), in MB."""

    def __enter__(self):
        self.proc, self.peak, self.stop = psutil.Process(), 0, False
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        return self

    def _poll(self):
        while not self.stop:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *exc):
        self.stop = True
        self.thread.join()
        self.mb = self.peak / 2**20


def train_steps(model, params, batches: list[dict]) -> tuple[float, float]:
    """(wall, CPU) seconds for forward + backward + AdamW step over `batches` (one warm-up step not
    counted). CPU time of this process is what the ratio uses: the machine is shared, and other
    processes' load stretches wall time but not the work done here."""
    opt = torch.optim.AdamW(params, lr=1e-4)
    model.train()

    def step(b):
        model(**b).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step(batches[0])
    t0, c0 = time.perf_counter(), time.process_time()
    for b in batches[1:]:
        step(b)
    return time.perf_counter() - t0, time.process_time() - c0


def supervised(batches: list[dict]) -> int:
    return sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in batches[1:])


def measure(runs: dict[str, tuple], rounds: int) -> dict[str, dict]:
    """Alternate the runs for `rounds` rounds; per run the best time, tokens/s and peak memory."""
    best: dict[str, dict] = {}
    for _ in range(rounds):
        for name, (model, params, batches) in runs.items():
            with PeakRSS() as mem:
                wall, secs = train_steps(model, params, batches)
            sup = supervised(batches)
            toks = sum(int(b["input_ids"].numel()) for b in batches[1:])
            if name not in best or secs < best[name]["cpu_seconds"]:
                best[name] = {"cpu_seconds": round(secs, 3), "wall_seconds": round(wall, 3),
                              "supervised_tokens_per_s": round(sup / secs, 1),
                              "supervised_tokens_per_wall_s": round(sup / wall, 1),
                              "token_slots_per_s": round(toks / secs, 1), "peak_rss_mb": round(mem.mb, 1),
                              "steps": len(batches) - 1, "supervised_tokens": sup}
    return best


# ------------------------------------------------------------------------------------------- samples
def records(data: Path, task: str, n: int) -> tuple[OmniDataset, list[int]]:
    ds = OmniDataset(data / "train.jsonl", tasks=[task])
    idx = ds.task_indices[task]
    return ds, [idx[i % len(idx)] for i in range(n)]


def _span_to(ids: torch.Tensor, labels: torch.Tensor, pad_id: int, counts: list[int], new_id: int):
    """Replace each run of our media pad tokens by `counts[k]` copies of the reference's placeholder."""
    out_ids, out_lab, k, i = [], [], 0, 0
    ids_l, lab_l = ids.tolist(), labels.tolist()
    while i < len(ids_l):
        if ids_l[i] == pad_id:
            j = i
            while j < len(ids_l) and ids_l[j] == pad_id:
                j += 1
            out_ids += [new_id] * counts[k]
            out_lab += [IGNORE_INDEX] * counts[k]
            k, i = k + 1, j
        else:
            out_ids.append(ids_l[i])
            out_lab.append(lab_l[i])
            i += 1
    return torch.tensor(out_ids), torch.tensor(out_lab)


def hf_pad(rows: list[tuple[torch.Tensor, torch.Tensor]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded input_ids / attention_mask / labels, as HF's processors + collators produce them."""
    t = max(len(r[0]) for r in rows)
    ids = torch.full((len(rows), t), pad_id)
    lab = torch.full((len(rows), t), IGNORE_INDEX)
    mask = torch.zeros((len(rows), t), dtype=torch.long)
    for i, (a, b) in enumerate(rows):
        ids[i, :len(a)], lab[i, :len(b)], mask[i, :len(a)] = a, b, 1
    return {"input_ids": ids, "labels": lab, "attention_mask": mask}


# --------------------------------------------------------------------------------------- references
def _train_only(model, *modules) -> list:
    """Freeze ``model`` except ``modules`` (the same trainable parts as our stage); return their parameters."""
    model.requires_grad_(False)
    trainable = [p for m in modules for p in m.parameters()]
    for p in trainable:
        p.requires_grad_(True)
    return trainable


def llava_reference(cfg, tokenizer, omni):
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    v = omni.config.vision_config
    config = LlavaConfig(vision_config=v.to_dict(), text_config=omni.config.text_config.to_dict(),
                         image_token_index=tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS["image"]["pad"]),
                         vision_feature_select_strategy="full", vision_feature_layer=-1,
                         image_seq_length=(v.image_size // v.patch_size) ** 2, projector_hidden_act="gelu")
    model = LlavaForConditionalGeneration(config).float()
    return model, _train_only(model, model.model.vision_tower, model.model.multi_modal_projector)


def qwen2audio_reference(cfg, tokenizer, omni):
    from transformers import Qwen2AudioConfig, Qwen2AudioEncoderConfig, Qwen2AudioForConditionalGeneration

    a = omni.config.audio_config
    enc = Qwen2AudioEncoderConfig(num_mel_bins=a.num_mel_bins, encoder_layers=a.encoder_layers,
                                  encoder_attention_heads=a.encoder_attention_heads, encoder_ffn_dim=a.encoder_ffn_dim,
                                  d_model=a.d_model, max_source_positions=a.max_source_positions)
    config = Qwen2AudioConfig(audio_config=enc.to_dict(), text_config=omni.config.text_config.to_dict(),
                              audio_token_index=tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS["audio"]["pad"]))
    model = Qwen2AudioForConditionalGeneration(config).float()
    return model, _train_only(model, model.model.audio_tower, model.model.multi_modal_projector)


def qwen2audio_tokens(frames: int) -> int:
    """Audio tokens Qwen2-Audio gives `frames` mel frames (its _get_feat_extract_output_lengths)."""
    after_conv = (frames - 1) // 2 + 1
    return (after_conv - 2) // 2 + 1


# ---------------------------------------------------------------------------------------- scenarios
def ours(cfg, processor, stage: str, ds: OmniDataset, idx: list[int], batch: int, packing: bool):
    torch.manual_seed(0)
    model = build_model(cfg, processor.tokenizer).float()
    groups = param_groups(model, cfg.stage(stage))
    feats = [processor(ds.records[i]["messages"], base_dir=ds.base_dir) for i in idx]
    pad = processor.tokenizer.pad_token_id or 0
    collate = (PackCollator(cfg.stage(stage).seq_len, pad_token_id=pad) if packing
               else functools.partial(pad_collate, pad_token_id=pad))
    batches = [collate(feats[i:i + batch]) for i in range(0, len(feats), batch)]
    fill = float(np.mean([non_pad_fraction(b, [len(f["input_ids"]) for f in feats[i * batch:(i + 1) * batch]])
                          for i, b in enumerate(batches)]))
    return model, [p for g in groups for p in g["params"]], batches, feats, fill


def image_bench(cfg, processor, data: Path, batch: int, steps: int, rounds: int) -> dict:
    ds, idx = records(data, "image_caption", batch * (steps + 1))
    model, params, batches, feats, fill = ours(cfg, processor, "1a_image_caption", ds, idx, batch, packing=True)
    ref, ref_params = llava_reference(cfg, processor.tokenizer, model)
    v = model.config.vision_config
    n_img = ref.config.image_seq_length
    pad_id, img_id = processor.pad_ids["image"], ref.config.image_token_index
    rows, pixels = [], []
    for i, f in zip(idx, feats):
        rows.append(_span_to(f["input_ids"], f["labels"], pad_id, [n_img], img_id))
        part = next(p for m in ds.records[i]["messages"] for p in m["content"] if p["type"] == "image")
        with Image.open(ds.base_dir / part["path"]) as im:    # Llava: one image resized to the tower's size
            pixels.append(to_pixel_values([im.convert("RGB").resize((v.image_size, v.image_size))]))
    ref_batches = [{**hf_pad(rows[i:i + batch], processor.tokenizer.pad_token_id or 0),
                    "pixel_values": torch.cat(pixels[i:i + batch])} for i in range(0, len(rows), batch)]
    res = measure({"ours": (model, params, batches), "llava": (ref, ref_params, ref_batches)}, rounds)
    res["ours"]["non_pad_fraction"] = round(fill, 3)
    return {"stage": "1a_image_caption (vision encoder + projector train, LLM frozen)", "task": "image_caption",
            "reference": "LlavaForConditionalGeneration", **res,
            "image_tokens_per_image": {"ours": int((feats[0]["input_ids"] == pad_id).sum()), "llava": n_img},
            "ratio": round(res["ours"]["supervised_tokens_per_s"] / res["llava"]["supervised_tokens_per_s"], 2)}


def audio_bench(cfg, processor, data: Path, batch: int, steps: int, rounds: int) -> dict:
    ds, idx = records(data, "asr", batch * (steps + 1))
    model, params, batches, feats, fill = ours(cfg, processor, "1e_audio", ds, idx, batch, packing=True)
    ref, ref_params = qwen2audio_reference(cfg, processor.tokenizer, model)
    a = model.config.audio_config
    window = 2 * a.max_source_positions
    pad_id, aud_id = processor.pad_ids["audio"], ref.config.audio_token_index
    rows, mels, masks = [], [], []
    for i, f in zip(idx, feats):
        part = next(p for m in ds.records[i]["messages"] for p in m["content"] if p["type"] == "audio")
        frames = min(window, math.ceil(sf.info(str(ds.base_dir / part["path"])).frames / 160))
        rows.append(_span_to(f["input_ids"], f["labels"], pad_id, [qwen2audio_tokens(frames)], aud_id))
        mels.append(f["audio_features"][:1])                      # same log-mel window (clips <= window)
        masks.append((torch.arange(window) < frames).long()[None])
    ref_batches = [{**hf_pad(rows[i:i + batch], processor.tokenizer.pad_token_id or 0),
                    "input_features": torch.cat(mels[i:i + batch]), "feature_attention_mask": torch.cat(masks[i:i + batch])}
                   for i in range(0, len(rows), batch)]
    res = measure({"ours": (model, params, batches), "qwen2_audio": (ref, ref_params, ref_batches)}, rounds)
    res["ours"]["non_pad_fraction"] = round(fill, 3)
    return {"stage": "1e_audio (audio encoder + projector train, LLM frozen)", "task": "asr",
            "reference": "Qwen2AudioForConditionalGeneration", **res,
            "ratio": round(res["ours"]["supervised_tokens_per_s"] / res["qwen2_audio"]["supervised_tokens_per_s"], 2)}


def packing_bench(cfg, processor, data: Path, batch: int, steps: int, rounds: int) -> dict:
    stage = cfg.stage("2_sft")
    ds = OmniDataset(data / "train.jsonl", tasks=[t for t, w in stage.mixture.items() if w > 0])
    idx = list(MixtureSampler(ds.task_indices, stage.mixture, seed=0, num_samples=batch * (steps + 1)))
    runs, fills = {}, {}
    for packing in (True, False):
        model, params, batches, _, fill = ours(cfg, processor, "2_sft", ds, idx, batch, packing)
        runs["packed" if packing else "padded"] = (model, params, batches)
        fills["packed" if packing else "padded"] = round(fill, 3)
    res = measure(runs, rounds)
    for k in res:
        res[k]["non_pad_fraction"] = fills[k]
    return {"stage": "2_sft (all modules train)", **res,
            "speedup": round(res["packed"]["supervised_tokens_per_s"] / res["padded"]["supervised_tokens_per_s"], 2)}


# ------------------------------------------------------------------------------------ ZeRO estimates
def full_profile_params() -> tuple[int, int, dict]:
    """Parameters of the full-profile model (built on the meta device: no weights, no memory)."""
    from omni_core.model import OmniConfig, OmniForConditionalGeneration
    from omni_core.model.configuration import omni_config_fields
    from omni_core.model.full_scale import paper_backbone_configs

    m = load_config(REPO_ROOT / "params.yaml", profile="full").model
    text, vision, audio = paper_backbone_configs()      # Qwen2-7B, siglip-so400m-patch14-384, whisper-large-v3
    with torch.device("meta"):
        model = OmniForConditionalGeneration(OmniConfig(text_config=text, vision_config=vision, audio_config=audio,
                                                        **omni_config_fields(m)))
    per_module = {n: sum(p.numel() for p in mod.parameters()) for n, mod in model.module_groups().items()}
    total = sum(p.numel() for p in model.parameters())
    largest = max(sum(p.numel() for p in mod.parameters(recurse=False)) for mod in model.modules())
    return total, largest, per_module


def zero_estimates() -> dict:
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    total, largest, per_module = full_profile_params()
    z2 = estimate_zero2_model_states_mem_needs
    z3 = functools.partial(estimate_zero3_model_states_mem_needs, total, largest, zero_init=True)
    rows = []
    for gpus in (1, 8):
        for name, (cpu, gpu) in (
                ("ZeRO-2", z2(total, gpus, 1, cpu_offload=False)),
                ("ZeRO-2 + offload optimizer", z2(total, gpus, 1, cpu_offload=True)),
                ("ZeRO-3", z3(gpus, 1, cpu_offload=False, cpu_offload_params=False)[:2]),
                ("ZeRO-3 + offload optimizer", z3(gpus, 1, cpu_offload=True, cpu_offload_params=False)[:2]),
                ("ZeRO-3 + offload optimizer + params", z3(gpus, 1, cpu_offload=True, cpu_offload_params=True)[:2])):
            rows.append({"gpus": f"{gpus} x 80 GB", "strategy": name, "per_gpu_gb": round(gpu / 2**30, 1),
                         "cpu_gb": round(cpu / 2**30, 1), "fits_80gb": gpu / 2**30 < 80 * 0.9})
    return {"total_params": total, "largest_layer_params": largest, "params_by_module": per_module, "rows": rows,
            "note": "model states only (bf16 weights, fp32 master + Adam states, grads); activations come on top "
                    "(gradient checkpointing keeps them to a few GB per GPU at seq_len 8192)"}


def zero_table(z: dict) -> str:
    lines = [f"Full profile: {z['total_params'] / 1e9:.2f} B parameters. Model-state memory per DeepSpeed's estimators:",
             "", "| GPUs | strategy | per GPU (GB) | CPU RAM (GB) | fits 80 GB |", "|---|---|---|---|---|"]
    lines += [f"| {r['gpus']} | {r['strategy']} | {r['per_gpu_gb']} | {r['cpu_gb']} | {'yes' if r['fits_80gb'] else 'no'} |"
              for r in z["rows"]]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- main
def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=None, help="prepared data folder (default: data.root of params.yaml)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=4, help="timed optimizer steps per run (after one warm-up)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: CPU time = work done)")
    ap.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results" / "train.json"))
    ap.add_argument("--skip", nargs="*", default=[], choices=["image", "audio", "packing", "zero"])
    ap.add_argument("--min-ratio", type=float, default=1.2, help="exit 1 if ours / reference falls below this")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = load_config(REPO_ROOT / "params.yaml")
    data = Path(args.data or cfg.data.root)
    if not (data / "train.jsonl").exists():
        raise SystemExit(f"{data / 'train.jsonl'} is missing: run `python -m omni_core.data prepare` first")
    tokenizer = load_tokenizer(cfg.model.tokenizer.path or data / "tokenizer", cfg.model.trust_remote_code)
    processor = OmniProcessor(tokenizer, cfg.model)
    out = {"settings": {"profile": cfg.profile, "batch": args.batch, "steps": args.steps, "rounds": args.rounds,
                        "threads": args.threads, "dtype": "float32", "device": "cpu", "data": str(data),
                        "machine": platform.machine(), "cpus": os.cpu_count(), "torch": torch.__version__}}
    for name, fn in (("image", image_bench), ("audio", audio_bench), ("packing", packing_bench)):
        if name not in args.skip:
            out[name] = fn(cfg, processor, data, args.batch, args.steps, args.rounds)
            print(json.dumps({name: out[name]}, indent=1), flush=True)
    if "zero" not in args.skip:
        out["zero_estimates"] = zero_estimates()
        print(zero_table(out["zero_estimates"]))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    low = {k: out[k]["ratio"] for k in ("image", "audio") if k in out and out[k]["ratio"] < args.min_ratio}
    if low:
        raise SystemExit(f"throughput ratio below {args.min_ratio}: {low}")
    return out


if __name__ == "__main__":
    main()
