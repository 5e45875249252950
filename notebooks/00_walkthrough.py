# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 00 · Walkthrough: Baichuan-Omni, module by module, with real shapes
#
# Baichuan-Omni (arXiv 2410.08565) is a 7B decoder-only LLM that reads image, video, audio and text
# together. Each modality has an encoder and a projector that turn media into vectors of the LLM's
# width; those vectors are spliced into the token sequence where the prompt has placeholders, and
# the LLM reads everything with one attention. This notebook follows one conversation through the
# model: first at **full scale** (built on PyTorch's meta device: real shapes and parameter counts,
# no memory, no weights), then with **real test samples** from `data/prepared` through the processor and the
# model the pipeline trains (`checkpoints/2_sft/model`; an untrained model of the profile before training).

# %% tags=["parameters"]
params = "params.yaml"
profile = ""          # empty: the profile named in params.yaml
checkpoint = ""       # empty: checkpoints/<eval.checkpoint>/model (an untrained model while it does not exist)
image_side = 1000     # a high-resolution image, to see AnyRes tiling at work
audio_seconds = 75    # long audio spans several 30 s Whisper windows

# %%
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from omni_core import load_config
from omni_core.data.manifest import answer_text, media_parts, read_manifest
from omni_core.eval.ablation import token_budget
from omni_core.eval.runner import generate_answers, load_checkpoint, to_sample
from omni_core.model import build_model, load_tokenizer, train_tokenizer
from omni_core import plots
from omni_core.model.full_scale import full_scale_model_on_meta
from omni_core.model.labels import IGNORE_INDEX
from omni_core.model.token_counts import audio_num_tokens, audio_num_windows, image_tokens, tile_grid
from omni_core.model.token_counts import token_budget as unit_budget
from omni_core.model.vision import anyres_tiles, patch_token_map
from omni_core.processing import OmniProcessor, load_image

tokenizer = train_tokenizer(["Describe the image.", "What is said in the audio?", "A handwritten digit seven."] * 4, 300)
cfg, model = full_scale_model_on_meta(tokenizer)
counts = {name: sum(p.numel() for p in m.parameters()) for name, m in model.module_groups().items()}
for name, n in counts.items():
    print(f"{name:17s} {n / 1e9:6.3f} B parameters")
print(f"{'total':17s} {sum(counts.values()) / 1e9:6.3f} B  ({sum(counts.values()) * 2 / 2**30:.1f} GiB in bf16)")

# %% [markdown]
# ## Vision: SigLIP, AnyRes tiles and 2x2 spatial pooling
# siglip-so400m-patch14-384 cuts a 384 px tile into 27 x 27 = 729 patches of 14 px and returns one
# 1152-wide vector per patch. Images larger than one tile are split into a grid of 384 px tiles
# (AnyRes) plus one downsampled **global** view, so small text stays readable. The projector averages
# each 2 x 2 **neighbourhood** of the patch grid into one token and maps it to the LLM width with a
# 2-layer MLP. 27 is odd, so one axis is padded (its last row of tokens averages one patch row) and on the
# other the last token takes three columns: 14 x 13 = 182 tokens per tile, the paper's count, with every
# patch in exactly one token.

