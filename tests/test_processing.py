"""OmniProcessor: chat template labels, placeholder expansion, AnyRes, audio / video decoding, bad media."""
import math

import av
import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from omni_core.config import load_config
from omni_core.model import prepare_tokenizer, train_tokenizer
from omni_core.model.labels import IGNORE_INDEX
from omni_core.model.token_counts import audio_num_tokens, tile_grid
from omni_core.processing import MediaError, OmniProcessor

CORPUS = ["A handwritten digit seven.", "Describe the image.", "What is said in the audio?", "Yes, it is.",
          "The red square is left of the blue circle.", "Transcribe the speech.", "How many digits?"] * 4


@pytest.fixture(scope="module")
def cfg():
    return load_config()


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(CORPUS, 400)


@pytest.fixture(scope="module")
def processor(cfg, tokenizer):
    return OmniProcessor(tokenizer, cfg.model)


def _write_video(path, frames=35, rate=10, size=32, audio=False):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        if audio:
            astream = container.add_stream("aac", rate=16000)
            astream.layout = "mono"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((size, size, 3), i * 7 % 255, np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
        if audio:
            samples = (0.2 * np.sin(np.arange(16000 * frames // rate) / 5)).astype(np.float32)[None]
            for start in range(0, samples.shape[1], 1024):
                af = av.AudioFrame.from_ndarray(samples[:, start:start + 1024], format="flt", layout="mono")
                af.sample_rate = 16000
                af.pts = start
                container.mux(astream.encode(af))
            container.mux(astream.encode())


def _supervised_spans(ids, labels):
    """Contiguous runs of supervised tokens, as token lists."""
    spans, current = [], []
    for i, lab in zip(ids.tolist(), labels.tolist()):
        if lab != IGNORE_INDEX:
            assert lab == i
            current.append(i)
        elif current:
            spans.append(current)
            current = []
    return spans + ([current] if current else [])


# ------------------------------------------------------------------------------------------------ labels
def test_single_turn_labels_are_the_assistant_answer(processor):
    out = processor([{"role": "user", "content": "Describe the image."},
                     {"role": "assistant", "content": "A handwritten digit seven."}])
    spans = _supervised_spans(out["input_ids"], out["labels"])
    assert [processor.tokenizer.decode(s) for s in spans] == ["A handwritten digit seven.<|im_end|>"]
    assert out["attention_mask"].tolist() == [1] * len(out["input_ids"])


def test_multi_turn_labels_follow_the_chat_template(processor):
    messages = [{"role": "system", "content": "Yes, it is."},
                {"role": "user", "content": [{"type": "text", "text": "How many digits?"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "Transcribe the speech."}]},
                {"role": "user", "content": "What is said in the audio?"},
                {"role": "assistant", "content": "Yes, it is."}]
    out = processor(messages)
    rendered = processor.tokenizer.apply_chat_template(messages, tokenize=False)
    assert processor.tokenizer.decode(out["input_ids"]) == rendered          # the template is the only source
    spans = [processor.tokenizer.decode(s) for s in _supervised_spans(out["input_ids"], out["labels"])]
    assert spans == ["Transcribe the speech.<|im_end|>", "Yes, it is.<|im_end|>"]
    # every supervised span sits right after "<|im_start|>assistant\n" in the rendered text
    assert rendered.count("<|im_start|>assistant\n") == 2


def test_conversation_without_assistant_tokens_is_an_error(processor):
    with pytest.raises(ValueError, match="no assistant tokens"):
        processor([{"role": "user", "content": "Describe the image."}])
    prompt = processor([{"role": "user", "content": "Describe the image."}], add_generation_prompt=True)
    assert (prompt["labels"] == IGNORE_INDEX).all()
    assert processor.tokenizer.decode(prompt["input_ids"]).endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize("messages, where", [
    ([], "non-empty list"),
    ([{"role": "robot", "content": "hi"}], r"messages\[0\]"),
    ([{"role": "user", "content": [{"type": "smell", "path": "x"}]}], r"messages\[0\].content\[0\]"),
    ([{"role": "user", "content": [{"type": "text"}]}], "text part needs"),
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": [{"type": "image", "path": "a.png"}]}],
     "text only"),
])
def test_malformed_messages_name_the_offending_part(processor, messages, where):
    with pytest.raises(ValueError, match=where):
        processor(messages)


def test_literal_special_tokens_in_text_are_rejected(processor):
    with pytest.raises(ValueError, match="literal"):
        processor([{"role": "user", "content": "look <|image_pad|>"}, {"role": "assistant", "content": "no"}])


# ------------------------------------------------------------------------------------------ tokenizer
def test_train_tokenizer_is_deterministic_and_has_the_special_tokens(tokenizer):
    again = train_tokenizer(CORPUS, 400)
    assert again.get_vocab() == tokenizer.get_vocab() and len(tokenizer) <= 400     # small corpus: fewer merges
    import pydoc_data.topics
    texts = list(pydoc_data.topics.topics.values())[:6]
    assert len(train_tokenizer(texts, 600)) == 600 and train_tokenizer(texts, 600).get_vocab() == \
        train_tokenizer(list(texts), 600).get_vocab()
    for token in ["<|im_start|>", "<|im_end|>", "<|image_start|>", "<|image_pad|>", "<|audio_end|>", "<|video_pad|>"]:
        assert len(tokenizer.encode(f"a{token}b", add_special_tokens=False)) == 3
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token is not None
    before = len(tokenizer)
    prepare_tokenizer(tokenizer)                                                    # idempotent
    assert len(tokenizer) == before
    assert tokenizer.decode(tokenizer.encode("The red square.", add_special_tokens=False)) == "The red square."


# ------------------------------------------------------------------------------------------- images
def test_image_placeholders_match_anyres_tiles(processor, cfg):
    v = cfg.model.vision
    per_tile = (v.image_size // v.patch_size) ** 2 // v.pool ** 2
    for (h, w), tiles in (((32, 32), 1), ((64, 64), 5), ((32, 96), 4), ((20, 300), 5)):
        img = np.zeros((h, w, 3), np.uint8)
        out = processor([{"role": "user", "content": [{"type": "image", "image": img}]},
                         {"role": "assistant", "content": "ok"}])
        rows, cols = tile_grid(w, h, v.image_size, v.max_tiles)
        assert out["pixel_values"].shape == (tiles, 3, v.image_size, v.image_size)
        assert tiles == (1 if rows * cols == 1 else rows * cols + 1)
        assert int((out["input_ids"] == processor.pad_ids["image"]).sum()) == tiles * per_tile


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "CMYK", "LA"])
def test_any_image_mode_becomes_three_channels(processor, tmp_path, mode):
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 30), dtype=np.uint8)).convert(mode)
    img.save(tmp_path / "x.png" if mode != "CMYK" else tmp_path / "x.jpg")
    name = "x.png" if mode != "CMYK" else "x.jpg"
    out = processor([{"role": "user", "content": [{"type": "image", "path": name}]},
                     {"role": "assistant", "content": "ok"}], base_dir=tmp_path)
    assert out["pixel_values"].shape[1] == 3 and torch.isfinite(out["pixel_values"]).all()


