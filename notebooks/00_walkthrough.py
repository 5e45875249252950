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
# no memory, no weights), then through the **tiny** model the pipeline trains, with real media.

# %% tags=["parameters"]
params = "params.yaml"
image_side = 1000     # a high-resolution image, to see AnyRes tiling at work
audio_seconds = 75    # long audio spans several 30 s Whisper windows

# %%
import numpy as np
import torch
from PIL import Image

from omni_core import load_config
from omni_core.eval.ablation import token_budget
from omni_core.model import build_model, train_tokenizer
from omni_core import plots
from omni_core.model.full_scale import full_scale_model_on_meta
from omni_core.model.labels import IGNORE_INDEX
from omni_core.model.token_counts import audio_num_tokens, audio_num_windows, image_tokens
from omni_core.model.token_counts import token_budget as unit_budget
from omni_core.model.vision import anyres_tiles, patch_token_map
from omni_core.processing import OmniProcessor

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
print(f"a {image_side}x{image_side // 2} image -> {len(grid)} tiles (grid + global view) "
      f"-> {image_tokens(image_side, image_side // 2, v)} LLM tokens")

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
print("image tiles -> tokens:", dict(zip(budget["image"]["tiles"], budget["image"]["tokens"])))
print("video 60 s ->", budget["video"]["tokens"][59], "tokens")
print("audio 60 s ->", {n: t[59] for n, t in budget["audio"]["tokens"].items()}, "tokens by rate n")

# %% [markdown]
# ## Splicing, on the tiny model with real tensors
# The processor renders the chat template and expands each `<image>` / `<video>` / `<audio>`
# placeholder into a start token, N pad tokens and an end token, N computed from the media. The
# model embeds the text, encodes the media, and writes the projected vectors in place of the pad
# embeddings: no sentinel ids, no re-padding. Labels cover only the assistant's reply.

# %%
tiny = load_config(params, profile="tiny")
tok = train_tokenizer(["Describe the image.", "A red square and a blue circle.", "What is said?"] * 8, 300)
tiny_model = build_model(tiny, tok).eval()
processor = OmniProcessor(tok, tiny.model)
rng = np.random.default_rng(0)
messages = [{"role": "user", "content": [
                {"type": "image", "image": rng.integers(0, 255, (64, 48, 3), dtype=np.uint8)},
                {"type": "audio", "array": (0.1 * rng.standard_normal(16000)).astype(np.float32), "sampling_rate": 16000},
                {"type": "text", "text": "Describe the image."}]},
            {"role": "assistant", "content": [{"type": "text", "text": "A red square and a blue circle."}]}]
batch = processor(messages)
for k, t in batch.items():
    print(f"{k:20s} {tuple(t.shape)}")
print(processor.decode(batch["input_ids"], skip_special_tokens=False)[:400])
print("supervised tokens:", int((batch["labels"] != IGNORE_INDEX).sum()), "of", len(batch["labels"]))

# %%
with torch.no_grad():
    out = tiny_model(**{k: (t[None] if k in ("input_ids", "attention_mask", "labels") else t) for k, t in batch.items()})
print("loss of the untrained tiny model:", float(out.loss))