# %%
v = cfg.model.vision
patches = torch.empty(1, (v.image_size // v.patch_size) ** 2, model.config.vision_config.hidden_size, device="meta")
print("one tile:", tuple(patches.shape), "->", tuple(model.vision_projector(patches).shape))
grid = anyres_tiles(Image.new("RGB", (image_side, image_side // 2)), v.image_size, v.max_tiles)
rows, cols = tile_grid(image_side, image_side // 2, v.image_size, v.max_tiles)
print(f"a {image_side}x{image_side // 2} image -> {rows}x{cols} grid = {rows * cols} tiles + 1 global view "
      f"= {len(grid)} tiles -> {image_tokens(image_side, image_side // 2, v)} LLM tokens")

# %% [markdown]
# ## Video: every frame through the image path, its own projector
# Frames are sampled at 1 fps (at most 48) and each goes through the image path: a frame of up to
# 384 x 768 becomes one tile (a square frame) or two tiles plus a global view (a wide one), pooled 2 x 2
# like an image tile, then a **separate** video projector (initialised from the image projector) maps
# them to the LLM: 182-546 tokens per frame. The picture below shows which patches feed which token, for
# an image tile and for a wide frame's two tiles (the red line is the tile border; the global view is one
# more tile like the first panel). Each coloured block is one token: a token never mixes patches from
# distant parts of the picture, so where things are, and which way they move, survives the pooling.

# %%
tile = patch_token_map(v.image_size // v.patch_size, v.pool, v.pool_type)
frame_tile = patch_token_map(v.image_size // v.patch_size, v.video_pool, v.pool_type)
wide = np.concatenate([frame_tile] + [frame_tile + (k + 1) * (frame_tile.max() + 1) for k in range(v.video_max_tiles - 1)], 1)
budget_units = unit_budget(v, cfg.model.audio)
plots.plot_pool_geometry({
    f"image tile: {tile.shape[0]}x{tile.shape[1]} patches -> {budget_units['image_tile_tokens']} tokens": tile,
    f"video frame {v.image_size}x{v.image_size * v.video_max_tiles}: {v.video_max_tiles} tiles + global view "
    f"-> {budget_units['video_frame_tokens_max']} tokens": wide}, tile_side=tile.shape[1])
print(f"tokens per frame: {budget_units['video_frame_tokens_min']}-{budget_units['video_frame_tokens_max']}; "
      f"a 48-frame video: up to {budget_units['video_tokens_48_frames']} tokens")

# %% [markdown]
# ## Audio: Whisper windows and the Conv-GMLP projector
# whisper-large-v3 turns 30 s of 16 kHz audio (128 mel bins, 3000 frames) into 1500 vectors of width
# 1280: 50 per second. Longer audio is split into several windows whose outputs are concatenated.
# The Conv-GMLP projector has two strided Conv1d branches (kernel = stride = n), one of them a SiLU
# gate; their product goes through a Linear to the LLM width, plus a residual made by regrouping n
# frames, then LayerNorm. n = 4 gives 12.5 tokens per second.

# %%
frames = torch.empty(1, 1500, model.config.audio_config.d_model, device="meta")
print("30 s window:", tuple(frames.shape), "->", tuple(model.audio_projector(frames).shape))
samples = audio_seconds * 16000
print(f"{audio_seconds} s of audio: {audio_num_windows(samples, 30.0)} windows -> "
      f"{audio_num_tokens(samples, cfg.model.audio.downsample)} LLM tokens")

# %% [markdown]
# ## Token budget per modality at full scale
# What each modality costs the LLM, counted with the same functions the processor and model use.

# %%
budget = token_budget(cfg)
print("image: grid tiles (+ 1 global view when more than one) -> tokens:",
      {f"{t}" + (" + 1" if t > 1 else ""): n for t, n in zip(budget["image"]["tiles"], budget["image"]["tokens"])})
print("video 60 s ->", budget["video"]["tokens"][59], "tokens")
print("audio 60 s ->", {n: t[59] for n, t in budget["audio"]["tokens"].items()}, "tokens by rate n")

# %% [markdown]
# ## Splicing, on real test samples
# The processor renders the chat template and expands each `<image>` / `<video>` / `<audio>` placeholder
# into a start token, N pad tokens and an end token, N computed from the media with the same functions
# as above. Here: one test sample per modality from `data/prepared` (held out from training), with the
# profile's sizes (tiny: 32 px tiles of 8 x 8 patches, pooled to 16 tokens; a video frame pooled to 4).

# %%
cfg_run = load_config(params, profile=profile or None)
root = Path(cfg_run.data.root)
ckpt = Path(checkpoint or Path(cfg_run.train.checkpoints_dir) / cfg_run.eval.checkpoint / "model")
trained = (ckpt / "config.json").exists()
if trained:
    tiny_model, processor = load_checkpoint(cfg_run, ckpt, "cpu")
else:       # before training: the data pipeline's tokenizer and a random-init model of the profile
    processor = OmniProcessor(load_tokenizer(root / "tokenizer"), cfg_run.model)
    torch.manual_seed(0)
    tiny_model = build_model(cfg_run, processor.tokenizer).eval()
print("model:", ckpt if trained else f"untrained {cfg_run.profile} model", f"| vocabulary: {len(processor.tokenizer)}")

# %%
test = read_manifest(root / "test.jsonl")
picks = [next(s for s in test if s["task"] == task) for task in ("highres_read", "video_qa", "asr")]
for sample in picks:
    batch = processor(sample["messages"], base_dir=root)
    print(f"--- {sample['task']}:", {k: tuple(t.shape) for k, t in batch.items()})
    print(plots.format_runs(plots.token_runs(batch["input_ids"], processor.tokenizer)))

# %% [markdown]
# ### The spliced sequence
# Each row is one sample: its media as the model gets them (the image, the frames sampled at
# `video_fps`, the waveform) and the token sequence as colour-coded blocks. Look at the bold blocks: each
# is a run of pad tokens, one per LLM token the medium costs, and the model writes the projected media
# vectors there. The underlined blocks are the only ones the loss covers: the assistant's answer.

# %%
out = Path(cfg_run.eval.figures_dir)
plots.plot_token_layout(plots.token_layout_rows(picks, processor, root), out / "token_layout")

# %% [markdown]
# ### AnyRes and 2 x 2 pooling on the high-resolution sample
# The 64 px digit grid is larger than one 32 px tile, so it is cut into a 2 x 2 grid of tiles plus one
# downsampled global view: 5 tiles, each pooled to 16 tokens. Each coloured region over a tile is the group
# of patches averaged into one LLM token (the full-scale picture above, on real pixels). The title counts
# what the processor counted: the `<|image_pad|>` run above has exactly that many tokens.

# %%
image_part = media_parts(picks[0])[0]
plots.plot_anyres_tiling(load_image(image_part, root, 10_000), cfg_run.model.vision, out / "anyres_tiling")

# %% [markdown]
# ### What the model makes of them
# The loss is the mean cross-entropy of the answer tokens. An untrained model spreads its probability
# evenly over the vocabulary of V tokens, so its loss is about ln V (ln 2048 = 7.6 for the tiny
# tokenizer); the trained checkpoint's loss on these held-out answers is far below it, and its greedy
# answers can be compared with the references.

# %%
with torch.no_grad():
    for sample in picks:
        batch = processor(sample["messages"], base_dir=root)
        inputs = {k: (t[None] if k in ("input_ids", "attention_mask", "labels") else t) for k, t in batch.items()}
        loss = float(tiny_model(**inputs).loss)
        print(f"{sample['task']:13s} loss {loss:5.2f} over {int((batch['labels'] != IGNORE_INDEX).sum())} answer "
              f"tokens (ln V = {math.log(len(processor.tokenizer)):.2f})")
answers = generate_answers(tiny_model, processor, [to_sample(s, "test") for s in picks], root, 8, 24)
for sample, answer in zip(picks, answers):
    print(f"{sample['task']:13s} answer {answer!r:28s} reference {answer_text(sample)!r}")
