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
# # 05 · Figures
#
# The pictures of this run, saved as PNG + SVG under `figures/` (the README embeds them):
#
# 1. loss across every stage of the recipe, one panel per kind of loss: each stage starts from the last;
# 2. each task's metric against its chance level, measured on held-out test data;
# 3. the token budget per modality at full scale, which is why the paper pools tokens at all;
# 4. which module each stage trains, at which learning rate, beside the paper's setting.
#
# The ablations' figures come from notebook 07 (`make ablations`), which retrains parts of the recipe.

# %% tags=["parameters"]
params = "params.yaml"
profile = ""   # empty: the profile named in params.yaml

# %%
from pathlib import Path

from omni_core import load_config
from omni_core import plots
from omni_core.eval.ablation import recipe_stages, token_budget
from omni_core.eval.tables import load_results

cfg = load_config(params, profile=profile or None)
out = Path(cfg.eval.figures_dir)
out.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## Loss across the recipe
# The stand-in stages pre-train the encoders with losses of their own (classification for the vision tower,
# CTC for the audio encoder), on other scales than the LLM's next-token loss: each kind gets its own panel.
# In the next-token panel, look at the jumps where a stage brings new tasks: the loss on them starts high and
# falls within the stage; the dots (validation) say whether it also falls on held-out samples.

# %%
stages = recipe_stages(cfg)
plots.plot_loss_curves(stages, cfg.train.log_dir, out / "loss_curves", {s: cfg.stage(s).objective for s in stages})


# %%
plots.plot_metric_vs_chance(load_results(cfg.eval.metrics_dir), out / "metric_vs_chance")


# %% [markdown]
# ## Token budget at full scale
# Tokens the LLM reads per modality with the paper's settings: 182 tokens per 384 px tile (AnyRes
# grid + a global view), video at 1 fps up to 48 frames of 182-546 tokens (a frame of up to 384 x 768 takes
# the image path: one tile, or two and a global view), audio at 50/n tokens per second.

# %%
full = load_config(params, profile="full")
plots.plot_token_budget(token_budget(full), out / "token_budget")


# %% [markdown]
# ## What each stage trains
# One row per stage, one column per module: orange cells train (the profile's learning rate), grey cells are
# frozen. The second line is the paper's setting (`configs/full.yaml`): its learning rate where the paper
# gives one, "trains" where it trains the module without saying at which rate. Dashed red borders mark where
# the profile departs from the paper: the tiny LLM trains in stages where the paper freezes it, because a
# 4-layer LM cannot be steered by soft tokens while frozen, and its stand-in encoders stay frozen after stage 0.

# %%
plots.plot_stage_grid(cfg, out=out / "stage_grid")


# %% [markdown]
# ## DVC plots, rendered offline
# `dvc plots show` writes HTML that loads Vega from a CDN; here the same specs are rendered to PNG.

# %%
for p in plots.render_dvc_plots(out / "dvc"):
    print(p)
