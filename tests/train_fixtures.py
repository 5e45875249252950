"""Tiny data and config for the training tests: every task of the manifest format, media whose content
decides the answer (so a stage that trains an encoder can lower its loss), a trained tokenizer, and a
2-layer LLM of width 64. Built in a few seconds in a tmp dir; nothing is downloaded."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from omni_core.config import REPO_ROOT, Config, load_config
from omni_core.data.manifest import make_sample, media, text, write_manifest
from omni_core.data.sources.media import write_mp4, write_png, write_wav

SR = 16000
# task -> media parts of its user turn
TASK_MEDIA = {"image_caption": ["image"], "image_vqa": ["image"], "ocr": ["image"], "highres_read": ["image"],
              "video_caption": ["video"], "video_qa": ["video"], "asr": ["audio"], "spoken_qa": ["audio"],
              "omni_image_speech": ["image", "audio"], "omni_continuation": ["image", "audio"],
              "video_narration_qa": ["narrated"], "text_instruct": [], "text_lm": []}
# a narrated video's answer is its sound track's word (its picture is a random colour)
WORDS = {"image": ("red", "blue"), "video": ("green", "yellow"), "audio": ("low", "high"), "narrated": ("low", "high")}
COLORS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30), "yellow": (230, 220, 20)}
PROSE = ["the quick brown fox jumps over the lazy dog", "a stitch in time saves nine",
         "all that glitters is not gold", "the early bird catches the worm"]


def _image(rng, word: str, size: int = 16) -> np.ndarray:
    img = np.tile(np.array(COLORS[word], np.int16), (size, size, 1))
    return np.clip(img + rng.integers(-20, 21, img.shape), 0, 255).astype(np.uint8)


def _tone(rng, word: str) -> np.ndarray:
    t = np.arange(int(0.6 * SR)) / SR
    f = 300.0 if word == "low" else 1500.0
    return (0.5 * np.sin(2 * np.pi * f * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def _sample(root: Path, task: str, split: str, i: int, rng) -> dict:
    user, answer = [], []
    for kind in TASK_MEDIA[task]:
        word = WORDS[kind][int(rng.integers(2))]
        rel = f"media/{split}-{task}-{i}-{kind}"
        if kind == "image":
            write_png(root / f"{rel}.png", _image(rng, word))
            rel += ".png"
        elif kind == "video":
            write_mp4(root / f"{rel}.mp4", np.stack([_image(rng, word)] * 2), fps=1.0)
            rel += ".mp4"
        elif kind == "narrated":
            picture = WORDS["video"][int(rng.integers(2))]
            write_mp4(root / f"{rel}.mp4", np.stack([_image(rng, picture)] * 2), fps=1.0, audio=_tone(rng, word),
                      sampling_rate=SR)
            user.append(media("video", f"{rel}.mp4", audio=True))
            answer.append(word)
            continue
        else:
            write_wav(root / f"{rel}.wav", _tone(rng, word), SR)
            rel += ".wav"
        user.append(media(kind, rel))
        answer.append(word)
    if task == "text_lm":
        return make_sample(f"{task}-{split}-{i}", task, split, "test", "CC0", [], PROSE[i % len(PROSE)])
    user.append(text(f"What is it? ({task})"))
    reply = " and ".join(answer) if answer else PROSE[(i + 1) % len(PROSE)]
    return make_sample(f"{task}-{split}-{i}", task, split, "test", "CC0", user, reply)


def make_tiny_data(root: Path, n_train: int = 8, n_val: int = 4, tasks=tuple(TASK_MEDIA), seed: int = 0) -> Path:
    """Write `train/val/test.jsonl`, media and `tokenizer/` under `root`; returns root."""
    from omni_core.model.tokenizer import train_tokenizer

    rng = np.random.default_rng(seed)
    splits = {}
    for split, n in (("train", n_train), ("val", n_val), ("test", n_val)):
        splits[split] = [_sample(root, t, split, i, rng) for t in tasks for i in range(n)]
        write_manifest(root / f"{split}.jsonl", splits[split])
    texts = [p["text"] for s in splits["train"] for m in s["messages"] for p in m["content"] if p["type"] == "text"]
    train_tokenizer(texts + PROSE, vocab_size=320).save_pretrained(root / "tokenizer")
    return root


TINY_MODEL = {
    "llm": {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "num_kv_heads": 1, "intermediate_size": 128},
    "vision": {"image_size": 16, "patch_size": 4, "hidden_size": 32, "num_layers": 1, "num_heads": 2,
               "intermediate_size": 64, "max_tiles": 1, "video_max_frames": 2},
    "audio": {"window_seconds": 1.0, "hidden_size": 32, "num_layers": 1, "num_heads": 2, "ffn_size": 64,
              "downsample": 8},
    "tokenizer": {"vocab_size": 320},
}


def tiny_cfg(tmp_path: Path, data_root: Path, stages: dict | None = None, train: dict | None = None,
             steps: int = 2, batch_size: int = 4, seq_len: int = 128) -> Config:
    """params.yaml's stage table with the tiny model above, short stages, and paths in tmp_path."""
    base = load_config(REPO_ROOT / "params.yaml")
    per_stage = {name: {"steps": steps, "batch_size": batch_size, "seq_len": seq_len, "warmup_ratio": 0.0,
                        "save_every": 1000, "eval_every": 1000, "val_samples": 8, "audio_projector_ctc_steps": 0}
                 for name in base.stages}
    for name, over in (stages or {}).items():
        per_stage.setdefault(name, {}).update(over)
    overrides = {"model": TINY_MODEL, "data": {"root": str(data_root)}, "stages": per_stage,
                 "train": {"checkpoints_dir": str(tmp_path / "checkpoints"), "log_dir": str(tmp_path / "logs"),
                           "threads": 1, **(train or {})}}
    return load_config(REPO_ROOT / "params.yaml", overrides=json.loads(json.dumps(overrides)))
