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
# # 01 · Data: real, offline, one manifest format
#
# Baichuan-Omni trains on hundreds of millions of image, video, audio and text samples (paper §3).
# We cannot download them, so every sample here comes from material that ships with PyPI wheels,
# Debian packages or the Python stdlib: real photos (scikit-image), real handwritten digits (MNIST),
# synthetic scenes and rendered text, moving-MNIST videos with a spoken narration track, speech
# synthesised with `flite` in several voices, real LibriVox speech (held out for evaluation), and
# real English prose (Python docs, fortunes).
#
# Every task of the recipe gets train / val / test splits that share no source item, written as one
# JSONL manifest per split: a chat conversation whose user turn holds typed parts (`text`, `image`,
# `video`, `audio`) with media paths relative to the manifest. The paper's cross-modal task is here
# too: the first quarter of a text is spoken and the model must write the remaining three quarters
# from the image and the audio.
#
# The same params and seed produce byte-identical files, so DVC reruns nothing downstream needlessly.

# %% tags=["parameters"]
params = "params.yaml"
profile = ""   # empty: the profile named in params.yaml

# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from omni_core import load_config
from omni_core.data.manifest import read_manifest
from omni_core.data.prepare import prepare
from omni_core.plots import show_samples

cfg = load_config(params, profile=profile or None)
summary = prepare(cfg)
print(json.dumps(summary, indent=1))

# %% [markdown]
# ## The data card
# Counts, sources and licences per task (also written to `data/prepared/card.md`).

# %%
display(Markdown((Path(cfg.data.root) / "card.md").read_text()))

# %% [markdown]
# ## A look at the samples
# One training sample per task: the media as the model's processor sees them, the question and the
# answer the model must produce.

# %%
train = read_manifest(Path(cfg.data.root) / "train.jsonl")
show_samples(train, Path(cfg.data.root))
plt.show()

# %% [markdown]
# ## Validation
# The same checks training runs (missing or corrupt media, placeholder/media mismatch, empty answers,
# unknown tasks, duplicate ids) over every manifest. `python -m omni_core.data validate FILE` runs
# them from the shell, one line per problem with `file:line`.

# %%
from omni_core.data.validate import validate_manifest

for split in ("train", "val", "test"):
    problems = validate_manifest(Path(cfg.data.root) / f"{split}.jsonl")
    print(f"{split}: {len(problems)} problems")
    assert not problems, problems[:5]
