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
# # 03 · Multimodal multitask SFT
#
# The second phase of Baichuan-Omni (paper §2): every module trainable, one mixture of all tasks
# (text, image, video, audio, image + audio and video with its own sound track), starting from the omni-aligned checkpoint
# of stage 1f. The paper packs several samples into each sequence with flash-attention's `cu_seqlens`
# so no compute is spent on padding; here packing is the same idea on CPU: samples share a row,
# position ids restart at every sample and attention never crosses a sample boundary.

# %% tags=["parameters"]
stage = "2_sft"
params = "params.yaml"
profile = ""   # empty: the profile named in params.yaml

# %%
import matplotlib.pyplot as plt

from omni_core import load_config
from omni_core.plots import plot_stage_grid, plot_stage_loss
from omni_core.train.launch import train
from omni_core.train.freezing import trainable_summary

cfg = load_config(params, profile=profile or None)
st = cfg.stage(stage)
print(f"profile={cfg.profile} init_from={st.init_from} steps={st.steps} packing={st.packing}")
print("tasks:", ", ".join(st.mixture))
trainable_summary(cfg, st)

# %% [markdown]
# The same for every stage of the recipe, this one framed: what trains (orange, with its learning rate) and
# what stays frozen, beside what the paper does in that stage; a dashed cell is where the tiny profile departs
# from the paper (docs/recipe.md says why).

# %%
plot_stage_grid(cfg, current=stage)
plt.show()

# %% [markdown]
# ## Why packing
# Padding a batch to its longest sample wastes every pad position's compute. Packing fills rows
# with whole samples instead; the fraction of real tokens is what the model actually learns from.

# %%
from omni_core.data.collate import packing_report

packing_report(cfg, stage)

# %% [markdown]
# ## Train
# Same entry point as the alignment stages; resumable, logged with dvclive to `logs/2_sft/`.

# %%
summary = train(stage, params=params, profile=profile or None, log_file=f"{cfg.train.log_dir}/{stage}/train.log")
plot_stage_loss(cfg, stage)
plt.show()
