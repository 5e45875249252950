"""DeepSpeed on CPU: 2 processes (torchrun, gloo), ZeRO-2 and ZeRO-3, on batches where one rank holds an
image and no audio while the other holds audio and no image. No hang, the val loss falls, the exported
checkpoint loads with `from_pretrained` and equals the trained (gathered) weights, and a killed ZeRO-2
run resumes exactly."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from train_fixtures import make_tiny_data, tiny_cfg

from omni_core.config import REPO_ROOT
from omni_core.train.batches import StageBatches
from omni_core.train.deepspeed_cpu import free_port

pytestmark = pytest.mark.slow       # two processes of torch + deepspeed
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from ds_train_worker import STAGE, stage_override  # noqa: E402


@pytest.fixture(scope="module")
def ds_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ds")
    data = make_tiny_data(tmp / "data", n_train=6, n_val=4, tasks=("image_caption", "asr", "text_lm"))
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
           str(HERE / "ds_train_worker.py"), str(tmp), str(data)]
    try:    # a collective mismatch between ranks would hang forever: the timeout turns it into a failure
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=REPO_ROOT)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"2-process DeepSpeed run hung (>240 s):\n{(e.stderr or b'')[-3000:]}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return tmp, data


def test_batches_mix_modalities_across_ranks(ds_run):
    """The run above really had steps where rank 0 saw only images and rank 1 only audio (or reverse)."""
    tmp, data = ds_run
    from omni_core.config import load_config
    base = load_config(REPO_ROOT / "params.yaml").stages[STAGE].mixture
    cfg = tiny_cfg(tmp / "check", data, stages=stage_override(base))
    batches = StageBatches(cfg, cfg.stage(STAGE), processor=None, rank=0, world_size=2, micro=1)
    split = [tuple(batches.task_of(i) for i in batches.global_batch(s)) for s in range(cfg.stage(STAGE).steps)]
    assert {("image_caption", "asr"), ("asr", "image_caption")} & set(split), split


@pytest.mark.parametrize("zero", ["zero2", "zero3"])
def test_deepspeed_trains_and_exports(ds_run, zero):
    from omni_core.model import OmniForConditionalGeneration

    tmp, _ = ds_run
    res = json.loads((tmp / zero / "result.json").read_text())
    assert res["world_size"] == 2
    assert res["val_loss_end"] < res["val_loss_start"] - 0.05, res
    trained = torch.load(tmp / zero / "weights.pt")
    loaded = OmniForConditionalGeneration.from_pretrained(tmp / zero / "checkpoints" / STAGE / "model",
                                                          dtype=torch.float32)
    got = dict(loaded.named_parameters())
    assert set(got) == set(trained)
    for name, w in trained.items():
        assert w.numel() > 0 and got[name].shape == w.shape, name
        assert torch.equal(got[name], w), f"{zero}: exported {name} differs from the trained weights"


def test_deepspeed_resume_continues_exactly(ds_run):
    """ZeRO-2 killed during step 5 (last save at step 4) and resumed ends where the uninterrupted run ends."""
    tmp, _ = ds_run
    full = json.loads((tmp / "zero2" / "result.json").read_text())
    resumed = json.loads((tmp / "zero2_resumed" / "result.json").read_text())
    assert len(resumed["losses"]) == 4                  # steps 5..8 were trained after the resume
    assert resumed["losses"] == pytest.approx(full["losses"][4:], abs=1e-6)
    a, b = torch.load(tmp / "zero2" / "weights.pt"), torch.load(tmp / "zero2_resumed" / "weights.pt")
    # not bitwise: two gloo ranks' float sums are not bit-stable from run to run (differences of 1.5e-6 occur)
    assert max(float((a[n] - b[n]).abs().max()) for n in a) < 1e-5