def test_transparent_pixels_become_white(processor):
    rgba = np.zeros((32, 32, 4), np.uint8)                                         # fully transparent black
    out = processor([{"role": "user", "content": [{"type": "image", "image": Image.fromarray(rgba, "RGBA")}]},
                     {"role": "assistant", "content": "ok"}])
    assert torch.allclose(out["pixel_values"], torch.ones(1), atol=1e-6)           # white = +1 after SigLIP norm


def test_huge_image_is_shrunk_to_the_tile_budget(processor, cfg, tmp_path, monkeypatch):
    Image.new("RGB", (6000, 4000), (200, 10, 10)).save(tmp_path / "big.jpg", quality=50)
    Image.new("RGB", (6000, 4000), (200, 10, 10)).save(tmp_path / "big.png")
    for name in ("big.jpg", "big.png"):
        out = processor([{"role": "user", "content": [{"type": "image", "path": name}]},
                         {"role": "assistant", "content": "ok"}], base_dir=tmp_path)
        assert out["pixel_values"].shape[0] <= cfg.model.vision.max_tiles + 1
        assert abs(float(out["pixel_values"][0, 0].mean()) - (200 / 255 - 0.5) / 0.5) < 0.02
    # beyond PIL's decompression-bomb limit: a MediaError naming the file, not a crash
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)
    with pytest.raises(MediaError, match="big.png.*downscale"):
        processor([{"role": "user", "content": [{"type": "image", "path": "big.png"}]},
                   {"role": "assistant", "content": "ok"}], base_dir=tmp_path)


