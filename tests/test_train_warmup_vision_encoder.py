"""Stage 0_vision (objectives digit_classification / digit_word_classification / digit_word_shape_classification):
the vision tower learns to tell real MNIST digits (and printed words, and drawn shapes and their colours) apart,
only the tower changes, a kill + resume ends where an uninterrupted run ends, and bad configs are refused."""
import re
from dataclasses import replace

import pytest
import torch
from train_fixtures import make_tiny_data, tiny_cfg

from omni_core.config import REPO_ROOT, ConfigError, load_config
from omni_core.data import sources as S
from omni_core.data.tasks import TASK_WORDS
from omni_core.model import OmniForConditionalGeneration
from omni_core.train.loop import train_stage
from omni_core.train.model_init import init_model
from omni_core.train.run_state import latest_state, read_state
from omni_core.train.warmup.vision_encoder import drawn_shapes, mnist_split, printed_words

STAGE = "0_vision"
OVERRIDE = {STAGE: {"init_from": None, "steps": 100, "batch_size": 32, "warmup_ratio": 0.05, "eval_every": 1000,
                    "objective": "digit_classification"}}


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


def test_printed_words_are_labelled_after_the_digits_and_split_apart():
    train_x, train_y = printed_words(200, 16, "train")
    val_x, val_y = printed_words(50, 16, "val")
    assert train_x.shape == (200, 3, 16, 16) and val_x.shape == (50, 3, 16, 16)
    assert 10 <= int(train_y.min()) and int(train_y.max()) < 10 + len(TASK_WORDS) and len(set(train_y.tolist())) > 30
    assert torch.equal(printed_words(200, 16, "train")[0], train_x)            # a pure function of its arguments
    flat = {bytes(x.numpy().tobytes()) for x in train_x}
    assert not any(bytes(x.numpy().tobytes()) in flat for x in val_x), "a val rendering is also a train rendering"


def test_drawn_shapes_label_every_shape_colour_pair_and_split_apart():
    first = 10 + len(TASK_WORDS)
    train_x, train_y = drawn_shapes(240, 16, "train", first)
    val_x, val_y = drawn_shapes(60, 16, "val", first)
    assert train_x.shape == (240, 3, 16, 16) and val_x.shape == (60, 3, 16, 16)
    assert set(train_y.tolist()) == set(range(first, first + len(S.SHAPES) * len(S.COLOURS)))
    assert torch.equal(drawn_shapes(240, 16, "train", first)[0], train_x)     # a pure function of its arguments
    flat = {bytes(x.numpy().tobytes()) for x in train_x}
    assert not any(bytes(x.numpy().tobytes()) in flat for x in val_x), "a val rendering is also a train rendering"


def test_shape_image_draws_the_asked_shape_in_the_asked_colour():
    import numpy as np

    rng = np.random.default_rng(0)
    for colour, rgb in S.COLOURS.items():
        inked = {}
        for shape in S.SHAPES:
            img = np.asarray(S.shape_image(shape, colour, 64, np.random.default_rng(1)))
            inked[shape] = int((np.abs(img.astype(int) - rgb).sum(-1) < 30).sum())
        # same size and position (same seed): a square covers more than its inscribed circle, which covers
        # more than the triangle inside the same box
        assert inked["square"] > inked["circle"] > inked["triangle"] > 20, (colour, inked)
    sizes = {np.asarray(S.shape_image("circle", "red", 64, rng)).shape for _ in range(20)}
    assert sizes == {(64, 64, 3)}


def _tiny_tower_cfg(tmp_path, data, **stage):
    cfg = tiny_cfg(tmp_path, data, stages={STAGE: {**OVERRIDE[STAGE], **stage}})
    # the tiny profile's tower (the fixtures' 1-layer one learns too slowly to show it in a test's budget)
    return replace(cfg, model=replace(cfg.model, vision=load_config(REPO_ROOT / "params.yaml").model.vision))


def test_tower_learns_digits_and_nothing_else_moves(tmp_path, data):
    cfg = _tiny_tower_cfg(tmp_path, data)
    torch.manual_seed(cfg.train.seed)
    before, _ = init_model(cfg, cfg.stage(STAGE), dtype=torch.float32)
    res = train_stage(cfg, STAGE, progress=False)
    # chance is 10 %; 100 steps of 32 give about 45 % (600 of 64, digits only: about 89 %)
    assert res["val_accuracy_start"] < 20 and res["val_accuracy_end"] > 30, res
    assert res["val_loss_end"] < res["val_loss_start"] - 0.5
    exported = OmniForConditionalGeneration.from_pretrained(tmp_path / "checkpoints" / STAGE / "model")
    old, new = dict(before.named_parameters()), dict(exported.named_parameters())
    changed = {n.split(".")[0] for n in old if not torch.equal(old[n], new[n])}
    assert changed == {"vision_encoder"}, changed
    loss_tsv = tmp_path / "logs" / STAGE / "plots" / "metrics" / "train" / "loss.tsv"
    assert len(loss_tsv.read_text().splitlines()) == 1 + 100
    assert "val_word_accuracy_end" not in res


def test_tower_learns_printed_words_and_shapes_beside_digits(tmp_path, data):
    cfg = _tiny_tower_cfg(tmp_path, data, objective="digit_word_shape_classification", steps=300)
    res = train_stage(cfg, STAGE, progress=False)
    # chance: 1 in 32 words, 1 in 12 shape-colour pairs. 300 steps of 32 read about 16 % of the words, 72 % of
    # the shapes (shape and colour right) and 45 % of the digits (1000 steps of 64 in the pipeline: 75, 97, 84 %)
    assert res["val_word_accuracy_start"] < 8 and res["val_word_accuracy_end"] > 10, res
    assert res["val_shape_accuracy_start"] < 20 and res["val_shape_accuracy_end"] > 50, res
    assert res["val_accuracy_end"] > 30 and res["vocabulary"] == len(TASK_WORDS)


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
    ({"mixture": {"image_caption": 1.0}}, "stages.0_vision.mixture is not used by objective digit_word_shape_classification"),
])
def test_bad_warmup_config_is_refused(stage, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(REPO_ROOT / "params.yaml", overrides={"stages": {STAGE: stage}})
