"""Checkpoints that survive faults: a resumable state whose files were damaged (truncated weights, a file
missing, altered bytes, an unreadable manifest) is reported in one log line naming the file and skipped. The
run resumes from the newest intact state and ends with exactly the weights of an uninterrupted run; with no
intact state it says so and trains from the start. States written before checksums existed still resume."""
import logging
import re

import pytest
import torch
from safetensors.torch import load_file
from test_train_resume import OVERRIDE, STAGE, Killed, _kill_after
from torch import nn
from train_fixtures import make_tiny_data, tiny_cfg

from omni_core.config import REPO_ROOT, ConfigError, load_config
from omni_core.train.loop import train_stage
from omni_core.train.run_state import (
    MANIFEST_FILE,
    StateDamagedError,
    TrainerState,
    load_state,
    save_state,
    state_dirs,
    verify_state,
)

RUN_STATE_LOG = "omni_core.train.run_state"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tiny_data(tmp_path_factory.mktemp("damaged") / "data", n_train=6, n_val=2,
                          tasks=("image_caption", "asr", "text_lm"))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data):
    """(a) The stage trained to its 5 steps in one go: its exported weights, the reference below."""
    root = tmp_path_factory.mktemp("uninterrupted")
    train_stage(tiny_cfg(root, data, stages=OVERRIDE), STAGE, progress=False)
    stage_dir = root / "checkpoints" / STAGE
    # train.keep_states (default 2): the last periodic state and the final one
    assert [d.name for d in state_dirs(stage_dir)] == ["step_000005", "step_000004"]
    assert (stage_dir / "state" / "latest").read_text() == "step_000005"
    return load_file(stage_dir / "model" / "model.safetensors")


def _killed_run(tmp_path, data):
    """(b) The same stage killed after its 5th optimizer step, before the final save: states at steps 2 and 4."""
    cfg = tiny_cfg(tmp_path, data, stages=OVERRIDE)
    with pytest.raises(Killed):
        train_stage(cfg, STAGE, progress=False, on_step=_kill_after(5))
    stage_dir = tmp_path / "checkpoints" / STAGE
    assert [d.name for d in state_dirs(stage_dir)] == ["step_000004", "step_000002"]
    assert not (stage_dir / "model").exists()
    return cfg, stage_dir


def _truncate(path):
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.truncate(size // 2)


def _flip_byte(path):
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


def _assert_identical(reference, stage_dir):
    exported = load_file(stage_dir / "model" / "model.safetensors")
    assert exported.keys() == reference.keys()
    differ = [k for k in reference if not torch.equal(reference[k], exported[k])]
    assert not differ, f"exported weights differ from the uninterrupted run: {differ[:5]}"


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.name == RUN_STATE_LOG and r.levelno == logging.WARNING]


def test_damaged_state_resumes_from_previous_good_state(tmp_path, data, uninterrupted, caplog):
    cfg, stage_dir = _killed_run(tmp_path, data)
    _truncate(stage_dir / "state" / "step_000004" / "model.safetensors")
    caplog.clear()
    caplog.set_level(logging.INFO)
    resumed = train_stage(cfg, STAGE, progress=False)

    [damaged] = _warnings(caplog)
    assert "step_000004" in damaged and "model.safetensors: truncated" in damaged and "\n" not in damaged
    assert any(re.search(r"resuming .* from .*step_000002 \(step 2\)", r.getMessage()) for r in caplog.records)
    assert resumed["steps"] == 5
    _assert_identical(uninterrupted, stage_dir)
    # the damaged state was replaced by the retrained one; the pointer names the newest
    assert [d.name for d in state_dirs(stage_dir)] == ["step_000005", "step_000004"]
    assert verify_state(stage_dir / "state" / "step_000004") is None
    assert (stage_dir / "state" / "latest").read_text() == "step_000005"


def test_damaged_state_everywhere_starts_fresh(tmp_path, data, uninterrupted, caplog):
    cfg, stage_dir = _killed_run(tmp_path, data)
    (stage_dir / "state" / "step_000004" / "optimizer.pt").unlink()
    _flip_byte(stage_dir / "state" / "step_000002" / "model.safetensors")
    caplog.clear()
    caplog.set_level(logging.INFO)
    fresh = train_stage(cfg, STAGE, progress=False)

    newer, older, verdict = _warnings(caplog)
    assert "step_000004" in newer and "optimizer.pt: missing" in newer
    assert "step_000002" in older and "model.safetensors: sha256" in older
    assert "no intact state of stage" in verdict and "training it from the start" in verdict and "\n" not in verdict
    assert not any("resuming" in r.getMessage() for r in caplog.records)
    assert fresh["steps"] == 5 and "val_loss_start" in fresh          # measured again: a run from step 0
    _assert_identical(uninterrupted, stage_dir)


