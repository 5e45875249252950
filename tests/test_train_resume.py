"""Resume: a stage killed after step k and resumed ends where an uninterrupted run ends (CPU fp32);
a state written under another config is refused, one written from other inputs is not reused; a kill
during a save never corrupts a checkpoint."""
import re

import pytest
import torch
from safetensors.torch import load_file, save_file
from train_fixtures import make_tiny_data, tiny_cfg

from omni_core.config import REPO_ROOT, load_config
from omni_core.train.loop import train_stage
from omni_core.train.run_state import CheckpointMismatchError, atomic_dir, latest_state, read_state

STAGE = "1f_omni_alignment"        # trains every module but the frozen vision tower; here on image + audio + text
MIXTURE = {**{t: 0.0 for t in load_config(REPO_ROOT / "params.yaml").stages[STAGE].mixture},
           "image_caption": 1.0, "asr": 1.0, "text_lm": 0.5}
OVERRIDE = {STAGE: {"init_from": None, "steps": 5, "save_every": 2, "eval_every": 3, "warmup_ratio": 0.4,
                    "mixture": MIXTURE, "batch_size": 4, "grad_accum": 2}}


class Killed(RuntimeError):
    pass


def _kill_after(k):
    def on_step(step, metrics):
        if step == k:
            raise Killed(f"simulated kill after step {k}")
    return on_step


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tiny_data(tmp_path_factory.mktemp("resume") / "data", n_train=6, n_val=2,
                          tasks=("image_caption", "asr", "text_lm"))


def test_killed_and_resumed_equals_uninterrupted(tmp_path, data):
    full = train_stage(tiny_cfg(tmp_path / "a", data, stages=OVERRIDE), STAGE, progress=False)

    cfg = tiny_cfg(tmp_path / "b", data, stages=OVERRIDE)
    with pytest.raises(Killed):                   # dies during step 3; the last save was at step 2
        train_stage(cfg, STAGE, progress=False, on_step=_kill_after(3))
    stage_dir = tmp_path / "b" / "checkpoints" / STAGE
    assert read_state(latest_state(stage_dir)).step == 2
    assert not (stage_dir / "model").exists()     # the HF export is written once, when the stage finishes

    # the interrupted state is refused under a changed config, naming what changed
    changed = {STAGE: {**OVERRIDE[STAGE], "lr": {"llm": 5e-4}}}
    was = load_config(REPO_ROOT / "params.yaml").stages[STAGE].lr["llm"]
    with pytest.raises(CheckpointMismatchError, match=re.escape(f"stage.lr.llm: {was!r} -> 0.0005")):
        train_stage(tiny_cfg(tmp_path / "b", data, stages=changed), STAGE, progress=False)

    resumed = train_stage(cfg, STAGE, progress=False)
    assert resumed["steps"] == full["steps"] == 5 and (stage_dir / "model" / "config.json").exists()
    assert abs(resumed["train_loss"] - full["train_loss"]) < 1e-6
    assert abs(resumed["val_loss_end"] - full["val_loss_end"]) < 1e-6
    assert resumed["val_loss_start"] == full["val_loss_start"]      # carried over from the killed run
    a, b = dict(full["model"].named_parameters()), dict(resumed["model"].named_parameters())
    worst = max(float((a[n] - b[n]).detach().abs().max()) for n in a)
    assert worst < 1e-6, f"resumed weights differ from the uninterrupted run by {worst}"
    # the resumed run continued the dvclive history from step 2 (the killed run's step 3 is dropped)
    loss_tsv = tmp_path / "b" / "logs" / STAGE / "plots" / "metrics" / "train" / "loss.tsv"
    rows = loss_tsv.read_text().strip().splitlines()[1:]
    assert [int(r.split("\t")[0]) for r in rows] == [1, 2, 3, 4, 5]

    # rerunning the finished stage trains nothing and keeps the throughput the run measured
    again = train_stage(cfg, STAGE, progress=False)
    assert again["steps"] == 5 and again["tokens_per_s"] == resumed["tokens_per_s"] > 0

    # a finished stage under a changed config is a new experiment: it trains anew from step 0
    fresh = train_stage(tiny_cfg(tmp_path / "b", data, stages=changed), STAGE, progress=False)
    assert fresh["steps"] == 5 and "val_loss_start" in fresh and fresh["train_loss"] != resumed["train_loss"]


def test_interrupted_write_leaves_previous_checkpoint(tmp_path):
    final = tmp_path / "model"
    with atomic_dir(final) as tmp:
        (tmp / "weights").write_text("v1")
    with pytest.raises(Killed):
        with atomic_dir(final) as tmp:
            (tmp / "weights").write_text("half-written")
            raise Killed
    assert (final / "weights").read_text() == "v1"
    # a kill between the two renames of a swap: the next write (or reader) restores the old directory
    final.rename(tmp_path / ".model.old")
    with atomic_dir(final) as tmp:
        assert (final / "weights").read_text() == "v1"
        (tmp / "weights").write_text("v2")
    assert (final / "weights").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_state_from_other_inputs_is_stale(tmp_path, data):
    """DVC reruns a stage when its init checkpoint changed; the finished state left from before (`persist`)
    must not be re-exported as the new result."""
    child = {"init_from": "0_text", "steps": 3}
    cfg = tiny_cfg(tmp_path, data, stages={"0_text": {"mixture": {"text_lm": 1.0, "text_instruct": 0.0}}, STAGE: {**OVERRIDE[STAGE], **child}})
    train_stage(cfg, "0_text", progress=False)
    first = train_stage(cfg, STAGE, progress=False)
    again = train_stage(cfg, STAGE, progress=False)              # same inputs: nothing to train
    assert again["train_loss"] == first["train_loss"] and again["val_loss_start"] == first["val_loss_start"]
    # the parent is retrained differently (same config here, other weights): the child trains anew from them
    parent = tmp_path / "checkpoints" / "0_text" / "model" / "model.safetensors"
    weights = load_file(parent)
    save_file({k: v * 0.5 if v.is_floating_point() else v for k, v in weights.items()}, parent,
              metadata={"format": "pt"})
    anew = train_stage(cfg, STAGE, progress=False)
    assert anew["val_loss_start"] != first["val_loss_start"]
    a, b = dict(first["model"].named_parameters()), dict(anew["model"].named_parameters())
    assert any(not torch.equal(a[n], b[n]) for n in a)
