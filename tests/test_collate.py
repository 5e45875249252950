"""pad_collate and PackCollator: shapes, label masks, media order, and a packed forward of the tiny model
that equals the unpacked forwards (samples never attend to each other)."""
import numpy as np
import pytest
import torch

from omni_core.config import load_config
from omni_core.data.collate import PackCollator, pack_rows, pad_collate
from omni_core.model.labels import IGNORE_INDEX

CORPUS = ["Describe the image. A red circle at the top left.", "Transcribe the audio. the digit seven moves left",
          "Which way does the digit move? left", "What is 3 plus 4? 7", "Continue the spoken description."] * 4
MEDIA_KEYS = ("pixel_values", "video_values", "audio_features", "audio_window_counts", "audio_token_counts")


def _rgb(h, w, seed):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def _wav(seconds, seed):
    return {"type": "audio", "array": np.random.default_rng(seed).normal(0, 0.1, int(16000 * seconds)).astype(np.float32),
            "sampling_rate": 16000}


def _conversations():
    t = lambda s: {"type": "text", "text": s}  # noqa: E731
    users = [
        [{"type": "image", "image": _rgb(32, 32, 0)}, t("Describe the image.")],
        [_wav(1.2, 1), t("Transcribe the audio.")],
        [t("What is 3 plus 4?")],
        [{"type": "video", "frames": [_rgb(32, 32, i) for i in range(3)]}, t("Which way does the digit move?")],
        [{"type": "image", "image": _rgb(64, 64, 5)}, _wav(0.8, 6), t("Continue the spoken description.")],
        [{"type": "image", "image": _rgb(32, 32, 7)}, t("Describe the image.")],
        [_wav(2.0, 8), t("Transcribe the audio.")],
    ]
    answers = ["A red circle at the top left.", "the digit seven moves left", "7", "left",
               "at the top left and a blue square", "A handwritten digit seven.", "what is three plus four"]
    return [[{"role": "user", "content": u}, {"role": "assistant", "content": [t(a)]}] for u, a in zip(users, answers)]


@pytest.fixture(scope="module")
def setup():
    from omni_core.model import build_model, train_tokenizer
    from omni_core.processing import OmniProcessor
    cfg = load_config()
    proc = OmniProcessor(train_tokenizer(CORPUS, 400), cfg.model)
    torch.manual_seed(0)
    model = build_model(cfg, proc.tokenizer).eval()
    samples = [proc(c) for c in _conversations()]
    return proc, model, samples


def test_pad_collate_pads_right_and_concatenates_media_in_order(setup):
    _, _, samples = setup
    b = pad_collate(samples, pad_token_id=0)
    lengths = [len(s["input_ids"]) for s in samples]
    assert b["input_ids"].shape == (len(samples), max(lengths))
    for i, (s, n) in enumerate(zip(samples, lengths)):
        assert torch.equal(b["input_ids"][i, :n], s["input_ids"]) and torch.equal(b["labels"][i, :n], s["labels"])
        assert (b["labels"][i, n:] == IGNORE_INDEX).all() and (b["attention_mask"][i, n:] == 0).all()
        assert torch.equal(b["position_ids"][i, :n], torch.arange(n))
    for k in MEDIA_KEYS:
        assert torch.equal(b[k], torch.cat([s[k] for s in samples if k in s]))
    left = pad_collate(samples, padding_side="left")
    n0 = lengths[0]
    assert torch.equal(left["input_ids"][0, -n0:], samples[0]["input_ids"]) and left["attention_mask"][0, 0] == (n0 == max(lengths))


def test_pack_rows_fit_and_balance():
    rng = np.random.default_rng(0)
    for _ in range(50):
        lengths = rng.integers(10, 200, rng.integers(1, 40)).tolist()
        rows = pack_rows(lengths, 256)
        assert sorted(i for r in rows for i in r) == list(range(len(lengths)))
        loads = [sum(lengths[i] for i in r) for r in rows]
        assert max(loads) <= 256 and all(r == sorted(r) for r in rows)
    with pytest.raises(ValueError, match="more than seq_len = 64"):
        pack_rows([10, 65], 64)


def test_pack_collator_keeps_every_supervised_token_and_restarts_positions(setup):
    _, _, samples = setup
    b = PackCollator(seq_len=256)(samples)
    assert "attention_mask" not in b and b["input_ids"].shape[0] < len(samples)
    assert int((b["labels"] != IGNORE_INDEX).sum()) == sum(int((s["labels"] != IGNORE_INDEX).sum()) for s in samples)
    rows = pack_rows([len(s["input_ids"]) for s in samples], 256)
    for r, row in enumerate(rows):
        at = 0
        for i in row:
            n = len(samples[i]["input_ids"])
            assert torch.equal(b["input_ids"][r, at:at + n], samples[i]["input_ids"])
            assert torch.equal(b["labels"][r, at:at + n], samples[i]["labels"])
            assert torch.equal(b["position_ids"][r, at:at + n], torch.arange(n))
            at += n
        assert (b["labels"][r, at:] == IGNORE_INDEX).all()
    order = [i for row in rows for i in row]
    for k in MEDIA_KEYS:
        assert torch.equal(b[k], torch.cat([samples[i][k] for i in order if k in samples[i]]))


def test_packed_forward_equals_unpacked_forwards(setup):
    _, model, samples = setup
    packer = PackCollator(seq_len=256)
    b = packer(samples)
    rows = pack_rows([len(s["input_ids"]) for s in samples], 256)
    assert any(len(r) > 1 for r in rows)
    with torch.no_grad():
        inputs = lambda batch: {k: v for k, v in batch.items() if k != "labels"}  # noqa: E731  (all logits)
        packed = model(**inputs(b)).logits
        nll, count = 0.0, 0
        for r, row in enumerate(rows):
            at = 0
            for i in row:
                alone = model(**inputs(pad_collate([samples[i]]))).logits[0]
                n = alone.shape[0]
                torch.testing.assert_close(packed[r, at:at + n], alone, atol=1e-5, rtol=0)
                target = samples[i]["labels"][1:]
                keep = target != IGNORE_INDEX
                nll += torch.nn.functional.cross_entropy(alone[:-1][keep], target[keep], reduction="sum")
                count += int(keep.sum())
                at += n
        # the packed batch's loss is the token-weighted mean over its samples: nothing leaks across them
        torch.testing.assert_close(model(**b).loss, nll / count, atol=1e-5, rtol=1e-5)


def test_packing_beats_padding_on_a_mixed_batch(setup):
    _, _, samples = setup
    lengths = [len(s["input_ids"]) for s in samples]
    packed = PackCollator(seq_len=max(lengths) * 3)(samples)
    padded = pad_collate(samples)
    assert sum(lengths) / packed["input_ids"].numel() > sum(lengths) / padded["input_ids"].numel()
