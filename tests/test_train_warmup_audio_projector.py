"""The audio projector's CTC warm-up (stages.<name>.audio_projector_ctc_steps): the projector alone learns
to place each spoken word on the LLM's embedding of it, the stage records it, a resumed stage does not
redo it, and configs that cannot use it are refused."""
import re

import pytest
import torch
from train_fixtures import make_tiny_data, tiny_cfg

from omni_core.config import REPO_ROOT, ConfigError, load_config
from omni_core.train.loop import train_stage
from omni_core.train.model_init import init_model
from omni_core.train.warmup.audio_encoder import SpeechClips
from omni_core.train.warmup.audio_projector import encode_clips, warm_up_audio_projector

STAGE = "1e_audio"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    # asr clips are a low or a high tone, transcribed "low" / "high" (tests/train_fixtures.py)
    return make_tiny_data(tmp_path_factory.mktemp("projector") / "data", n_train=16, n_val=8, tasks=("asr",))


def _cfg(tmp_path, data, **stage):
    """0_audio (the encoder's CTC stand-in, 60 steps) then 1e_audio on the asr clips alone."""
    return tiny_cfg(tmp_path, data, stages={
        "0_audio": {"init_from": None, "steps": 60, "batch_size": 8, "warmup_ratio": 0.05},
        STAGE: {"init_from": "0_audio", **stage,
                "mixture": {"asr": 1.0, "image_caption": 0, "text_lm": 0, "text_instruct": 0}}})


def test_warm_up_reads_the_words_through_the_llm_embeddings_and_moves_only_the_projector(tmp_path, data):
    cfg = _cfg(tmp_path, data, audio_projector_ctc_steps=80, lr={"audio_projector": 1e-2})
    train_stage(cfg, "0_audio", progress=False)          # as in the recipe: the encoder hears the tones first
    torch.manual_seed(0)
    model, processor = init_model(cfg, cfg.stage(STAGE), dtype=torch.float32)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    out = warm_up_audio_projector(cfg, cfg.stage(STAGE), model, processor.tokenizer, torch.device("cpu"))
    assert out["projector_ctc_val_wer_start"] >= 90 and out["projector_ctc_val_wer_end"] < 20, out
    changed = {n.split(".")[0] for n, p in model.named_parameters() if not torch.equal(before[n], p)}
    assert changed == {"audio_projector"}, changed
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags     # the stage's freezing is kept
    # no warm-up gradient is left behind: the stage's first optimizer step would add it to its own
    assert all(p.grad is None for p in model.parameters())


def test_stage_records_the_warm_up_and_a_resumed_stage_skips_it(tmp_path, data):
    cfg = _cfg(tmp_path, data, audio_projector_ctc_steps=5, steps=4, save_every=1)
    train_stage(cfg, "0_audio", progress=False)
    def kill_after_two(step, metrics):
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):                # killed after the warm-up and two saved steps
        train_stage(cfg, STAGE, progress=False, on_step=kill_after_two)
    resumed = train_stage(cfg, STAGE, progress=False)
    assert resumed["steps"] == 4 and "projector_ctc_steps" not in resumed
    fresh_cfg = _cfg(tmp_path / "fresh", data, audio_projector_ctc_steps=5, steps=4)
    train_stage(fresh_cfg, "0_audio", progress=False)
    fresh = train_stage(fresh_cfg, STAGE, progress=False)
    assert fresh["projector_ctc_steps"] == 5 and "projector_ctc_val_wer_end" in fresh


def test_frames_encoded_once_give_the_models_audio_features(tmp_path, data):
    """The warm-up encodes each clip once and draws batches from those frames: the projector must see what the
    model's own audio path (encoder on the batch's windows, then projector) gives it."""
    cfg = _cfg(tmp_path, data)
    torch.manual_seed(0)
    model, _ = init_model(cfg, cfg.stage("0_audio"), dtype=torch.float32)
    a, cpu = cfg.model.audio, torch.device("cpu")
    clips = SpeechClips(data / "train.jsonl", a.num_mel_bins, a.window_seconds)
    encoded = encode_clips(model, clips, cpu, chunk=3)          # chunks unlike any batch below
    for idx in ([5, 0, 5, 2], [1], list(range(len(clips)))):
        windows, per_clip, frames = clips.batch(idx, cpu)
        tokens = torch.tensor([model.audio_projector.num_output_tokens(int(f)) for f in frames])
        with torch.no_grad():
            direct = model.get_audio_features(windows, torch.tensor(per_clip), tokens)
            cached = model.project_audio(torch.cat([encoded[i] for i in idx]), torch.tensor(per_clip), tokens)
        torch.testing.assert_close(cached, direct, rtol=0, atol=1e-6)


@pytest.mark.parametrize("stage, over", [
    ("0_audio", {}),                                                            # a stand-in, not an lm stage
    ("1e_audio", {"lr": {"audio_projector": 0}}),                               # the projector is frozen
])
def test_a_stage_that_cannot_use_the_warm_up_is_refused(stage, over):
    with pytest.raises(ConfigError, match=re.escape(f"stages.{stage}.audio_projector_ctc_steps warms up")):
        load_config(REPO_ROOT / "params.yaml", overrides={"stages": {stage: {"audio_projector_ctc_steps": 5, **over}}})
