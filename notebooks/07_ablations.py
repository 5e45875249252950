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
# # 07 · Ablations
#
# Two experiments the paper uses to justify its design, rerun at our scale by the second pipeline
# (`make ablations`, i.e. `dvc repro ablations/dvc.yaml`, after the main one):
#
# 1. **audio downsampling** (paper Figure 6): the Conv-GMLP projector pools the Whisper encoder's 50
#    frames per second by a rate n. Each arm retrains stage 1e with n = 2, 4 or 8 from the same
#    checkpoint and scores ASR;
# 2. **staging**: the recipe's stages against one joint mixture of every task trained from the same
#    starting point with the same number of training tokens.
#
# This notebook only reads the arms' `result.json` files and draws them; the arms themselves are
# `python -m omni_core.eval.ablation ...` runs (one DVC stage each, so they resume and cache separately).

# %% tags=["parameters"]
params = "params.yaml"
profile = ""   # "" = the profile named in params.yaml
ablation_dir = "ablations"

# %%
import json
from pathlib import Path

from omni_core import load_config
from omni_core import plots
from omni_core.eval.ablation import collect_downsample, collect_staging

cfg = load_config(params, profile=profile or None)
out = Path(cfg.eval.figures_dir)

# %% [markdown]
# ## Audio downsampling
# The paper found WER nearly flat for n = 2, 4, 8 (7.7 / 8.3 / 8.0 % with a 1.5B audio LLM), so a
# coarser rate buys a 4x shorter audio sequence almost for free. Each point below is one arm; the
# dashed line is the chance level (the best single training transcript said for every clip).

# %%
arms = collect_downsample(Path(ablation_dir) / "downsample")
for n, r in sorted(arms.items()):
    print(f"n = {n}: {r['tokens_per_second']:5.2f} audio tokens/s, WER {r['wer']:.1f} % (chance {r.get('chance_wer', float('nan')):.1f} %)")
plots.plot_downsample_ablation(arms, out / "ablation_downsample")

# %% [markdown]
# ## Staging
# Why train in stages at all? With the same number of training tokens, one joint mixture lets the
# LLM learn the answer templates and ignore the spliced features; concentrating steps on one
# modality at a time forces each projector to carry information.

# %%
staging = collect_staging(Path(ablation_dir) / "staging")
print(json.dumps(staging, indent=1))
plots.plot_staging_ablation(staging, out / "ablation_staging")
