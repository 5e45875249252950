"""Every stage of params.yaml, run in order on tiny data for a few steps at its own learning rates,
lowers its own validation loss (val split of its mixture's tasks), and hands its model to the next."""
import json

import pytest
from train_fixtures import make_tiny_data, tiny_cfg

from omni_core.config import REPO_ROOT, load_config
from omni_core.train.loop import train_stage

STAGES = list(load_config(REPO_ROOT / "params.yaml").stages)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stages")
    data = make_tiny_data(tmp / "data", n_train=6, n_val=3)
    cfg = tiny_cfg(tmp, data, steps=4, batch_size=8,
                   stages={name: {"val_samples": 24} for name in STAGES})
    results = {}
    for name in STAGES:
        res = train_stage(cfg, name, progress=False)
        res.pop("model")
        results[name] = res
    return cfg, results


@pytest.mark.parametrize("name", STAGES)
def test_stage_lowers_its_val_loss(chain, name):
    cfg, results = chain
    res = results[name]
    assert res["steps"] == cfg.stage(name).steps
    assert res["val_loss_end"] < res["val_loss_start"], res
    # its output is the HF export the next stage starts from, with provenance
    out = cfg.train.checkpoints_dir + f"/{name}/model"
    info = json.loads(open(out + "/omni_train.json").read())
    assert info["stage"] == name and info["step"] == res["steps"] and info["finished"]
    summary = json.loads(open(f"{cfg.train.log_dir}/{name}/metrics.json").read())
    assert summary["val_loss_end"] == pytest.approx(res["val_loss_end"])


def test_retraining_a_stage_gives_a_byte_identical_export(tmp_path):
    """DVC hashes checkpoints: a stage trained twice with the same params must write the same bytes
    (weights and metadata alike), or every downstream stage would rerun for nothing."""
    data = make_tiny_data(tmp_path / "data", n_train=6, n_val=3)
    exports = []
    for run in ("a", "b"):
        cfg = tiny_cfg(tmp_path / run, data, steps=3, batch_size=4)
        train_stage(cfg, "0_text", progress=False)
        exports.append(tmp_path / run / cfg.train.checkpoints_dir / "0_text" / "model")
    files = sorted(p.relative_to(exports[0]) for p in exports[0].rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(exports[1]) for p in exports[1].rglob("*") if p.is_file())
    for f in files:
        assert (exports[0] / f).read_bytes() == (exports[1] / f).read_bytes(), f


def test_a_disabled_stage_passes_its_start_on(tmp_path):
    """small and full skip the stand-ins: a disabled stage trains nothing, records which checkpoint the next
    stage starts from (with its weights' digest, which DVC hashes), and clears its stale dvclive log."""
    from safetensors.torch import load_file


    data = make_tiny_data(tmp_path / "data", n_train=4, n_val=2)
    cfg = tiny_cfg(tmp_path, data, steps=1, stages={"0_audio": {"enabled": False}})
    assert cfg.starts_from(cfg.stage("1a_image_caption")) == "0_vision"
    stale = tmp_path / "logs" / "0_audio" / "plots" / "metrics" / "train" / "loss.tsv"
    stale.parent.mkdir(parents=True)
    stale.write_text("step\tloss\n0\t1.0\n")
    for name in ("0_text", "0_vision"):
        train_stage(cfg, name, progress=False)
    record = train_stage(cfg, "0_audio", progress=False)
    ckpts = tmp_path / "checkpoints"
    assert sorted(p.name for p in (ckpts / "0_audio" / "model").iterdir()) == ["skipped.json"]
    assert json.loads((ckpts / "0_audio" / "model" / "skipped.json").read_text()) == record
    assert record["next_stage_starts_from"] == "0_vision" and record["init_weights_digest"]
    assert (ckpts / "0_audio" / "state").is_dir() and not stale.exists()
    train_stage(cfg, "1a_image_caption", progress=False)     # starts from 0_vision: its frozen tower is 0_vision's
    before, after = (load_file(ckpts / s / "model" / "model.safetensors") for s in ("0_vision", "1a_image_caption"))
    tower = [k for k in before if k.startswith("vision_encoder.")]
    assert tower and all(before[k].equal(after[k]) for k in tower)


def test_stage_1d_first_step_trains_only_the_video_projector_on_images(chain):
    """The paper's stage 1d begins with the video projector alone learning on image-text pairs: every image
    of the step goes through the video path as a one-frame video, and no other weight moves."""
    from safetensors.torch import load_file

    from omni_core.train.batches import StageBatches
    from omni_core.train.model_init import init_model

    cfg, _ = chain
    ckpts = cfg.train.checkpoints_dir
    before, after = (load_file(f"{ckpts}/{s}/model/model.safetensors") for s in ("1c_image_full", "1d_video_images"))
    assert {k.split(".")[0] for k in before if not before[k].equal(after[k])} == {"video_projector"}
    _, processor = init_model(cfg, cfg.stage("1d_video_images"))
    batches = StageBatches(cfg, cfg.stage("1d_video_images"), processor, rank=0, world_size=1, micro=4)
    assert set(batches.mixture) <= {"image_caption", "image_vqa"}
    batch = next(batches.train_batches())
    assert "video_values" in batch and "pixel_values" not in batch


def test_bf16_mixed_precision_trains_in_fp32_weights_and_is_refused_where_emulated(tmp_path, monkeypatch):
    """train.mixed_precision: bf16 (the small profile on CPU): the same stage under autocast ends near the fp32 run's
    loss with fp32 weights; on a CPU without native bf16 matmuls training stops with the fix."""
    import torch

    from omni_core.config import ConfigError
    from omni_core.train.loop import use_autocast
    from omni_core.train.process import Dist

    data = make_tiny_data(tmp_path / "data", n_train=6, n_val=3)
    losses = {}
    for mp in ("none", "bf16"):
        cfg = tiny_cfg(tmp_path / mp, data, steps=3, batch_size=4, train={"mixed_precision": mp})
        res = train_stage(cfg, "0_text", progress=False)
        assert all(p.dtype == torch.float32 for p in res["model"].parameters())
        losses[mp] = res["val_loss_end"]
    assert losses["bf16"] == pytest.approx(losses["none"], rel=0.02) and losses["bf16"] != losses["none"]
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    with pytest.raises(ConfigError, match="no native bf16 matmuls .* set train.mixed_precision: none"):
        use_autocast(cfg, Dist())
