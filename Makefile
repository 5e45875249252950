# Two commands do all set-up on a fresh machine:  make repro  (run the pipeline)  and  make test.
# Set-up is idempotent: a second run only checks stamps (< 10 s).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.omni-installed
APT_PACKAGES := flite pocketsphinx-testdata fortunes fortunes-min libtcmalloc-minimal4
# the browser test drives Debian's chromium (Playwright's own browser download is never used)
APT_TEST_PACKAGES := chromium
# The pipelines run with tcmalloc: the same arithmetic, 4-8 % faster training steps on 2 cores
# (benchmarks/bench_cpu_parallelism.py, variants eager vs tcmalloc). The shell finds the library when the
# recipe runs, after `apt` has installed it on a fresh machine; nothing is preloaded where it is missing,
# and a user's own LD_PRELOAD is kept after it.
WITH_TCMALLOC = LD_PRELOAD="$$(ls /usr/lib/*/libtcmalloc_minimal.so.4 /usr/lib/libtcmalloc_minimal.so.4 2>/dev/null | head -n 1)$${LD_PRELOAD:+ $$LD_PRELOAD}"
# Offline by default: nothing reaches a model hub at run time.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export DVC_NO_ANALYTICS := 1
export DS_ACCELERATOR ?= cpu
export PATH := $(abspath $(VENV))/bin:$(PATH)
PYTEST_ARGS ?=

.PHONY: setup apt apt-test repro ablations test lab lint small data bench demo replay help
help:
	@echo "make repro   set up (if needed) and run the pipeline: dvc repro (tiny profile)"
	@echo "make repro PROFILE=small   the whole recipe on real small backbones: dvc repro small/dvc.yaml (~2 h)"
	@echo "make ablations  the paper's ablations at tiny scale + the recipe redrawn with 2 more seeds (second pipeline)"
	@echo "make test    set up (if needed) and run the test suite"
	@echo "make lab     JupyterLab on the repo"
	@echo "make lint    ruff + notebook pairing check"
	@echo "make small   convert the small profile's pretrained weights into models/small/"
	@echo "make data    prepare the data only (python -m omni_core.data prepare)"
	@echo "make bench   run the JSON benchmarks (data, training, streaming) into benchmarks/results/"
	@echo "make demo    talk to the trained model from a browser (camera + microphone): http://127.0.0.1:7860"
	@echo "make replay  replay VIDEO=file.mp4 through the real-time session and print the streamed answers"

setup: apt $(STAMP)

# Debian packages the data needs (speech synthesis, real LibriVox speech, fortunes); installed only when absent.
apt:
	@$(call apt_install,$(APT_PACKAGES))

apt-test:
	@$(call apt_install,$(APT_TEST_PACKAGES))

define apt_install
if ! dpkg -s $(1) >/dev/null 2>&1; then \
  echo "installing Debian packages: $(1)"; \
  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $(1) >/dev/null; \
fi
endef

$(STAMP): requirements.txt requirements-nodeps.txt requirements-lmms.txt pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt 2>&1 | grep -v "is ignored: it is neither" || true
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -r requirements-nodeps.txt 2>&1 | grep -v "is ignored: it is neither" || true
# lmms-eval (optional extra, tests/test_lmms_eval.py): --no-deps, so its own pins (av<16, wandb, ...) cannot move ours
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -r requirements-lmms.txt 2>&1 | grep -v "is ignored: it is neither" || true
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e . 2>&1 | grep -v "is ignored: it is neither" || true
	$(PY) -c "import torch, transformers, deepspeed, papermill, dvc, omni_core" 
	@touch $(STAMP)

# PROFILE=small runs the small profile's own pipeline (small/dvc.yaml: real backbones, about 2 h on 2 cores)
PROFILE ?= tiny
PIPELINE_tiny :=
PIPELINE_small := small/dvc.yaml
repro: setup
	@$(if $(filter tiny small,$(PROFILE)),true,echo "make repro PROFILE=$(PROFILE): choose tiny or small (full: README, Scaling up)" >&2; false)
	$(WITH_TCMALLOC) dvc repro $(PIPELINE_$(PROFILE))

ablations: setup
	$(WITH_TCMALLOC) dvc repro ablations/dvc.yaml

test: setup apt-test
	$(PY) -m pytest $(PYTEST_ARGS)

lab: setup
	$(VENV)/bin/jupyter lab --no-browser --allow-root --ip 127.0.0.1 --port $${PORT:-8888} --notebook-dir .

lint: setup
	$(VENV)/bin/ruff check omni_core tests benchmarks notebooks
	$(PY) -m omni_core.notebooks check

small: setup
	$(PY) -m omni_core.model.pretrained --profile small --out models/small

data: setup
	$(PY) -m omni_core.data prepare

bench: setup
	$(PY) benchmarks/bench_data.py
	$(PY) benchmarks/bench_train.py
	$(PY) benchmarks/bench_stream.py
	$(PY) benchmarks/bench_media_reading.py
	$(PY) benchmarks/bench_text_copy.py
	$(PY) benchmarks/bench_scene_reading.py
	$(PY) benchmarks/bench_audio_reading.py
	$(PY) benchmarks/bench_small_costs.py
	$(PY) benchmarks/bench_cpu_parallelism.py
	$(PY) benchmarks/bench_notebook_overhead.py

# the trained checkpoint of PROFILE (tiny: checkpoints/, small: checkpoints/small/) and the pipeline's speech boundary head
CHECKPOINT_tiny := checkpoints/2_sft/model
CHECKPOINT_small := checkpoints/small/2_sft/model
DEMO_ARGS ?=
demo: setup
	$(PY) -m omni_core.web --profile $(PROFILE) --checkpoint $(CHECKPOINT_$(PROFILE)) $(if $(wildcard checkpoints/speech_boundary/config.json),--speech-boundary checkpoints/speech_boundary) $(DEMO_ARGS)

VIDEO ?= data/prepared/media/video/mnist-test-00000.mp4
replay: setup
	$(PY) -m omni_core.demo_realtime --checkpoint checkpoints/2_sft/model --speech-boundary checkpoints/speech_boundary --video $(VIDEO)
