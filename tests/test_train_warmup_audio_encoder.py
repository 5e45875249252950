"""Stage 0_audio (objective speech_ctc): the audio encoder learns to transcribe held-out clips with a word-CTC
head, only the encoder changes, clips longer than one window are read whole, and bad configs are refused."""
import re

import pytest
import torch
from train_fixtures import make_tiny_data, tiny_cfg

from omni_core.config import REPO_ROOT, ConfigError, load_config
from omni_core.model import OmniForConditionalGeneration
from omni_core.train.loop import train_stage
from omni_core.train.model_init import init_model
from omni_core.train.warmup.audio_encoder import SpeechClips, greedy_decode

STAGE = "0_audio"
OVERRIDE = {STAGE: {"init_from": None, "steps": 60, "batch_size": 8, "warmup_ratio": 0.05, "eval_every": 1000}}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    # asr clips are a low or a high tone, transcribed "low" / "high" (tests/train_fixtures.py)
    return make_tiny_data(tmp_path_factory.mktemp("audio") / "data", n_train=16, n_val=8, tasks=("asr",))


def test_encoder_learns_to_transcribe_and_nothing_else_moves(tmp_path, data):
    cfg = tiny_cfg(tmp_path, data, stages=OVERRIDE)
    torch.manual_seed(cfg.train.seed)
    before, _ = init_model(cfg, cfg.stage(STAGE), dtype=torch.float32)
    res = train_stage(cfg, STAGE, progress=False)
    assert res["val_wer_start"] >= 100 and res["val_wer_end"] < 50, res      # an empty transcript scores 100
    assert res["val_loss_end"] < res["val_loss_start"] and res["vocabulary"] == 2
    exported = OmniForConditionalGeneration.from_pretrained(tmp_path / "checkpoints" / STAGE / "model")
    old, new = dict(before.named_parameters()), dict(exported.named_parameters())
    changed = {n.split(".")[0] for n in old if not torch.equal(old[n], new[n])}
    assert changed == {"audio_encoder"}, changed


def test_long_clips_are_split_into_windows_and_read_whole(data):
    clips = SpeechClips(data / "train.jsonl", num_mel_bins=80, window_seconds=0.25)    # 0.6 s clips: 3 windows
    windows, per_clip, frames = clips.batch([0, 1], torch.device("cpu"))
    assert per_clip == [3, 3] and windows.shape[0] == 6 and frames.tolist() == [30, 30]   # 50 frames/s
    assert clips.texts[0] in ("low", "high")


def test_greedy_decode_merges_repeats_and_drops_blanks():
    path = torch.tensor([0, 1, 1, 0, 1, 2, 2, 0, 2])           # blank=0, 1="high", 2="low"
    log_probs = torch.nn.functional.one_hot(path, 3).float().log().unsqueeze(1)   # (T, B=1, V+1)
    assert greedy_decode(log_probs, torch.tensor([9]), ["high", "low"]) == ["high high low low"]
    assert greedy_decode(log_probs, torch.tensor([3]), ["high", "low"]) == ["high"]


@pytest.mark.parametrize("stage, message", [
    ({"lr": {"audio_encoder": 1e-3, "llm": 1e-3}}, "trains only audio_encoder; set stages.0_audio.lr.llm to 0"),
    ({"lr": {"audio_encoder": 0}}, "stages.0_audio.lr.audio_encoder is 0 or absent"),
    ({"mixture": {"asr": 1.0}}, "stages.0_audio.mixture is not used by objective speech_ctc"),
])
def test_bad_warmup_config_is_refused(stage, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(REPO_ROOT / "params.yaml", overrides={"stages": {STAGE: stage}})


def test_a_manifest_without_speech_is_refused(tmp_path):
    data = make_tiny_data(tmp_path / "data", n_train=2, n_val=1, tasks=("image_caption",))
    with pytest.raises(ValueError, match="no 'asr' samples"):
        SpeechClips(data / "train.jsonl", num_mel_bins=80, window_seconds=1.0)
