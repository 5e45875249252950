"""The loss-based SFT filter (train/loss_filter.py): the band keeps exactly the samples within mean +/- k std of
their own task; scoring gives each sample the loss the model's forward gives it alone; a stage with
`loss_filter_k > 0` trains on the kept samples only, reports them, and a resumed run reuses the kept set."""
import json
import math

import pytest
import torch
from train_fixtures import make_tiny_data, tiny_cfg

from omni_core.config import REPO_ROOT, ConfigError, load_config
from omni_core.train import loss_filter
from omni_core.train.batches import StageBatches
from omni_core.train.loop import train_stage
from omni_core.train.loss_filter import band_filter, filter_stage_data, score_losses
from omni_core.train.model_init import init_model

STAGE = "2_sft"
MIXTURE = {"image_caption": 1.0, "asr": 1.0, "text_instruct": 1.0, "text_lm": 0.5}
OFF = {t: 0.0 for t in load_config(REPO_ROOT / "params.yaml").stages[STAGE].mixture}   # overrides merge into it


def test_band_keeps_exactly_the_samples_inside():
    #           a: mean 1, std 2 -> k=1: [-1, 3], k=2: [-3, 5] (5 on the edge)
    losses = [0.0, 0.0, 0.0, 0.0, 5.0] + [2.0, 1.0, 3.0] + [0.7] * 3 + [1.0, math.nan, 3.0]
    tasks = ["a"] * 5 + ["b"] * 3 + ["flat"] * 3 + ["nan"] * 3
    tasks = tasks[5:] + tasks[:5]            # positions, not task order, come back
    losses = losses[5:] + losses[:5]
    kept, bands = band_filter(losses, tasks, k=1)
    # b: mean 2, std sqrt(2/3) -> only 2; flat: std 0, all kept (0.7 is not exact in binary); nan: 1 and 3 on the edges
    assert [(tasks[i], losses[i]) for i in kept] == [("b", 2.0), ("flat", 0.7), ("flat", 0.7), ("flat", 0.7),
                                                     ("nan", 1.0), ("nan", 3.0)] + [("a", 0.0)] * 4
    assert bands["a"] == {"mean": 1.0, "std": 2.0, "low": -1.0, "high": 3.0}
    assert bands["flat"]["std"] == pytest.approx(0.0, abs=1e-15) and bands["nan"]["mean"] == 2.0
    kept2, bands2 = band_filter(losses, tasks, k=2)
    assert [losses[i] for i in kept2 if tasks[i] == "a"] == [0.0] * 4 + [5.0]       # 5.0 = mean + 2 std
    assert bands2["a"]["high"] == 5.0 and sorted(tasks[i] for i in kept2).count("b") == 3
    # a task whose every loss is NaN keeps nothing and has no band
    assert band_filter([math.nan], ["x"], k=1) == ([], {"x": {"mean": None, "std": None, "low": None, "high": None}})
    with pytest.raises(ValueError, match="k > 0"):
        band_filter([1.0], ["a"], k=0)
    with pytest.raises(ValueError, match="one of each"):
        band_filter([1.0, 2.0], ["a"], k=1)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tiny_data(tmp_path_factory.mktemp("loss_filter") / "data", n_train=6, n_val=2, tasks=tuple(MIXTURE))


def _cfg(tmp_path, data, **stage):
    over = {"init_from": None, "mixture": {**OFF, **MIXTURE}, "steps": 3, "save_every": 2, "batch_size": 4,
            "loss_filter_k": 1.0, **stage}
    return tiny_cfg(tmp_path, data, stages={STAGE: over})


def test_scores_are_each_samples_own_mean_token_loss(tmp_path, data):
    cfg = _cfg(tmp_path, data)
    torch.manual_seed(0)
    model, processor = init_model(cfg, cfg.stage(STAGE), dtype=torch.float32)
    ds = StageBatches(cfg, cfg.stage(STAGE), processor, 0, 1, 4).train_set
    idx = [0, 7, 13, 20, 23]                      # media and text samples, batched together and padded
    scores = score_losses(model, ds, idx, batch_size=3, device=torch.device("cpu"), progress=False)
    model.eval()
    with torch.no_grad():
        alone = [float(model(**{k: v.unsqueeze(0) if k in ("input_ids", "labels") else v for k, v in ds[i].items()
                                if k not in ("attention_mask", "position_ids")}).loss) for i in idx]
    assert scores == pytest.approx(alone, rel=1e-4)


def test_stage_trains_on_the_kept_samples_and_resumes_with_them(tmp_path, data, monkeypatch):
    full = train_stage(_cfg(tmp_path / "a", data), STAGE, progress=False)
    report = json.loads((tmp_path / "a" / "logs" / STAGE / "loss_filter.json").read_text())
    assert full["loss_filter"] == {"k": 1.0, "before": 24, "after": report["after"]} and report["after"] < 24
    assert set(report["per_task"]) == set(MIXTURE)
    for r in report["per_task"].values():
        assert r["before"] == 6 and 1 <= r["after"] <= 6 and r["low"] <= r["mean"] <= r["high"]
        assert len(r["removed_examples"]) == r["before"] - r["after"]
        assert all(not r["low"] <= e["loss"] <= r["high"] for e in r["removed_examples"])
    kept = json.loads((tmp_path / "a" / "checkpoints" / STAGE / "state" / "loss_filter_kept.json").read_text())
    assert len(kept["kept"]) == report["after"]

    # killed after step 2 (saved there), resumed: no second scoring, the same kept set, the same end
    cfg = _cfg(tmp_path / "b", data)

    def kill(step, metrics):
        if step == 2:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train_stage(cfg, STAGE, progress=False, on_step=kill)
    monkeypatch.setattr(loss_filter, "score_losses", lambda *a, **k: pytest.fail("a resumed run scores again"))
    resumed = train_stage(cfg, STAGE, progress=False)
    kept_b = json.loads((tmp_path / "b" / "checkpoints" / STAGE / "state" / "loss_filter_kept.json").read_text())
    assert kept_b == kept and resumed["steps"] == 3
    assert resumed["train_loss"] == pytest.approx(full["train_loss"], abs=1e-6)

    # the sample stream draws from the kept samples only
    batches = StageBatches(cfg, cfg.stage(STAGE), init_model(cfg, cfg.stage(STAGE))[1], 0, 1, 4)
    filter_stage_data(cfg, cfg.stage(STAGE), batches, torch.nn.Identity(), torch.device("cpu"), resumed=True)
    ids = {batches.train_set.records[i]["id"] for s in range(20) for i in batches.global_batch(s)}
    assert ids <= set(kept["kept"]) and len(ids) > len(MIXTURE)


def test_a_k_that_empties_a_task_is_refused(tmp_path, data, monkeypatch):
    cfg = _cfg(tmp_path, data, loss_filter_k=0.01)
    monkeypatch.setattr(loss_filter, "score_losses", lambda model, ds, order, **kw: [float(j % 2) for j in range(len(order))])
    batches = StageBatches(cfg, cfg.stage(STAGE), init_model(cfg, cfg.stage(STAGE))[1], 0, 1, 4)
    with pytest.raises(ConfigError, match=r"stages\.2_sft\.loss_filter_k = 0.01 removes every sample of"):
        filter_stage_data(cfg, cfg.stage(STAGE), batches, torch.nn.Identity(), torch.device("cpu"), resumed=False)
