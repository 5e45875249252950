"""Manifest I/O, path safety, validation of every bad case, the LLaVA importer, Dataset and samplers."""
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from omni_core.config import load_config
from omni_core.data.__main__ import main as cli
from omni_core.data.collate import pad_collate
from omni_core.data.dataset import (
    BadSampleError,
    LengthGroupedSampler,
    MixtureSampler,
    OmniDataset,
    estimate_media_tokens,
)
from omni_core.data.llava import LlavaImportError, convert_record, export_record, import_llava
from omni_core.data.manifest import (
    ManifestError,
    make_sample,
    media,
    read_manifest,
    safe_media_path,
    text,
    write_manifest,
)
from omni_core.data.sources.media import write_mp4, write_png, write_wav
from omni_core.data.validate import validate_manifest


def _media(root: Path) -> None:
    rng = np.random.default_rng(0)
    write_png(root / "media/a.png", rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    write_png(root / "media/b.png", rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    write_wav(root / "media/a.wav", (0.1 * rng.standard_normal(16000)).astype(np.float32), 16000)
    write_mp4(root / "media/a.mp4", rng.integers(0, 255, (3, 32, 32, 3), dtype=np.uint8), 1.0)
    (root / "media/bad.png").write_bytes(b"this is not a png")
    (root / "media/bad.wav").write_bytes(b"RIFF\x00\x00not audio at all")
    (root / "media/bad.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 broken")


def _good(i: int, task: str = "image_vqa", parts=None, answer: str = "red") -> dict:
    parts = parts if parts is not None else [media("image", "media/a.png"), text("What colour?")]
    return make_sample(f"s{i}", task, "train", "test", "CC0-1.0", parts, answer)


GOOD = [
    lambda i: _good(i),
    lambda i: _good(i, "asr", [media("audio", "media/a.wav"), text("Transcribe the audio.")], "hello"),
    lambda i: _good(i, "video_qa", [media("video", "media/a.mp4"), text("Which way?")], "left"),
    lambda i: _good(i, "omni_image_speech", [media("image", "media/b.png"), media("audio", "media/a.wav")], "two"),
    lambda i: make_sample(f"s{i}", "text_lm", "train", "pydoc", "PSF-2.0", [], "Some prose to model."),
]
# (record or raw line, expected words in the reason)
BAD = [
    (lambda: _good(100, parts=[media("image", "media/missing.png"), text("q")]), "missing file"),
    (lambda: _good(101, parts=[media("image", "media/bad.png"), text("q")]), "corrupt image"),
    (lambda: _good(102, "asr", [media("audio", "media/bad.wav"), text("q")]), "corrupt audio"),
    (lambda: _good(103, "video_qa", [media("video", "media/bad.mp4"), text("q")]), "corrupt video"),
    (lambda: _good(104, parts=[media("image", "media/a.png"), text("<image>\nWhat colour?")]), "placeholder/media count"),
    (lambda: _good(105, answer="  "), "empty answer"),
    (lambda: _good(106, task="image_vqaa"), "unknown task 'image_vqaa' (did you mean 'image_vqa'?)"),
    (lambda: _good(0), "duplicate id 's0'"),
    (lambda: '{"id": "s108", "task": ', "not valid JSON"),
    (lambda: _good(109, parts=[media("image", "../outside.png"), text("q")]), "leaves the manifest's folder"),
    (lambda: _good(110, parts=[media("image", "/etc/passwd"), text("q")]), "is absolute"),
]


@pytest.fixture()
def manifest(tmp_path):
    """A manifest of good records followed by one bad record per case; returns (path, bad line numbers)."""
    _media(tmp_path)
    lines = [json.dumps(g(i)) for i, g in enumerate(GOOD)]
    bad_lines = {}
    for make, reason in BAD:
        rec = make()
        lines.append(rec if isinstance(rec, str) else json.dumps(rec))
        bad_lines[len(lines)] = reason
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path, bad_lines


@pytest.fixture(scope="module")
def processor():
    from omni_core.model import train_tokenizer
    from omni_core.processing import OmniProcessor
    corpus = ["What colour? red blue", "Transcribe the audio. hello", "Which way? left right", "two Some prose."] * 5
    return OmniProcessor(train_tokenizer(corpus, 400), load_config().model)


def test_write_read_round_trip_is_byte_stable(tmp_path):
    recs = [g(i) for i, g in enumerate(GOOD)]
    write_manifest(tmp_path / "a.jsonl", recs)
    assert read_manifest(tmp_path / "a.jsonl") == recs
    write_manifest(tmp_path / "b.jsonl", read_manifest(tmp_path / "a.jsonl"))
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()


def test_media_paths_stay_inside_the_manifest_folder(tmp_path):
    (tmp_path / "m").mkdir()
    assert safe_media_path(tmp_path / "m", "media/x.png") == (tmp_path / "m/media/x.png").resolve()
    for bad in ("../x.png", "/abs/x.png", "media/../../x.png", "C:\\x.png", ""):
        with pytest.raises(ManifestError):
            safe_media_path(tmp_path / "m", bad)
    os.symlink(tmp_path, tmp_path / "m" / "escape")            # a link out of the folder is refused too
    with pytest.raises(ManifestError, match="leaves"):
        safe_media_path(tmp_path / "m", "escape/x.png")


def test_validation_reports_each_bad_case_with_file_and_line(manifest):
    path, bad_lines = manifest
    problems = validate_manifest(path)
    by_line = {}
    for p in problems:
        by_line.setdefault(p.line, []).append(p.reason)
        assert str(p).startswith(f"{path}:{p.line}: ")
    assert set(by_line) == set(bad_lines), by_line          # good records give no problem
    for line, words in bad_lines.items():
        assert any(words in r for r in by_line[line]), (line, words, by_line[line])


def test_validate_cli_prints_one_line_per_problem_and_fails(manifest, capsys):
    path, bad_lines = manifest
    assert cli(["validate", str(path)]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == len(bad_lines) and all(line.startswith(f"{path}:") for line in out)
    good = path.parent / "good.jsonl"
    write_manifest(good, [g(i) for i, g in enumerate(GOOD)])
    assert cli(["validate", str(good)]) == 0


def test_deep_validation_runs_the_processor(tmp_path, processor):
    _media(tmp_path)
    path = tmp_path / "m.jsonl"
    write_manifest(path, [g(i) for i, g in enumerate(GOOD)] + [_good(9, answer="<|image_pad|>")])
    problems = validate_manifest(path, processor=processor)
    assert [p.line for p in problems] == [6] and "placeholder" in problems[0].reason


def test_dataset_error_mode_names_file_and_line(manifest, processor):
    path, bad_lines = manifest
    with pytest.raises(BadSampleError, match=rf"{path}:{min(bad_lines)}: .*missing file"):
        OmniDataset(path, processor)


def test_dataset_skip_mode_counts_and_reports(manifest, processor, caplog):
    path, bad_lines = manifest
    ds = OmniDataset(path, processor, on_bad_sample="skip")
    assert len(ds) == len(GOOD) and len(ds.skipped) == len(bad_lines)
    assert sorted(p.line for p in ds.skipped) == sorted(bad_lines)
    assert "skipped 11 bad sample(s)" in caplog.text
    item = ds[3]
    assert {"input_ids", "labels", "pixel_values", "audio_features"} <= set(item)


def test_dataset_decodes_lazily_and_errors_name_the_line(tmp_path, processor):
    _media(tmp_path)
    path = tmp_path / "m.jsonl"
    write_manifest(path, [_good(0), _good(1, parts=[media("image", "media/bad.png"), text("q")])])
    ds = OmniDataset(path, processor)          # error mode does not decode at build time
    assert ds[0]["pixel_values"].shape[1:] == (3, 32, 32)
    with pytest.raises(BadSampleError, match=rf"{path}:2: s1: .*bad.png"):
        ds[1]


def test_dataloader_workers_give_the_same_batches(tmp_path, processor):
    _media(tmp_path)
    path = tmp_path / "m.jsonl"
    write_manifest(path, [g(i) for i, g in enumerate(GOOD)] * 1 + [g(i + 10) for i, g in enumerate(GOOD)])
    ds = OmniDataset(path, processor)
    sampler = MixtureSampler(ds.task_indices, {t: 1.0 for t in ds.task_indices}, seed=3, num_samples=8)
    batches = []
    for workers in (0, 2):
        dl = torch.utils.data.DataLoader(ds, batch_size=4, sampler=sampler, collate_fn=pad_collate, num_workers=workers)
        batches.append([b["input_ids"] for b in dl])
    assert all(torch.equal(a, b) for a, b in zip(*batches)) and len(batches[0]) == 2


def test_mixture_sampler_is_deterministic_resumable_and_weighted():
    tasks = {"a": list(range(0, 10)), "b": list(range(10, 13)), "c": list(range(13, 40))}
    weights = {"a": 3.0, "b": 1.0, "c": 0.0}
    full = list(MixtureSampler(tasks, weights, seed=1, num_samples=3000, block=64))
    assert full == list(MixtureSampler(tasks, weights, seed=1, num_samples=3000, block=64))
    assert full != list(MixtureSampler(tasks, weights, seed=2, num_samples=3000, block=64))
    for start in (1, 63, 64, 1000):
        assert list(MixtureSampler(tasks, weights, seed=1, start=start, num_samples=3000 - start, block=64)) == full[start:]
    counts = Counter("a" if i < 10 else "b" if i < 13 else "c" for i in full)
    assert counts["c"] == 0 and abs(counts["a"] / 3000 - 0.75) < 0.03
    a_draws = [i for i in full if i < 10]
    assert all(sorted(a_draws[k:k + 10]) == list(range(10)) for k in range(0, 100, 10))   # epochs without repeats
    with pytest.raises(ValueError, match="no samples: d"):
        MixtureSampler(tasks, {"d": 1.0}, seed=0)


def test_media_token_estimate_is_the_processors_count(tmp_path, processor):
    """Length grouping's estimate of a media part (file headers + token_counts, nothing decoded) equals the
    tokens the processor gives it: images of several shapes, also as one-frame videos, WAV audio, videos at
    several frame rates and lengths (below and above video_max_frames), and a video's sound track."""
    from omni_core.model.configuration import MEDIA, SPECIAL_TOKENS
    from omni_core.processing import OmniProcessor

    rng = np.random.default_rng(0)
    parts = []
    for name, (h, w) in {"square": (32, 32), "wide": (40, 130), "tall": (150, 45), "huge": (300, 500)}.items():
        write_png(tmp_path / f"{name}.png", rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        parts.append(media("image", f"{name}.png"))
    for seconds in (0.4, 2.3, 3.0):
        write_wav(tmp_path / f"{seconds}.wav", (0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32), 16000)
        parts.append(media("audio", f"{seconds}.wav"))
    for frames, fps, sound in ((3, 1.0, False), (7, 2.0, True), (35, 10.0, False), (12, 1.0, True)):
        clip = rng.integers(0, 255, (frames, 32, 48, 3), dtype=np.uint8)
        audio = (0.1 * rng.standard_normal(int(16000 * frames / fps))).astype(np.float32) if sound else None
        write_mp4(tmp_path / f"{frames}_{fps}.mp4", clip, fps, audio)
        parts.append(media("video", f"{frames}_{fps}.mp4", audio=sound))
    media_ids = {processor.tokenizer.convert_tokens_to_ids(t) for m in MEDIA for t in SPECIAL_TOKENS[m].values()}
    as_video = OmniProcessor(processor.tokenizer, processor.model_cfg, images_as_video=True)
    cases = [(proc, part) for part in parts for proc in ([processor, as_video] if part["type"] == "image" else [processor])]
    for proc, part in cases:
        messages = [{"role": "user", "content": [part, text("Describe it.")]}, {"role": "assistant", "content": [text("red")]}]
        ids = proc(messages, base_dir=tmp_path)["input_ids"].tolist()
        real = sum(i in media_ids for i in ids)
        assert estimate_media_tokens(part, tmp_path, proc) == real, (part, proc.images_as_video)
    assert estimate_media_tokens(parts[0], tmp_path) == 32         # no processor, no model config: a flat guess


def test_length_grouped_sampler_sorts_within_chunks():
    lengths = list(np.random.default_rng(0).integers(1, 100, 50))
    out = list(LengthGroupedSampler(range(50), lengths, batch_size=4, group=3))
    assert sorted(out) == list(range(50))
    for k in range(0, 48, 12):
        chunk = [lengths[i] for i in out[k:k + 12]]
        assert chunk == sorted(chunk, reverse=True)


# Records in the formats users already have: the first record of LLaVA-Instruct-150K and of LLaVA-Pretrain
# (558k), and the same shape with several images, a video and audio only (LLaVA-NeXT / LLaVA-Video style).
LLAVA = [
    {"id": "000000033471", "image": "000000033471.jpg", "conversations": [
        {"from": "human", "value": "<image>\nWhat are the colors of the bus in the image?"},
        {"from": "gpt", "value": "The bus in the image is white and red."},
        {"from": "human", "value": "What feature can be seen on the back of the bus?"},
        {"from": "gpt", "value": "The back of the bus features an advertisement."}]},
    {"id": "004539375", "image": "00453/004539375.jpg", "conversations": [
        {"from": "human", "value": "Render a clear and concise summary of the photo.\n<image>"},
        {"from": "gpt", "value": "select luxury furniture 3 - inch gel memory foam mattress topper"}]},
    {"id": "multi-1", "image": ["left.jpg", "right.jpg"], "conversations": [
        {"from": "human", "value": "<image>\n<image>\nWhat is the difference between the two images?"},
        {"from": "gpt", "value": "The second one is brighter."}]},
    {"id": "video-1", "video": "clips/v.mp4", "conversations": [
        {"from": "human", "value": "<video>\nWhat is the digit doing?"}, {"from": "gpt", "value": "It moves left."}]},
    {"id": "audio-1", "audio": "speech/a.wav", "conversations": [
        {"from": "human", "value": "<audio>\nTranscribe the audio."}, {"from": "gpt", "value": "hello world"}]},
    {"id": "text-1", "conversations": [{"from": "human", "value": "Say hi."}, {"from": "gpt", "value": "Hi!"}]},
]


def test_llava_import_round_trips(tmp_path):
    root = tmp_path / "coco"
    rng = np.random.default_rng(0)
    for name in ("000000033471.jpg", "00453/004539375.jpg", "left.jpg", "right.jpg"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        from PIL import Image
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(root / name, format="JPEG")
    write_mp4(root / "clips/v.mp4", rng.integers(0, 255, (2, 32, 32, 3), dtype=np.uint8), 1.0)
    write_wav(root / "speech/a.wav", np.zeros(8000, np.float32), 16000)
    src = tmp_path / "llava.json"
    src.write_text(json.dumps(LLAVA))
    out = tmp_path / "data" / "train.jsonl"
    assert cli(["import-llava", str(src), "--media-root", str(root), "--out", str(out)]) == 0
    recs = read_manifest(out)
    assert [r["task"] for r in recs] == ["image_vqa", "image_vqa", "image_vqa", "video_qa", "spoken_qa", "text_instruct"]
    assert recs[2]["messages"][0]["content"][:2] == [media("image", "media/left.jpg"), media("image", "media/right.jpg")]
    assert recs[1]["messages"][0]["content"] == [text("Render a clear and concise summary of the photo."),
                                                 media("image", "media/00453/004539375.jpg")]
    assert validate_manifest(out) == []
    assert [export_record(r) for r in recs] == LLAVA          # back to the user's format, unchanged


def test_llava_import_errors_and_placeholderless_media():
    rec = {"id": "x", "image": "a.jpg", "conversations": [{"from": "human", "value": "Describe."},
                                                          {"from": "gpt", "value": "A cat."}]}
    s = convert_record(rec, "f.json[0]")
    assert s["messages"][0]["content"][0] == media("image", "media/a.jpg")
    too_many = {**rec, "conversations": [{"from": "human", "value": "<image><image>"}, {"from": "gpt", "value": "a"}]}
    with pytest.raises(LlavaImportError, match=r"f.json\[0\]: more <image> placeholders than image files \(1\)"):
        convert_record(too_many, "f.json[0]")
    with pytest.raises(LlavaImportError, match="conversations"):
        convert_record({"id": "y"}, "f.json[1]")


def test_import_refuses_missing_media(tmp_path):
    src = tmp_path / "l.json"
    src.write_text(json.dumps(LLAVA[:1]))
    with pytest.raises(LlavaImportError, match="does not exist; check --media-root"):
        import_llava(src, tmp_path / "nowhere", tmp_path / "out" / "m.jsonl")


def test_video_audio_flag_is_a_boolean_and_needs_a_sound_track(tmp_path):
    """``"audio": true`` on a video part: the processor decodes the file's own sound track, so validation
    checks that the flag is a boolean on a video, and that the file has a track (cached per file and flag)."""
    _media(tmp_path)
    rng = np.random.default_rng(1)
    write_mp4(tmp_path / "media/sound.mp4", rng.integers(0, 255, (3, 32, 32, 3), dtype=np.uint8), 1.0,
              (0.1 * rng.standard_normal(12000)).astype(np.float32), 16000)
    q = text("What number does the voice say?")
    recs = [_good(0, "video_narration_qa", [media("video", "media/sound.mp4", audio=True), q], "seven"),
            _good(1, "video_qa", [media("video", "media/a.mp4"), text("Which way?")], "left"),
            _good(2, "video_narration_qa", [{**media("video", "media/sound.mp4"), "audio": "yes"}, q], "seven"),
            _good(3, "video_narration_qa", [media("video", "media/a.mp4", audio=True), q], "seven"),
            _good(4, parts=[{**media("image", "media/a.png"), "audio": True}, text("What colour?")])]
    path = tmp_path / "m.jsonl"
    write_manifest(path, recs)
    problems = validate_manifest(path)
    by_line = {p.line: p.reason for p in problems}
    assert sorted(by_line) == [3, 4, 5] and all(str(p).startswith(f"{path}:{p.line}: s") for p in problems)
    assert by_line[3] == "messages[0].content[0]: key 'audio' must be true or false (a JSON boolean), got 'yes'"
    assert by_line[4] == (f"{(tmp_path / 'media/a.mp4').resolve()}: the video has no audio track; drop \"audio\": "
                          f"true or re-encode it with its sound")
    assert by_line[5].startswith("messages[0].content[0]: key 'audio' marks a video's own sound track")
    assert [p.line for p in validate_manifest(path, check_media="exists")] == [3, 5]     # the schema, no decoding
    assert media("video", "v.mp4") == {"type": "video", "path": "v.mp4"}      # no flag unless asked: imports unchanged
    with pytest.raises(ValueError, match="only a video part"):
        media("audio", "a.wav", audio=True)
