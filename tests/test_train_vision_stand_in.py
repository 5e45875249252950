"""Stage 0_vision (objective digit_classification): the vision tower learns to tell real MNIST digits apart,
only the tower changes, a kill + resume ends where an uninterrupted run ends, and bad configs are refused."""
import re
from dataclasses import replace

import pytest
import torch
from train_fixtures import make_tiny_data, tiny_cfg

from omni_core.config import REPO_ROOT, ConfigError, load_config
from omni_core.model import OmniForConditionalGeneration
from omni_core.train.checkpoint import latest_state, read_state
from omni_core.train.loop import train_stage
from omni_core.train.stages import init_model
from omni_core.train.vision_stand_in import mnist_split

STAGE = "0_vision"
OVERRIDE = {STAGE: {"init_from": None, "steps": 100, "batch_size": 32, "warmup_ratio": 0.05, "eval_every": 1000}}


class Killed(RuntimeError):
    pass


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tiny_data(tmp_path_factory.mktemp("vision") / "data", n_train=2, n_val=1, tasks=("image_caption",))


def test_mnist_splits_are_disjoint_and_labelled():
    train_x, train_y = mnist_split("train", 16)
    test_x, test_y = mnist_split("test", 16)
    assert train_x.shape[1:] == (3, 16, 16) and len(train_x) > 3000 and 300 < len(test_x) < 700
    assert set(train_y.tolist()) == set(range(10)) == set(test_y.tolist())
    flat = {bytes(x.numpy().tobytes()) for x in train_x[:2000]}
    assert not any(bytes(x.numpy().tobytes()) in flat for x in test_x), "a test digit is also a train digit"


def test_tower_learns_digits_and_nothing_else_moves(tmp_path, data):
    cfg = tiny_cfg(tmp_path, data, stages=OVERRIDE)
    # the tiny profile's tower (the fixtures' 1-layer one learns too slowly to show it in a test's budget)
    cfg = replace(cfg, model=replace(cfg.model, vision=load_config(REPO_ROOT / "params.yaml").model.vision))
    torch.manual_seed(cfg.train.seed)
    before, _ = init_model(cfg, STAGE, dtype=torch.float32)
    res = train_stage(cfg, STAGE, progress=False)
    # chance is 10 %; 100 steps of 32 give about 45 % (600 of 64 in the pipeline: about 88 %)
    assert res["val_accuracy_start"] < 20 and res["val_accuracy_end"] > 30, res
    assert res["val_loss_end"] < res["val_loss_start"] - 0.5
    exported = OmniForConditionalGeneration.from_pretrained(tmp_path / "checkpoints" / STAGE / "model")
    old, new = dict(before.named_parameters()), dict(exported.named_parameters())
    changed = {n.split(".")[0] for n in old if not torch.equal(old[n], new[n])}
    assert changed == {"vision_encoder"}, changed
    loss_tsv = tmp_path / "logs" / STAGE / "plots" / "metrics" / "train" / "loss.tsv"
    assert len(loss_tsv.read_text().splitlines()) == 1 + 100


def test_killed_and_resumed_equals_uninterrupted(tmp_path, data):
    over = {STAGE: {**OVERRIDE[STAGE], "steps": 6, "save_every": 2, "batch_size": 8}}
    full = train_stage(tiny_cfg(tmp_path / "a", data, stages=over), STAGE, progress=False)

    def kill_after_3(step, metrics):
        if step == 3:
            raise Killed("simulated kill")

    cfg = tiny_cfg(tmp_path / "b", data, stages=over)
    with pytest.raises(Killed):
        train_stage(cfg, STAGE, progress=False, on_step=kill_after_3)
    assert read_state(latest_state(tmp_path / "b" / "checkpoints" / STAGE)).step == 2
    resumed = train_stage(cfg, STAGE, progress=False)
    assert resumed["steps"] == 6 and resumed["val_accuracy_end"] == full["val_accuracy_end"]
    a, b = dict(full["model"].named_parameters()), dict(resumed["model"].named_parameters())
    assert max(float((a[n] - b[n]).detach().abs().max()) for n in a) < 1e-6


@pytest.mark.parametrize("stage, message", [
    ({"lr": {"vision_encoder": 1e-3, "llm": 1e-3}}, "trains only vision_encoder; set stages.0_vision.lr.llm to 0"),
    ({"lr": {"vision_encoder": 0}}, "stages.0_vision.lr.vision_encoder is 0 or absent"),
    ({"mixture": {"image_caption": 1.0}}, "stages.0_vision.mixture is not used by objective digit_classification"),
])
def test_bad_stand_in_config_is_refused(stage, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(REPO_ROOT / "params.yaml", overrides={"stages": {STAGE: stage}})