@pytest.mark.parametrize("content, match", [
    (b"", "cannot read the image"), (b"\x89PNG\r\n\x1a\n garbage", "cannot read the image"), (None, "no such media file"),
])
def test_bad_image_files_raise_media_error_naming_the_file(processor, tmp_path, content, match):
    if content is not None:
        (tmp_path / "bad.png").write_bytes(content)
    with pytest.raises(MediaError, match=match) as err:
        processor([{"role": "user", "content": [{"type": "image", "path": "bad.png"}]},
                   {"role": "assistant", "content": "ok"}], base_dir=tmp_path)
    assert "bad.png" in str(err.value)


def test_media_paths_cannot_leave_the_base_dir(processor, tmp_path):
    (tmp_path / "inner").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "outside.png")
    with pytest.raises(MediaError, match="must stay inside"):
        processor([{"role": "user", "content": [{"type": "image", "path": "../outside.png"}]},
                   {"role": "assistant", "content": "ok"}], base_dir=tmp_path / "inner")


# -------------------------------------------------------------------------------------------- audio
def _audio_msg(part):
    return [{"role": "user", "content": [part]}, {"role": "assistant", "content": "ok"}]


def test_audio_longer_than_one_window_gets_several_windows(processor, cfg, tmp_path):
    a = cfg.model.audio
    seconds = 2.5 * a.window_seconds
    sr = 8000                                                                       # resampled to 16 kHz
    sf.write(tmp_path / "long.wav", np.random.default_rng(0).normal(0, 0.1, int(sr * seconds)).astype(np.float32), sr)
    out = processor(_audio_msg({"type": "audio", "path": "long.wav"}), base_dir=tmp_path)
    assert out["audio_features"].shape == (3, a.num_mel_bins, int(a.window_seconds * 100))
    assert out["audio_window_counts"].tolist() == [3]
    tokens = math.ceil(seconds * 50 / a.downsample)
    assert out["audio_token_counts"].tolist() == [tokens] == [audio_num_tokens(int(16000 * seconds), a.downsample)]
    assert int((out["input_ids"] == processor.pad_ids["audio"]).sum()) == tokens


def test_silent_and_stereo_audio_are_fine(processor, tmp_path):
    sf.write(tmp_path / "silence.wav", np.zeros((16000, 2), np.float32), 16000)
    out = processor(_audio_msg({"type": "audio", "path": "silence.wav"}), base_dir=tmp_path)
    assert torch.isfinite(out["audio_features"]).all() and out["audio_token_counts"].item() == math.ceil(50 / processor.model_cfg.audio.downsample)


def test_empty_corrupt_and_missing_audio_raise_media_error(processor, tmp_path):
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x00\x00garbage")
    for name, match in (("empty.wav", "empty"), ("corrupt.wav", "cannot read the audio"), ("nope.wav", "no such")):
        with pytest.raises(MediaError, match=match) as err:
            processor(_audio_msg({"type": "audio", "path": name}), base_dir=tmp_path)
        assert name in str(err.value)
    with pytest.raises(MediaError, match="empty"):
        processor(_audio_msg({"type": "audio", "array": np.zeros(0, np.float32), "sampling_rate": 16000}))


def test_audio_track_of_a_video_file_is_read_with_pyav(processor, tmp_path):
    _write_video(tmp_path / "clip.mp4", frames=20, rate=10, audio=True)
    out = processor([{"role": "user", "content": [{"type": "video", "path": "clip.mp4"},
                                                  {"type": "audio", "path": "clip.mp4"}]},
                     {"role": "assistant", "content": "ok"}], base_dir=tmp_path)
    assert out["video_values"].shape[0] == 2
    n = processor.model_cfg.audio.downsample
    assert abs(out["audio_token_counts"].item() - math.ceil(2.0 * 50 / n)) <= 1      # ~2 s of AAC audio


