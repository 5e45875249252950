"""Open-vocabulary speech (asr_open) and the held-out voice (asr_heldout_voice): the small profile's speech data.

Each split owns its sentences (split by fortune, as text_lm's prose is), no training sample of any task is
spoken by a held-out voice, and the same params give the same files."""
import hashlib
import json

import pytest

from omni_core.config import ConfigError, load_config
from omni_core.data import sources as S
from omni_core.data.manifest import SPLITS, answer_text, media_parts
from omni_core.data.prepare import build_samples, sample_count
from omni_core.data.tasks import BUILDERS, BuildContext

TRAIN_VOICES, HELD_OUT = ["slt", "kal16", "awb"], ["rms"]
COUNTS = {"asr_open": {"train": 40, "val": 6, "test": 12}, "asr_heldout_voice": {"test": 12}}


def _cfg(**data):
    base = {"train_per_task": 4, "val_per_task": 2, "test_per_task": 2, "voices": TRAIN_VOICES,
            "heldout_voices": HELD_OUT, "task_samples": COUNTS}
    return load_config(overrides={"data": {**base, **data}})


def _voices_requested(ctx: BuildContext) -> dict[str, str]:
    """media path -> voice of every utterance queued on ``ctx`` (before ``flush`` writes them)."""
    return {rel: req.voice for rel, req in ctx._speech.items()}


def test_open_speech_splits_share_no_sentence_and_no_fortune_with_training_text(tmp_path):
    cfg = _cfg()
    ctx = BuildContext(cfg.data, tmp_path, 16000, 1)
    words = {split: {answer_text(s) for s in BUILDERS["asr_open"](ctx, split, sample_count(cfg.data, "asr_open", split))}
             for split in SPLITS}
    assert len(words["train"]) == 40 and len(words["test"]) == 12
    for a in SPLITS:
        for b in SPLITS:
            if a < b:
                assert not words[a] & words[b], (a, b)
    # a test sentence's fortune belongs to the test split of text_lm's prose too: never read as training text
    fortune_of = {t: i for i, t in S.fortune_sentences(20, 4)}
    assert all(S.split_of("prose", f"fortune:{fortune_of[t]}") == "test" for t in words["test"])
    # open vocabulary: far more distinct words than the closed asr task's ~40
    assert len({w for t in words["train"] for w in t.split()}) > 150


def test_no_training_sample_of_any_task_is_spoken_by_a_held_out_voice(tmp_path):
    cfg = _cfg()
    ctx = BuildContext(cfg.data, tmp_path, 16000, 1)
    samples = {split: [s for task in BUILDERS for s in BUILDERS[task](ctx, split, sample_count(cfg.data, task, split))]
               for split in ("train", "val")}
    voices = _voices_requested(ctx)
    heard = {voices[p["path"]] for split in samples for s in samples[split] for p in media_parts(s)
             if p["path"] in voices}
    assert heard and heard <= set(TRAIN_VOICES)
    ctx._speech.clear()
    test = BUILDERS["asr_heldout_voice"](ctx, "test", 12)
    assert {_voices_requested(ctx)[media_parts(s)[0]["path"]] for s in test} == set(HELD_OUT)
    # the held-out voice reads asr_open's test sentences: the same text, another voice
    open_test = BUILDERS["asr_open"](ctx, "test", 12)
    assert [answer_text(s) for s in test] == [answer_text(s) for s in open_test]
    assert BUILDERS["asr_heldout_voice"](ctx, "train", 12) == []


def test_open_speech_is_deterministic_and_opt_in(tmp_path):
    cfg = _cfg(task_samples={"asr_open": {"train": 6, "val": 2, "test": 3}, "asr_heldout_voice": {"test": 3}})
    digests = []
    for run in ("a", "b"):
        ctx = BuildContext(cfg.data, tmp_path / run, 16000, 2)
        samples = build_samples(ctx, ("asr_open", "asr_heldout_voice"))
        (ctx.out / "m.jsonl").write_text("\n".join(json.dumps(s) for split in SPLITS for s in samples[split]))
        digests.append({p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(ctx.out.rglob("*"))
                        if p.is_file()})
    assert digests[0] == digests[1] and len(digests[0]) > 6
    tiny = load_config().data               # the tiny profile names neither task: its data stays as it was
    assert sample_count(tiny, "asr_open", "train") == 0 and sample_count(tiny, "asr_heldout_voice", "test") == 0
    assert sample_count(tiny, "asr", "train") == tiny.train_per_task


@pytest.mark.parametrize("data, message", [
    ({"voices": ["slt", "rms"], "heldout_voices": ["rms"]}, r"data.heldout_voices \['rms'\] also in data.voices"),
    ({"heldout_voices": [], "task_samples": {"asr_heldout_voice": {"test": 3}}}, r"data.heldout_voices is empty"),
    ({"task_samples": {"asr_opne": {"train": 3}}}, r"data.task_samples.asr_opne: unknown task \(did you mean 'asr_open'\?\)"),
    ({"task_samples": {"asr_open": {"tran": 3}}}, r"data.task_samples.asr_open.tran: unknown split"),
    ({"task_samples": {"asr_open": {"train": -1}}}, r"data.task_samples.asr_open.train = -1 is out of range"),
])
def test_bad_speech_data_config_names_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides={"data": data})
