"""Data sources mixed by weight (data.sources, stages.<name>.sources) and the lazy manifest index behind them."""
import dataclasses
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from omni_core.config import ConfigError, load_config
from omni_core.data.dataset import BadSampleError, MixtureSampler, OmniDataset, SourceMixture
from omni_core.data.index import ManifestIndex
from omni_core.data.manifest import ManifestError, iter_manifest, make_sample, media, text, write_manifest
from omni_core.data.sources.media import write_png, write_wav
from omni_core.train.batches import StageBatches

STAGE = "0_text"          # mixture {text_lm: 1, text_instruct: 3}


def _text(i: int, task: str, source: str = "test") -> dict:
    if task == "text_lm":
        return make_sample(f"{source}-{i}", task, "train", source, "CC0-1.0", [], f"Prose number {i} ünïcode.")
    return make_sample(f"{source}-{i}", task, "train", source, "CC0-1.0", [text(f"Say {i}.")], f"{i}")


def _manifest(path: Path, n: int, tasks: tuple[str, ...], source: str) -> Path:
    write_manifest(path, [_text(i, tasks[i % len(tasks)], source) for i in range(n)])
    return path


def _cfg(tmp_path: Path, sources: list[dict] | None = None, stage_sources: dict | None = None):
    root = tmp_path / "prepared"
    if not (root / "train.jsonl").exists():
        _manifest(root / "train.jsonl", 300, ("text_lm", "text_instruct"), "prepared")
    over: dict = {"data": {"root": str(root)}}
    if sources is not None:
        over["data"]["sources"] = sources
    if stage_sources is not None:
        over["stages"] = {STAGE: {"sources": stage_sources}}
    return load_config(overrides=over)


def _eager(path: Path, tasks=None) -> tuple[list[dict], list[int]]:
    """What OmniDataset kept before the lazy index: every record of the wanted tasks, in file order."""
    pairs = [(n, r) for n, r in iter_manifest(path) if tasks is None or r["task"] in tasks]
    return [r for _, r in pairs], [n for n, _ in pairs]


