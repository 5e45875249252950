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
# # 02 · Multimodal alignment, one branch at a time
#
# Baichuan-Omni's first phase aligns each encoder with the LLM before anything is trained jointly
# (paper §2; `docs/paper.md`). This notebook runs **one** sub-stage of that phase; the pipeline
# (`dvc.yaml`) runs it once per sub-stage, each starting from the previous stage's checkpoint:
#
# | stage | trains | why |
# |---|---|---|
# | 0 text (tiny only) | LLM | stands in for the pretrained 7B LLM the paper starts from |
# | 0 vision (tiny, small) | vision encoder + linear heads, on MNIST train-split digit labels, freshly printed words of the tasks' vocabulary, and single drawn shapes labelled by shape and by colour | stands in for the pretrained SigLIP: the answer loss alone leaves a random tower at chance on what an image shows |
# | 0 audio (tiny only) | audio encoder + a linear word-CTC head, on the asr task's train split | stands in for the pretrained Whisper encoder, for the same reason |
# | 1a image caption | visual projector (tiny: + LLM) | map visual features into the LLM's embedding space with the LLM frozen, so its language ability cannot drift |
# | 1b image VQA | + vision encoder (tiny: projector + LLM) | VQA/OCR need finer features than captions; captions stay in the mix to limit drift |
# | 1c image full | + LLM | let the LLM adapt to visual tokens; pure text in the mix keeps its text skills |
# | 1d video, step 1 (`1d_video_images`) | video projector only, on images as one-frame videos | start the video projector (a copy of the image projector) on the data it already knows |
# | 1d video, step 2 (`1d_video`) | video projector only (tiny: + LLM), images and videos mixed | frames go through the image path (AnyRes tiles, 2 x 2 pooling); learn to read them as a sequence |
# | 1e audio | audio encoder + Conv-GMLP (tiny: Conv-GMLP + LLM, the encoder stays as 0 audio left it; first the Conv-GMLP alone learns, by CTC over the LLM's own word embeddings, to say each spoken word as the LLM embeds it) | ASR aligns speech with text while the LLM stays frozen |
# | 1f omni alignment | everything (tiny: but the vision tower and projector, which keep 1a-1c's digits, and the audio encoder) | image, video and audio pairs mixed (videos with their own sound track among them), so modalities stop competing |
#
# The tiny profile departs from the paper where its size forces it (`benchmarks/bench_media_reading.py`
# measured both): its 4-layer LM cannot be steered by soft tokens while frozen, so it trains in every
# sub-stage (with captions and text replayed in 1d and 1e), and its encoders, pretrained in stages
# 0 vision (digits) and 0 audio (CTC transcription), stay frozen from then on. For the same reason its
# LM read the spoken digits only after ~300 steps of 1e until the projector got a warm-up of its own
# (`audio_projector_ctc_steps`, `omni_core/train/warmup/audio_projector.py`). `configs/small.yaml` and
# `configs/full.yaml` keep the paper's pattern above.
#
# `train(...)` runs the stage in this kernel when it takes one process (`train.nproc: 1`, tiny and small);
# with `train.nproc > 1` it launches `torchrun`/`deepspeed` as a subprocess (a kernel cannot host
# multi-process training) and streams its log into the cell. Either way the log lands in `logs/<stage>/train.log`.

# %% tags=["parameters"]
stage = "1a_image_caption"   # which sub-stage of params.yaml `stages:` to run
params = "params.yaml"
profile = ""                 # empty: the profile named in params.yaml
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
from omni_core.train.run_state import SKIPPED_FILE, stage_dir

knobs = [kv.strip() for kv in sets.split(";") if kv.strip()]
cfg = load_config(params, overrides=parse_overrides(knobs) or None, profile=profile or None)
st = cfg.stage(stage)
print(f"profile={cfg.profile} stage={stage} init_from={st.init_from} steps={st.steps} batch={st.batch_size}")
print("mixture:", st.mixture)

# %% [markdown]
# ## What this stage trains
# A learning rate of 0 (or no entry) freezes a module: it gets no gradients and stays out of the
# optimizer, so frozen parts cost no optimizer memory and are bitwise unchanged after the stage.

# %%
trainable_summary(cfg, st)

# %% [markdown]
# The same for every stage of the recipe, this one framed: what trains (orange, with its learning rate) and
# what stays frozen, beside what the paper does in that stage; a dashed cell is where the tiny profile departs
# from the paper (docs/recipe.md says why).

# %%
plot_stage_grid(cfg, current=stage)
plt.show()

# %% [markdown]
# ## Train
# `sets` changes any params.yaml key for this run, e.g. `"stages.1a_image_caption.steps=50"` or
# `"stages.1a_image_caption.lr.llm=0"` (freeze the LLM, as the paper does). Cost: this stage retrains (seconds to a few
# minutes at tiny scale; docs/performance.md lists each stage's time) and writes its checkpoint as usual, so
# the stages after it see the change when they run; `dvc repro` then reruns them too.
#
# Checkpoints go to `checkpoints/<stage>/model` (HF format, loadable with `from_pretrained`) and the
# resumable state (optimizer, scheduler, RNG, data position) to `checkpoints/<stage>/state`. If this
# run is interrupted, rerunning it (or `dvc repro`) resumes from the last saved step.

# %%
summary = train(stage, params=params, profile=profile or None, sets=knobs,
                log_file=f"{cfg.train.log_dir}/{stage}/train.log")

# %% [markdown]
# ## Loss on this stage's own data
# Training loss per step and validation loss on held-out samples of the same mixture. A stage the
# profile disables (small and full skip the stand-ins their pretrained weights replace) trains nothing:
# it records in `checkpoints/<stage>/model/skipped.json` which checkpoint the next stage starts from.

# %%
if st.enabled:
    plot_stage_loss(cfg, stage)
    plt.show()
else:
    print(f"{stage} is disabled in profile {cfg.profile}:", (stage_dir(cfg, stage) / "model" / SKIPPED_FILE).read_text())

# %% [markdown]
# ## What the model says now
# The same test prompts after every stage, one per modality and one that mixes two (test samples are never
# trained on): read down the stages' reports to see the curriculum in behaviour, from text-only answers after
# 0_text to images in 1a-1c, videos in 1d, speech in 1e and their mixtures in 1f and SFT.

# %%
if st.enabled:
    display(answer_probes(cfg, stage_dir(cfg, stage) / "model"))
