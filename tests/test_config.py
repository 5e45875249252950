"""The config loader: defaults, profile overlays, and the errors users see for bad params."""
import shutil
from pathlib import Path

import pytest
import yaml

from omni_core.config import MODULES, REPO_ROOT, Config, ConfigError, load_config


@pytest.fixture
def params_dir(tmp_path: Path) -> Path:
    shutil.copy(REPO_ROOT / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(REPO_ROOT / "configs", tmp_path / "configs")
    return tmp_path


def _edit(path: Path, fn) -> None:
    raw = yaml.safe_load(path.read_text())
    fn(raw)
    path.write_text(yaml.safe_dump(raw))


def test_repo_params_load_with_every_stage_of_the_recipe():
    cfg = load_config()
    assert isinstance(cfg, Config) and cfg.profile == "tiny"
    assert list(cfg.stages) == ["0_text", "0_vision", "0_audio", "1a_image_caption", "1b_image_vqa", "1c_image_full",
                                "1d_video_images", "1d_video", "1e_audio", "1f_omni_alignment", "2_sft"]
    for name, st in cfg.stages.items():
        assert set(st.lr) <= set(MODULES), name
        assert st.init_from is None or st.init_from in cfg.stages
    # each branch stage trains its own projector and leaves the other branches' alone (the tiny LM trains
    # along, since it cannot be steered while frozen; configs/full.yaml keeps the paper's frozen LLM)
    assert {m for m, lr in cfg.stage("1d_video").lr.items() if lr > 0} == {"video_projector", "llm"}
    assert {m for m, lr in cfg.stage("1e_audio").lr.items() if lr > 0} == {"audio_projector", "llm"}
    # the encoders train only in their stand-in stages (digits, CTC transcription), then stay frozen as a
    # pretrained SigLIP / Whisper would
    assert [n for n, st in cfg.stages.items() if st.lr.get("vision_encoder", 0) > 0] == ["0_vision"]
    assert [n for n, st in cfg.stages.items() if st.lr.get("audio_encoder", 0) > 0] == ["0_audio"]


def test_defaults_fill_keys_the_file_leaves_out(params_dir):
    _edit(params_dir / "params.yaml", lambda r: r["data"].pop("seed"))
    assert load_config(params_dir / "params.yaml").data.seed == 0


@pytest.mark.parametrize("profile", ["small", "full", "smoke"])
def test_overlay_merges_on_top_of_params(profile):
    base, cfg = load_config(), load_config(profile=profile)
    assert cfg.profile == profile
    if profile == "smoke":
        assert cfg.stage("2_sft").steps < base.stage("2_sft").steps
        assert cfg.model == base.model                       # untouched sections keep params.yaml's values
        assert cfg.stage("2_sft").mixture == base.stage("2_sft").mixture
    else:
        assert cfg.model.llm.path and not cfg.stage("0_text").enabled
        # lr maps merge into params.yaml's: the pretrained LLM must not inherit tiny's llm lr where the paper
        # freezes it (the small profile trains it in 1e: docs/recipe.md, the small profile)
        frozen = ("1a_image_caption", "1b_image_vqa", "1d_video") + (("1e_audio",) if profile == "full" else ())
        assert all(cfg.stage(s).lr["llm"] == 0 for s in frozen)
        assert all(cfg.stage(s).lr.get("llm", 0) <= 1e-4 for s in cfg.stages if cfg.stage(s).enabled)
        assert cfg.stage("0_vision").enabled == (profile == "small")    # full has a pretrained SigLIP
        assert not cfg.stage("0_audio").enabled                          # both have a pretrained Whisper
        first = next(n for n, st in cfg.stages.items() if st.enabled and not n.startswith("0_"))
        assert cfg.starts_from(cfg.stage(first)) == ("0_vision" if profile == "small" else None)   # passed through the skipped
    if profile == "full":                                  # the paper's learning rates
        assert cfg.stage("1a_image_caption").lr["vision_projector"] == pytest.approx(1e-3)
        # stage 1d in two steps: the video projector alone at 4e-6, on images as one-frame videos, then mixed
        for name in ("1d_video_images", "1d_video"):
            assert {m: lr for m, lr in cfg.stage(name).lr.items() if lr > 0} == {"video_projector": pytest.approx(4e-6)}
            assert cfg.stage(name).images_as_video
        assert cfg.stage("1d_video_images").init_video_projector and cfg.stage("1d_video_images").init_from == "1c_image_full"
        assert cfg.stage("1d_video").init_from == "1d_video_images"
        assert cfg.stage("1a_image_caption").init_from is None
        v = cfg.model.vision                               # 182 tokens a tile, 1 fps, at most 48 frames
        assert (v.pool_type, v.pool, v.video_pool, v.video_max_tiles, v.video_fps, v.video_max_frames) == \
            ("paper", 2, 2, 2, 1.0, 48)
        assert cfg.model.trust_remote_code is False        # opt in only for a checkpoint whose code was read


def test_profile_key_in_params_selects_overlay(params_dir):
    _edit(params_dir / "params.yaml", lambda r: r.update(profile="smoke"))
    assert load_config(params_dir / "params.yaml").stage("0_text").steps == 3


def test_unknown_key_names_key_file_and_closest_name(params_dir):
    _edit(params_dir / "params.yaml", lambda r: r["train"].update(sead=3))
    with pytest.raises(ConfigError) as e:
        load_config(params_dir / "params.yaml")
    msg = str(e.value)
    assert "train.sead" in msg and "params.yaml" in msg and "did you mean 'seed'" in msg


def test_unknown_key_in_overlay_names_the_overlay(params_dir):
    (params_dir / "configs" / "smoke.yaml").write_text("data: {train_per_tsk: 3}\n")
    with pytest.raises(ConfigError, match=r"smoke\.yaml.*data\.train_per_tsk.*did you mean 'train_per_task'"):
        load_config(params_dir / "params.yaml", profile="smoke")


@pytest.mark.parametrize("edit, pattern", [
    (lambda r: r["data"].update(train_per_task="many"), r"data\.train_per_task must be int"),
    (lambda r: r["data"].update(train_per_task=0), r"data\.train_per_task = 0 is out of range; allowed \[1, inf\]"),
    (lambda r: r["model"]["audio"].update(window_seconds=45), r"model\.audio\.window_seconds = 45.0 .*\[0.5, 30.0\]"),
    (lambda r: r["model"].update(dtype="float16"), r"model\.dtype = 'float16' is not allowed; choose one of"),
    (lambda r: r["stages"]["1d_video"].update(lr={"video_projectr": 1e-3}), r"stages\.1d_video\.lr\.video_projectr.*did you mean 'video_projector'"),
    (lambda r: r["stages"]["1d_video"].update(lr={"video_projector": -1.0}), r"stages\.1d_video\.lr\.video_projector = -1\.0 is out of range"),
    (lambda r: r["stages"]["1d_video"].update(init_from="1c_image_ful"), r"init_from = '1c_image_ful' is not a stage.*'1c_image_full'"),
    (lambda r: r["stages"]["2_sft"].update(packing="yes"), r"stages\.2_sft\.packing must be bool"),
])
def test_wrong_type_or_range_names_key_and_allowed_values(params_dir, edit, pattern):
    _edit(params_dir / "params.yaml", edit)
    with pytest.raises(ConfigError, match=pattern):
        load_config(params_dir / "params.yaml")


def test_overrides_and_unknown_stage_and_missing_profile(params_dir):
    cfg = load_config(params_dir / "params.yaml", overrides={"stages": {"2_sft": {"steps": 7}}})
    assert cfg.stage("2_sft").steps == 7
    with pytest.raises(ConfigError, match="unknown stage '2_sf'.*did you mean '2_sft'"):
        cfg.stage("2_sf")
    with pytest.raises(ConfigError, match="profile 'huge' needs .*huge.yaml"):
        load_config(params_dir / "params.yaml", profile="huge")


def test_yaml_exponent_strings_are_read_as_floats(params_dir):
    (params_dir / "params.yaml").write_text((params_dir / "params.yaml").read_text().replace("1.0e-3", "1e-3"))
    assert load_config(params_dir / "params.yaml").stage("0_text").lr["llm"] == pytest.approx(1e-3)