def test_damaged_state_without_checksums_still_resumes(tmp_path, data, uninterrupted, caplog):
    """States written before checksums existed are unverified but tried: an intact one resumes, one whose
    weights cannot be read falls back like any damaged state."""
    cfg, stage_dir = _killed_run(tmp_path, data)
    for d in state_dirs(stage_dir):
        (d / MANIFEST_FILE).unlink()
    _truncate(stage_dir / "state" / "step_000004" / "model.safetensors")
    caplog.clear()
    caplog.set_level(logging.INFO)
    resumed = train_stage(cfg, STAGE, progress=False)

    [damaged] = _warnings(caplog)
    assert "step_000004" in damaged and "model.safetensors: unreadable" in damaged
    assert any("(step 2)" in r.getMessage() for r in caplog.records if "resuming" in r.getMessage())
    assert resumed["steps"] == 5
    _assert_identical(uninterrupted, stage_dir)


# ------------------------------------------------------------------------------------------ unit tests
def _save(root, step=1, keep=2):
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    state = TrainerState(stage="s", step=step, samples_seen=step, config_hash="h", world_size=1)
    return save_state(root, state, model=model, optimizer=optimizer, scheduler=scheduler, keep=keep)


def _fresh_objects():
    model = nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    return model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)


@pytest.mark.parametrize("damage, expected", [
    (lambda d: _flip_byte(d / "optimizer.pt"), r"^optimizer\.pt: sha256 \w+ does not match the recorded \w+$"),
    (lambda d: _truncate(d / "model.safetensors"), r"^model\.safetensors: truncated \([\d,]+ of [\d,]+ bytes\)$"),
    (lambda d: (d / "rng_0.pt").unlink(), r"^rng_0\.pt: missing$"),
    (lambda d: (d / MANIFEST_FILE).write_text("{not json"), r"^checksums\.json: unreadable \(JSONDecodeError"),
], ids=["checksum-mismatch", "truncated", "missing", "unreadable-manifest"])
def test_damaged_state_names_the_file(tmp_path, damage, expected):
    state_dir = _save(tmp_path)
    assert verify_state(state_dir) is None
    damage(state_dir)
    assert re.search(expected, verify_state(state_dir))
    model, optimizer, scheduler = _fresh_objects()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    file = expected[1:expected.index(":")].replace("\\", "")
    with pytest.raises(StateDamagedError, match=rf"{re.escape(str(state_dir))} is damaged: {re.escape(file)}.*"
                                                 rf"train\.resume=never"):
        load_state(state_dir, model=model, optimizer=optimizer, scheduler=scheduler)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())     # nothing applied


def test_damaged_state_unreadable_without_checksums_changes_nothing(tmp_path):
    """Loading unverified (a state from before checksums) names the unreadable file, and applies nothing."""
    state_dir = _save(tmp_path)
    (state_dir / MANIFEST_FILE).unlink()
    _truncate(state_dir / "scheduler.pt")
    model, optimizer, scheduler = _fresh_objects()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(StateDamagedError, match=r"scheduler\.pt is unreadable .*train\.resume=never"):
        load_state(state_dir, model=model, optimizer=optimizer, scheduler=scheduler, verify=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not optimizer.state


def test_damaged_state_fallback_depth_is_keep_states(tmp_path):
    for step in (1, 2, 3):
        _save(tmp_path, step=step, keep=2)
    assert [d.name for d in state_dirs(tmp_path)] == ["step_000003", "step_000002"]
    _save(tmp_path, step=4, keep=1)
    assert [d.name for d in state_dirs(tmp_path)] == ["step_000004"]
    assert load_config(REPO_ROOT / "params.yaml").train.keep_states == 2
    with pytest.raises(ConfigError, match="keep_states"):
        load_config(REPO_ROOT / "params.yaml", overrides={"train": {"keep_states": 0}})
