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
# # 04 · Evaluation, laid out like the paper's tables
#
# Every task's **test** split (never seen in training; splits share no source item) is scored with
# batched greedy decoding: exact match for VQA, OCR, video QA and the omni tasks, WER/CER (jiwer) for
# speech recognition, chrF/BLEU (sacrebleu) for free text, and held-out perplexity for text before and
# after multimodal training (the paper's claim that text ability is kept). Each metric is shown
# beside its chance or trivial-baseline level, computed from the training data (majority answer,
# best fixed sentence, unigram model), because a tiny model's number means nothing without it.
# With a few hundred test samples a task's lead over chance is itself noisy, so each comes with a 95 %
# interval from a paired bootstrap over the test samples (the model's and the baseline's answers
# resampled together): "beats chance: yes" means the whole interval is above 0, "within noise" that the
# model is ahead by less. Samples that repeat an item (the same clip and question: spoken_qa's 300
# test samples hold 37 distinct clips, asr's 254) are resampled together, as one item.
#
# Batch size, dtype, attention kind and seed are recorded with the results: peers' users fight
# numbers that change with them. The paper's published numbers for the 7B model are printed beside
# ours, labelled *reported*, never mixed with what was measured here.

# %% tags=["parameters"]
params = "params.yaml"
profile = ""   # empty: the profile named in params.yaml
checkpoint = ""  # empty: checkpoints/<eval.checkpoint>/model

# %%
from pathlib import Path

import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from omni_core import load_config
from omni_core import plots
from omni_core.eval.runner import evaluate
from omni_core.eval.readme_results import reading
from omni_core.eval.tables import load_results, render_markdown

cfg = load_config(params, profile=profile or None)
ckpt = checkpoint or str(Path(cfg.train.checkpoints_dir) / cfg.eval.checkpoint / "model")
results = evaluate(cfg, ckpt)
display(Markdown(render_markdown(results)))

# %% [markdown]
# ## Which answers get confused
# Where the answers are classes (a shape, a colour, a direction, a number word), a confusion matrix shows
# more than the accuracy: rows are the reference, columns the model's answer ("other": an answer that is
# no reference of that question), one panel per kind of question. Look for a bright diagonal (right), a
# bright column (one answer given to everything: the task's prior, not the task) and bright cells off
# the diagonal (which classes the model cannot tell apart).

# %%
records = plots.prediction_records(Path(cfg.eval.metrics_dir) / "predictions.jsonl", Path(cfg.data.root) / "test.jsonl")
figures = Path(cfg.eval.figures_dir)
for task in [t for t in plots.CONFUSION_TASKS if t in results["predictions"]]:
    plots.plot_confusion(records, task, figures / f"confusion_{task}")

# %% [markdown]
# ## A few test samples per task
# Reading outputs is the fastest way to see what a number hides: per task, test samples right and wrong,
# with the media the model got (the image, the sampled frames, or the waveform), its answer and the reference.

# %%
for task in results["predictions"]:
    plots.plot_prediction_grid([r for r in records if r["task"] == task], cfg.data.root, cfg.model.vision)
    plt.show()

# %% [markdown]
# ## Reading the results
# Computed from the metrics just written, so it always says what this run measured: how many tasks beat
# chance clearly, which do not, and whether multimodal training kept the LM's text ability (the paper says
# it does at 7B; its held-out text perplexity before and after answers it here).

# %%
display(Markdown(reading(load_results(cfg.eval.metrics_dir))))
