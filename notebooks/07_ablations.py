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
# One experiment of the paper and two of this project's own, run at our scale by the second pipeline
# (`make ablations`, i.e. `dvc repro ablations/dvc.yaml`, after the main one):
#
# 1. **audio downsampling** (the paper's Figure 6): the Conv-GMLP projector pools the Whisper encoder's 50
#    frames per second by a rate n. Each variant retrains stage 1e with n = 2, 4 or 8 from the same
#    checkpoint and scores ASR (one seed each: read small differences as noise);
# 2. **staging** (this project's question, not an ablation of the paper's): the recipe's stages against
#    one joint mixture of every task trained from the same starting point with the same number of tokens;
# 3. **seeds**: the recipe itself redrawn with other `train.seed` values, to see which scores are
#    robustly above chance and which move across it from one draw to the next.
#
# This notebook only reads the variants' `result.json` files and draws them; the variants themselves are
# `python -m omni_core.eval.ablation ...` runs (one DVC stage each, so they resume and cache separately).

# %% tags=["parameters"]
params = "params.yaml"
profile = ""   # empty: the profile named in params.yaml
ablation_dir = "ablations"

# %%
import json
from pathlib import Path

from omni_core import load_config
from omni_core import plots
from omni_core.eval.ablation import collect_downsample, collect_seeds, collect_staging, seed_summary

cfg = load_config(params, profile=profile or None)
out = Path(cfg.eval.figures_dir)

# %% [markdown]
# ## Audio downsampling
# The paper found WER nearly flat for n = 2, 4, 8 (7.7 / 8.3 / 8.0 % with a 1.5B audio LLM), so a
# coarser rate buys a 4x shorter audio sequence almost for free. Each point below is one variant; the
# dashed line is the chance level (the best single training transcript said for every clip).

# %%
variants = collect_downsample(Path(ablation_dir) / "downsample")
for n, r in sorted(variants.items()):
    print(f"n = {n}: {r['tokens_per_second']:5.2f} audio tokens/s, WER {r['wer']:.1f} % (chance {r.get('chance_wer', float('nan')):.1f} %)")
plots.plot_downsample_ablation(variants, out / "ablation_downsample")

# %% [markdown]
# ## Staging
# Why train in stages at all? With the same number of training tokens, one joint mixture lets the
# LLM learn the answer templates and ignore the spliced features; concentrating steps on one
# modality at a time forces each projector to carry information.

# %%
staging = collect_staging(Path(ablation_dir) / "staging")
print(json.dumps(staging, indent=1))
plots.plot_staging_ablation(staging, out / "ablation_staging")

# %% [markdown]
# ## Seeds
# The staged recipe after the stand-ins (stages 1a to 2_sft) trained again with `train.seed` = 1 and 2
# from the same stand-in checkpoints; seed 0 is the main run. The seed fixes the fresh weights, the data
# order and the packing, so each variant is another draw of the same experiment. A task whose worst draw is
# at or below chance has not shown that it beats chance, whatever its best draw says. "Clearly" counts the draws whose lead survives resampling
# the test set (the 95 % paired-bootstrap interval of the margin is above 0, see notebook 04).

# %%
seeds = collect_seeds([Path(ablation_dir) / "staging", Path(ablation_dir) / "seeds"])
print(f"{'task':20s} {'metric':10s} {'min':>7s} {'mean':>7s} {'max':>7s} {'chance':>7s}  above chance")
for r in seed_summary(seeds["seeds"], seeds["chance"], seeds["margins"]):
    above = f"{r['above_chance']}/{r['seeds']} (worst lead {r['worst_margin']:+.1f})" if "above_chance" in r else "-"
    if "clearly_above_chance" in r:
        above += f", clearly {r['clearly_above_chance']}/{r['seeds']}"
    chance = f"{r['chance']:7.1f}" if r["chance"] is not None else f"{'-':>7s}"
    print(f"{r['task']:20s} {r['metric']:10s} {r['min']:7.1f} {r['mean']:7.1f} {r['max']:7.1f} {chance}  {above}")
plots.plot_seed_spread(seeds["seeds"], seeds["chance"], out / "ablation_seeds", seeds["margins"])
