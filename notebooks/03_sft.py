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
# The second phase of Baichuan-Omni (paper §2): every module trainable in the paper (the tiny profile keeps
# its warmed-up encoders frozen: the grid below shows both), one mixture of all tasks
# (text, image, video, audio, image + audio and video with its own sound track), starting from the omni-aligned checkpoint
# of stage 1f. The paper packs several samples into each sequence with flash-attention's `cu_seqlens`
# so no compute is spent on padding; here packing is the same idea on CPU: samples share a row,
# position ids restart at every sample and attention never crosses a sample boundary.

# %% tags=["parameters"]
stage = "2_sft"
params = "params.yaml"
profile = ""   # empty: the profile named in params.yaml
sets = ""                    # knobs to try, separated by ";": any params.yaml key (see "Train" below)

# %%
import matplotlib.pyplot as plt
from IPython.display import display

from omni_core import load_config
from omni_core.config import parse_overrides
from omni_core.eval.probes import answer_probes
from omni_core.plots import plot_stage_grid, plot_stage_loss
from omni_core.train.launch import train
from omni_core.train.freezing import trainable_summary
from omni_core.train.run_state import stage_dir

knobs = [kv.strip() for kv in sets.split(";") if kv.strip()]
cfg = load_config(params, overrides=parse_overrides(knobs) or None, profile=profile or None)
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
# `sets` changes any params.yaml key for this run, e.g. `"stages.2_sft.steps=50"` or
# `"stages.2_sft.lr.llm=0"` (freeze the LLM, as the paper does). Cost: this stage retrains (seconds to a few
# minutes at tiny scale; docs/performance.md lists each stage's time) and writes its checkpoint as usual, so
# the stages after it see the change when they run; `dvc repro` then reruns them too.
#
# Same entry point as the alignment stages; resumable, logged with dvclive to `logs/2_sft/`.

# %%
summary = train(stage, params=params, profile=profile or None, sets=knobs,
                log_file=f"{cfg.train.log_dir}/{stage}/train.log")
plot_stage_loss(cfg, stage)
plt.show()

# %% [markdown]
# ## What the model says now
# The same test prompts after every stage, one per modality and one that mixes two (test samples are never
# trained on): read down the stages' reports to see the curriculum in behaviour, from text-only answers after
# 0_text to images in 1a-1c, videos in 1d, speech in 1e and their mixtures in 1f and SFT.

# %%
if st.enabled:
    display(answer_probes(cfg, stage_dir(cfg, stage) / "model"))
