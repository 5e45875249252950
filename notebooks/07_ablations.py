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
#    checkpoint and scores ASR (one training draw per rate: the error bars cover which test clips were
#    drawn, not the training draw, so read small differences as noise);
# 2. **staging** (this project's question, not an ablation of the paper's): the recipe's stages against
#    one joint mixture of every task trained from the same starting point with the same number of tokens;
# 3. **seeds**: the recipe itself redrawn with other `train.seed` values, to see which scores are
#    robustly above chance and which move across it from one draw to the next.
#
# Each variant is a `python -m omni_core.eval.ablation ...` run (one DVC stage each, so they resume and cache
# separately) that writes one small JSON to `metrics/ablations/`, committed to git like `metrics/`. This
# notebook draws those files, so it runs in seconds on a fresh clone. To recompute, set `rerun` (the
# variants' own timings, printed below, say what it costs on this kind of machine), or try another rate.

# %% tags=["parameters"]
params = "params.yaml"
profile = ""   # empty: the profile named in params.yaml
results_dir = "metrics/ablations"   # the committed results: downsample/, staging/, seeds/
rerun = ""     # "" draws the committed results; "downsample", "staging", "seeds" or "all" reruns them first
extra_rate = 0   # a Conv-GMLP rate to try beside the paper's 2, 4, 8 (e.g. 16): trains stage 1e once more

# %%
import json
import subprocess
from pathlib import Path

from omni_core import load_config
from omni_core import plots
from omni_core.eval.ablation import (collect_downsample, collect_seeds, collect_staging, downsample_variant,
                                     seed_summary)

cfg = load_config(params, profile=profile or None)
out = Path(cfg.eval.figures_dir)
results = Path(results_dir)
TARGETS = {"downsample": ["downsample"], "staging": ["staging_joint", "staging_staged"], "seeds": ["seeds"]}
if rerun:
    if rerun not in (*TARGETS, "all"):
        raise ValueError(f"rerun = {rerun!r}: choose one of {', '.join(TARGETS)}, all, or '' (draw the committed results)")
    targets = ["ablations/dvc.yaml"] if rerun == "all" else [f"ablations/dvc.yaml:{t}" for t in TARGETS[rerun]]
    subprocess.run(["dvc", "repro", *targets], check=True)     # and whatever of the main pipeline they need
if extra_rate:
    # needs the main run's checkpoints/1d_video/model (dvc repro train@1d_video); writes n<rate>.json beside the others
    downsample_variant(cfg, extra_rate, "ablations/downsample", params, profile=profile or None,
                       results=results / "downsample")


def cost(runs) -> str:
    """What one variant took where it ran, from its result: the price of rerunning it."""
    secs = [r["seconds"] for r in runs if "seconds" in r]
    cpus = sorted({r["settings"]["cpu"] for r in runs if "settings" in r})
    return f"{sum(secs) / len(secs) / 60:.1f} min a variant on {', '.join(cpus)}" if secs else "not recorded"

# %% [markdown]
# ## Audio downsampling
# The paper found WER nearly flat for n = 2, 4, 8 (7.7 / 8.3 / 8.0 % with a 1.5B audio LLM), so a
# coarser rate buys a 4x shorter audio sequence almost for free. Each point below is one variant, its error
# bar the 95 % bootstrap interval over the test clips; the dashed line is the chance level (the best single
# training transcript said for every clip). Overlapping bars mean the test set cannot tell the rates apart.

# %%
variants = collect_downsample(results / "downsample")
for n, r in variants.items():
    lo, hi = r.get("wer_ci95") or (float("nan"), float("nan"))
    print(f"n = {n}: {r['tokens_per_second']:5.2f} audio tokens/s, WER {r['wer']:.1f} % [{lo:.1f}, {hi:.1f}] "
          f"(chance {r.get('chance_wer', float('nan')):.1f} %)")
print("cost:", cost(variants.values()))
plots.plot_downsample_ablation(variants, out / "ablation_downsample")

# %% [markdown]
# ## Staging
# Why train in stages at all? With the same number of training tokens, one joint mixture lets the
# LLM learn the answer templates and ignore the spliced features; concentrating steps on one
# modality at a time forces each projector to carry information.

# %%
staging = collect_staging(results / "staging")
print(json.dumps(staging, indent=1))
print("cost of the joint variant:", cost([json.loads((results / "staging/joint.json").read_text())]))
plots.plot_staging_ablation(staging, out / "ablation_staging")

# %% [markdown]
# ## Seeds
# The staged recipe after the stand-ins (stages 1a to 2_sft) trained again with `train.seed` = 1 and 2
# from the same stand-in checkpoints; seed 0 is the main run. The seed fixes the fresh weights, the data
# order and the packing, so each variant is another draw of the same experiment. A task whose worst draw is
# at or below chance has not shown that it beats chance, whatever its best draw says. "Clearly" counts the draws whose lead survives resampling
# the test set (the 95 % paired-bootstrap interval of the margin is above 0, see notebook 04).

# %%
seeds = collect_seeds([results / "staging", results / "seeds"])
print("cost:", cost([json.loads(f.read_text()) for f in sorted((results / "seeds").glob("*.json"))]))
print(f"{'task':20s} {'metric':10s} {'min':>7s} {'mean':>7s} {'max':>7s} {'chance':>7s}  above chance")
for r in seed_summary(seeds["seeds"], seeds["chance"], seeds["margins"]):
    above = f"{r['above_chance']}/{r['seeds']} (worst lead {r['worst_margin']:+.1f})" if "above_chance" in r else "-"
    if "clearly_above_chance" in r:
        above += f", clearly {r['clearly_above_chance']}/{r['seeds']}"
    chance = f"{r['chance']:7.1f}" if r["chance"] is not None else f"{'-':>7s}"
    print(f"{r['task']:20s} {r['metric']:10s} {r['min']:7.1f} {r['mean']:7.1f} {r['max']:7.1f} {chance}  {above}")
plots.plot_seed_spread(seeds["seeds"], seeds["chance"], out / "ablation_seeds", seeds["margins"])