# -------------------------------------------------------------------------------------------- video
def test_video_is_sampled_at_the_configured_fps(processor, cfg, tmp_path):
    v = cfg.model.vision
    _write_video(tmp_path / "v.mp4", frames=35, rate=10)                            # 3.5 s -> frames at 0,1,2,3 s
    out = processor([{"role": "user", "content": [{"type": "video", "path": "v.mp4"}]},
                     {"role": "assistant", "content": "ok"}], base_dir=tmp_path)
    assert out["video_values"].shape == (4, 3, v.image_size, v.image_size)
    # frame i of the file has value 7*i: the sampled ones are 0, 10, 20, 30
    means = ((out["video_values"].mean(dim=(1, 2, 3)) + 1) / 2 * 255).round().tolist()
    assert all(abs(m - 7 * i) <= 3 for m, i in zip(means, (0, 10, 20, 30)))
    per_frame = (v.image_size // v.patch_size) ** 2 // v.video_pool ** 2                  # one tile per square frame
    assert int((out["input_ids"] == processor.pad_ids["video"]).sum()) == 4 * per_frame


def test_long_video_is_thinned_to_max_frames(processor, cfg, tmp_path):
    _write_video(tmp_path / "long.mp4", frames=120, rate=10)                        # 12 s at 1 fps -> 12 > max
    out = processor([{"role": "user", "content": [{"type": "video", "path": "long.mp4"}]},
                     {"role": "assistant", "content": "ok"}], base_dir=tmp_path)
    assert out["video_values"].shape[0] == cfg.model.vision.video_max_frames


def test_bad_videos_raise_media_error(processor, tmp_path):
    with pytest.raises(MediaError, match="zero frames"):
        processor([{"role": "user", "content": [{"type": "video", "frames": []}]}, {"role": "assistant", "content": "ok"}])
    with pytest.raises(MediaError, match=r"frames\[1\] must be an HxWx3 uint8"):
        processor([{"role": "user", "content": [{"type": "video", "frames": [np.zeros((8, 8, 3), np.uint8),
                                                                              np.zeros((8, 8), np.float32)]}]},
                   {"role": "assistant", "content": "ok"}])
    (tmp_path / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not a real video")
    sf.write(tmp_path / "sound.wav", np.zeros(1600, np.float32), 16000)
    for name, match in (("corrupt.mp4", "cannot decode the video"), ("sound.wav", "no video stream")):
        with pytest.raises(MediaError, match=match) as err:
            processor([{"role": "user", "content": [{"type": "video", "path": name}]},
                       {"role": "assistant", "content": "ok"}], base_dir=tmp_path)
        assert name in str(err.value)


# ------------------------------------------------------------------------------------------ save/load
def test_processor_round_trip_gives_identical_outputs(processor, tmp_path):
    messages = [{"role": "user", "content": [{"type": "image", "image": np.zeros((64, 40, 3), np.uint8)},
                                             {"type": "audio", "array": np.ones(9000, np.float32) * 0.1,
                                              "sampling_rate": 16000},
                                             {"type": "text", "text": "Describe the image."}]},
                {"role": "assistant", "content": "A handwritten digit seven."}]
    processor.save_pretrained(tmp_path)
    again = OmniProcessor.from_pretrained(tmp_path)
    a, b = processor(messages), again(messages)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert again.model_cfg == processor.model_cfg


def test_a_videos_sound_track_reaches_the_audio_encoder(processor, cfg, tmp_path):
    """``"audio": true`` on a video part: the frames go to the video branch and the clip's own sound, decoded
    with PyAV, to the audio encoder, as an audio span right after the frames."""
    from omni_core.model import build_model

    _write_video(tmp_path / "talk.mp4", frames=20, rate=10, audio=True)          # 2 s of picture and sound
    messages = [{"role": "user", "content": [{"type": "video", "path": "talk.mp4", "audio": True},
                                             {"type": "text", "text": "What is said?"}]},
                {"role": "assistant", "content": "ok"}]
    out = processor(messages, base_dir=tmp_path)
    n_audio = int((out["input_ids"] == processor.pad_ids["audio"]).sum())
    assert out["audio_token_counts"].tolist() == [n_audio] and abs(n_audio - 2 * 50 / cfg.model.audio.downsample) <= 2
    ids = out["input_ids"].tolist()
    tok = processor.tokenizer.convert_tokens_to_ids
    assert ids[ids.index(tok("<|video_end|>")) + 1] == tok("<|audio_start|>")     # the sound follows its frames
    model = build_model(cfg, processor.tokenizer).eval()
    seen = []
    model.audio_encoder.register_forward_hook(lambda mod, args, kwargs_out: seen.append(True))
    with torch.no_grad():
        model(**{k: (v[None] if k in ("input_ids", "attention_mask", "labels") else v) for k, v in out.items()})
    assert seen
    without = processor([{"role": "user", "content": [{"type": "video", "path": "talk.mp4"}]},
                         {"role": "assistant", "content": "ok"}], base_dir=tmp_path)
    assert "audio_features" not in without                                      # the flag, not the file, decides
    _write_video(tmp_path / "mute.mp4", frames=10, rate=10)
    with pytest.raises(MediaError, match="no sound track"):
        processor([{"role": "user", "content": [{"type": "video", "path": "mute.mp4", "audio": True}]},
                   {"role": "assistant", "content": "ok"}], base_dir=tmp_path)