# -------------------------------------------------------------------------------------------- lazy index
def test_source_mix_lazy_dataset_yields_the_eager_records(tmp_path):
    rng = np.random.default_rng(0)
    write_png(tmp_path / "media/a.png", rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    write_wav(tmp_path / "media/a.wav", (0.1 * rng.standard_normal(8000)).astype(np.float32), 16000)
    recs = []
    for i in range(60):
        kind = i % 4
        if kind == 0:
            recs.append(make_sample(f"i{i}", "image_vqa", "train", "t", "CC0-1.0",
                                    [media("image", "media/a.png"), text(f"Colour {i}? \"quoted\" task")], "red"))
        elif kind == 1:
            recs.append(make_sample(f"a{i}", "asr", "train", "t", "CC0-1.0",
                                    [media("audio", "media/a.wav"), text("Transcribe.")], f"word {i}"))
        else:
            recs.append(_text(i, ("text_lm", "text_instruct")[kind - 2]))
    path = tmp_path / "train.jsonl"
    write_manifest(path, recs)
    with path.open("a", encoding="utf-8") as f:      # blank lines and a CRLF line move the line numbers
        f.write("\n  \n" + json.dumps(_text(99, "text_lm")) + "\r\n\n" + json.dumps(_text(100, "text_instruct")) + "\n")
    for tasks in (None, ["asr", "text_lm"], ["image_vqa"]):
        ds = OmniDataset(path, tasks=tasks)
        records, lines = _eager(path, tasks)
        assert list(ds.records) == records and [int(n) for n in ds.lines] == lines
        expected: dict[str, list[int]] = {}
        for i, r in enumerate(records):
            expected.setdefault(r["task"], []).append(i)
        assert ds.task_indices == expected and list(ds.task_indices) == list(expected)   # same order of tasks too
        assert [ds.task_of(i) for i in range(len(ds))] == [r["task"] for r in records]
        sampler = dict(seed=5, num_samples=200)
        assert list(MixtureSampler(ds.task_indices, {t: 1.0 for t in expected}, **sampler)) == \
            list(MixtureSampler(expected, {t: 1.0 for t in expected}, **sampler))


def test_source_mix_index_offsets_give_the_same_records_on_odd_lines(tmp_path):
    """Offsets and line numbers agree with text-mode reading on CRLF, a lone CR, blank and NBSP-only lines; a
    task the bytes cannot tell (escaped, or a second "task" key nested) comes from decoding the line."""
    nested = _text(3, "text_lm")
    nested["meta"] = {"task": "ocr"}
    lines = [json.dumps(_text(0, "text_lm")), "", json.dumps(_text(1, "text_instruct"), ensure_ascii=False),
             "\u00a0 ", json.dumps(nested), '{"id": "e", "task": "text\\u005flm", "split": "train"}']
    raw = ("\r\n".join(lines[:2]) + "\n" + "\r".join(lines[2:4]) + "\n" + "\n".join(lines[4:]) + "\n").encode()
    path = tmp_path / "odd.jsonl"
    path.write_bytes(raw)
    index = ManifestIndex.build(path)
    pairs = list(iter_manifest(path))
    assert [index.read(i) for i in range(len(index))] == [r for _, r in pairs]
    assert index.lines.tolist() == [n for n, _ in pairs]
    assert [index.task(i) for i in range(len(index))] == ["text_lm", "text_instruct", "text_lm", "text_lm"]
    assert index.task_ids.nbytes + index.offsets.nbytes < 20 * len(index)          # arrays, not records


def test_source_mix_bad_line_is_reported_with_file_and_line(tmp_path):
    path = _manifest(tmp_path / "m.jsonl", 6, ("text_lm",), "t")
    with path.open("ab") as f:
        f.write(b'{"id": "cut", "task": "text_lm", "messa\n')        # line 7: truncated, task still readable
        f.write(b'{"id": "bytes", "task": "text_lm", "x": "\xff"}\n')   # line 8: not UTF-8
    index = ManifestIndex.build(path)
    assert index.task(6) == "text_lm"
    with pytest.raises(ManifestError, match=rf"{path}:7: not valid JSON"):
        index.read(6)
    with pytest.raises(BadSampleError, match=rf"{path}:7: <no id>: not valid JSON"):
        OmniDataset(path, tasks=["text_lm"])
    ds = OmniDataset(path, tasks=["text_lm"], on_bad_sample="skip")
    assert len(ds) == 6 and [(p.line, "not valid JSON" in p.reason or "UTF-8" in p.reason) for p in ds.skipped] == \
        [(7, True), (8, True)]
    path.write_text(path.read_text(errors="replace") + "\n")          # the file changes under the index
    with pytest.raises(ManifestError, match="changed after it was indexed"):
        ManifestIndex(path, index.offsets, index.sizes, index.lines, index.task_ids, index.tasks,
                      index.approx_tokens, index.stamp).read(0)


# ------------------------------------------------------------------------------------------------ sources
def test_source_mix_default_is_the_prepared_data_alone(tmp_path):
    """No data.sources: the stage reads data.root through OmniDataset and draws exactly what the eager
    dataset's task indices drew; the config hash is that of a config without the new keys."""
    cfg = _cfg(tmp_path)
    data = StageBatches(cfg, cfg.stage(STAGE), None, 0, 1, 4)
    assert isinstance(data.train_set, OmniDataset) and data.sources == {"prepared": 1.0}
    records, _ = _eager(tmp_path / "prepared/train.jsonl", {"text_lm", "text_instruct"})
    eager_ix: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        eager_ix.setdefault(r["task"], []).append(i)
    mixture = cfg.stage(STAGE).mixture
    for step in (0, 3, 17):
        B = cfg.stage(STAGE).batch_size
        old = list(MixtureSampler(eager_ix, mixture, seed=cfg.train.seed, start=step * B, num_samples=B))
        assert data.global_batch(step) == old
        assert [data.train_set.records[i] for i in old] == [records[i] for i in old]
    d = dataclasses.asdict(cfg)
    assert "sources" not in cfg.to_dict()["data"] and "sources" not in cfg.to_dict()["stages"][STAGE]
    assert cfg.to_dict()["data"] == {k: v for k, v in d["data"].items()
                                      if k not in ("sources", "heldout_voices", "task_samples")}   # omitted at default
    # a source the stage weights 0 leaves it on the same path
    extra = _manifest(tmp_path / "extra.jsonl", 50, ("text_instruct",), "extra")
    cfg0 = _cfg(tmp_path, [{"name": "extra", "train": str(extra), "license": "CC0-1.0"}], {"extra": 0})
    again = StageBatches(cfg0, cfg0.stage(STAGE), None, 0, 1, 4)
    assert isinstance(again.train_set, OmniDataset) and again.global_batch(5) == data.global_batch(5)


def test_source_mix_two_sources_sample_in_their_ratio(tmp_path):
    extra = _manifest(tmp_path / "extra.jsonl", 200, ("text_instruct",), "extra")
    cfg = _cfg(tmp_path, [{"name": "extra", "train": str(extra), "license": "CC-BY-4.0", "weight": 1.0}],
               {"prepared": 1.0, "extra": 3.0})
    data = StageBatches(cfg, cfg.stage(STAGE), None, 0, 1, 4)
    mix = data.train_set
    assert isinstance(mix, SourceMixture) and set(mix.cell_indices) == {
        "prepared:text_lm", "prepared:text_instruct", "extra:text_instruct"}
    n = 4000
    drawn = list(data.sampler(num_samples=n))
    by_source = Counter(mix.source_of(i) for i in drawn)
    by_cell = Counter(f"{mix.source_of(i)}:{mix.task_of(i)}" for i in drawn)
    expected = {"extra:text_instruct": 0.75, "prepared:text_instruct": 0.25 * 0.75, "prepared:text_lm": 0.25 * 0.25}
    for cell, p in expected.items():
        sigma = math.sqrt(n * p * (1 - p))
        assert abs(by_cell[cell] - n * p) < 4 * sigma, (cell, by_cell[cell], n * p)
    assert abs(by_source["extra"] - 0.75 * n) < 4 * math.sqrt(n * 0.75 * 0.25)
    # every draw is a record of the source it claims, and the stream resumes exactly
    assert all(mix.records[i]["source"] == mix.source_of(i) for i in drawn[:200])
    assert list(data.sampler(start=1500, num_samples=100)) == drawn[1500:1600]
    # without the stage's override the sources' own weights apply (1 : 1)
    even = _cfg(tmp_path, [{"name": "extra", "train": str(extra), "license": "CC-BY-4.0"}])
    even_data = StageBatches(even, even.stage(STAGE), None, 0, 1, 4)
    share = Counter(even_data.train_set.source_of(i) for i in even_data.sampler(num_samples=n))
    assert abs(share["extra"] - n / 2) < 4 * math.sqrt(n / 4)


@pytest.mark.parametrize("sources, stage_sources, match", [
    ([{"name": "extra", "train": "x.jsonl", "license": "MIT", "weight": -1}], None,
     r"data\.sources\[0\]\.weight = -1\.0 is out of range"),
    ([{"name": "extra", "train": "x.jsonl", "license": "MIT"}], {"extr": 1.0},
     r"stages\.0_text\.sources\.extr is not a data source \(did you mean 'extra'\?\)"),
    ([{"name": "extra", "train": "x.jsonl", "license": "MIT"}], {"extra": -2},
     r"stages\.0_text\.sources\.extra = -2\.0 is out of range"),
    ([{"name": "extra", "train": "x.jsonl"}], None, r"data\.sources\[0\]\.license is empty"),
    ([{"name": "extra", "license": "MIT"}], None, r"data\.sources\[0\]\.train is missing"),
    ([{"name": "prepared", "train": "x.jsonl", "license": "MIT"}], None, r"data\.sources\[0\]\.name 'prepared'"),
    ([{"name": "extra", "train": "x.jsonl", "license": "MIT", "wieght": 2}], None,
     r"unknown key 'data\.sources\[0\]\.wieght' \(did you mean 'weight'\?\)"),
])
def test_source_mix_malformed_source_config_names_the_key(tmp_path, sources, stage_sources, match):
    with pytest.raises(ConfigError, match=match):
        _cfg(tmp_path, sources, stage_sources)


def test_source_mix_missing_or_useless_manifest_names_the_key(tmp_path):
    cfg = _cfg(tmp_path, [{"name": "extra", "train": str(tmp_path / "nope.jsonl"), "license": "MIT"}])
    with pytest.raises(ConfigError, match=r"source 'extra': .*nope\.jsonl does not exist \(data\.sources\[0\]\.train\)"):
        StageBatches(cfg, cfg.stage(STAGE), None, 0, 1, 4)
    # explicitly weighted, but none of the stage's tasks: an error; by its default weight only: left out
    other = tmp_path / "other.jsonl"
    write_manifest(other, [make_sample("o0", "ocr", "train", "o", "MIT", [text("read")], "x")])
    src = [{"name": "extra", "train": str(other), "license": "MIT"}]
    cfg = _cfg(tmp_path, src, {"extra": 2.0})
    with pytest.raises(ConfigError, match=r"stages\.0_text\.sources\.extra = 2, but .*none of the stage's tasks"):
        StageBatches(cfg, cfg.stage(STAGE), None, 0, 1, 4)
    cfg = _cfg(tmp_path, src)
    assert StageBatches(cfg, cfg.stage(STAGE), None, 0, 1, 4).train_set.names == ["prepared"]
