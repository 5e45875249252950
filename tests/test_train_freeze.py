"""Freezing: after one optimizer step of each stage of params.yaml, the modules the stage leaves at lr 0
are bitwise unchanged and every parameter it trains has moved."""
import pytest
import torch
from train_fixtures import make_tiny_data, tiny_cfg

from omni_core.config import REPO_ROOT, load_config
from omni_core.train.freezing import stage_lrs
from omni_core.train.loop import train_stage
from omni_core.train.model_init import init_model

STAGES = list(load_config(REPO_ROOT / "params.yaml").stages)


@pytest.fixture(scope="module")
def one_step_each(tmp_path_factory):
    """Run the whole stage chain for one step; keep (weights before, model after) per stage."""
    tmp = tmp_path_factory.mktemp("freeze")
    data = make_tiny_data(tmp / "data", n_train=4, n_val=2)
    cfg = tiny_cfg(tmp, data, steps=1, batch_size=8)
    out = {}
    for name in STAGES:
        torch.manual_seed(cfg.train.seed)             # train_stage seeds the same way before building
        before, _ = init_model(cfg, cfg.stage(name), dtype=torch.float32)
        snapshot = {n: p.detach().clone() for n, p in before.named_parameters()}
        fixed = {n for n, p in before.named_parameters() if not p.requires_grad}   # e.g. Whisper positions
        result = train_stage(cfg, name, progress=False)
        out[name] = (cfg.stage(name), snapshot, fixed, result["model"])
    return out


@pytest.mark.parametrize("name", STAGES)
def test_one_step_moves_exactly_the_trained_modules(one_step_each, name):
    stage, before, fixed, model = one_step_each[name]
    trained = stage_lrs(stage)
    assert trained, f"stage {name} trains nothing"
    unchanged, moved, checked = [], [], 0
    for module, sub in model.module_groups().items():
        for pname, p in sub.named_parameters():
            full = f"{module}.{pname}"
            same = torch.equal(before[full], p.detach())
            should_train = module in trained and full not in fixed
            if should_train and same:
                unchanged.append(full)
            if not should_train and not same:
                moved.append(full)
            checked += 1
    assert checked == len(before)
    assert not moved, f"{name}: frozen parameters changed: {moved[:5]}"
    assert not unchanged, f"{name}: trainable parameters did not change: {unchanged[:5]}"
