"""Tasks as data: a task declared under params.yaml `tasks:` goes through import, validation, training and
evaluation like a built-in one, scored with its declared metrics, normalisation and chance baseline; an
undeclared task or a bad declaration is refused with one line naming where and the fix."""
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from train_fixtures import TINY_MODEL, make_tiny_data

from omni_core import task_registry as R
from omni_core.config import REPO_ROOT, ConfigError, load_config
from omni_core.data.__main__ import main as data_cli
from omni_core.data.manifest import ALL_TASKS, make_sample, media, read_manifest, schema_problems, text
from omni_core.data.sources.media import write_png
from omni_core.eval import metrics as M

CHART = {"modalities": ["image"], "metrics": ["accuracy", "chrf"], "chance": "majority", "table": "image",
         "normalize": "strict", "title": "chart colour QA"}
COLORS = {"red": (220, 30, 30), "blue": (30, 30, 220)}
# train: red is the majority answer; test: 2 of 6 are red, so the majority baseline scores 33.3 %
ANSWERS = {"train": ["red"] * 5 + ["blue"] * 3, "val": ["red", "blue"], "test": ["red", "blue", "blue", "red",
                                                                                 "blue", "blue"]}


def _params(tmp: Path, data: Path, tasks: dict | None, mixture: dict | None = None) -> Path:
    """A complete params file: the tiny test model, one stage whose mixture names the user task, its `tasks:`."""
    raw = {"profile": "tiny", "model": TINY_MODEL, "data": {"root": str(data)},
           "train": {"checkpoints_dir": str(tmp / "checkpoints"), "log_dir": str(tmp / "logs"), "threads": 1},
           "stages": {"user_sft": {"mixture": mixture or {"chart_qa": 1.0, "text_instruct": 0.3}, "steps": 3, "batch_size": 4,
                                   "seq_len": 128, "warmup_ratio": 0.0, "save_every": 1000, "eval_every": 1000,
                                   "val_samples": 4, "lr": {"vision_projector": 1.0e-3, "llm": 1.0e-3}}},
           "eval": {"batch_size": 8, "max_new_tokens": 3, "max_samples_per_task": 6, "metrics_dir": str(tmp / "metrics")},
           "tasks": tasks or {}}
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _llava(tmp: Path, split: str) -> Path:
    """A LLaVA JSON file of chart_qa records and their PNGs (a bar's colour is the answer)."""
    rng = np.random.default_rng(len(split))
    recs = []
    for i, word in enumerate(ANSWERS[split]):
        img = np.tile(np.array(COLORS[word], np.int16), (16, 16, 1)) + rng.integers(-20, 21, (16, 16, 3))
        write_png(tmp / "charts" / f"{split}-{i}.png", np.clip(img, 0, 255).astype(np.uint8))
        recs.append({"id": f"chart-{split}-{i}", "image": f"{split}-{i}.png", "conversations": [
            {"from": "human", "value": "<image>\nWhich colour is the bar?"}, {"from": "gpt", "value": word}]})
    path = tmp / f"charts-{split}.json"
    path.write_text(json.dumps(recs))
    return path


def test_user_task_imports_validates_trains_and_is_scored_with_its_declaration(tmp_path, capsys):
    from omni_core.eval.runner import evaluate
    from omni_core.eval.tables import render_markdown
    from omni_core.train.loop import train_stage

    data = make_tiny_data(tmp_path / "data", n_train=4, n_val=2, tasks=("text_instruct",))
    params = _params(tmp_path, data, {"chart_qa": CHART})
    for split in ("train", "val", "test"):                 # import -> appended to the split's manifest
        out = data / f"chart-{split}.jsonl"
        assert data_cli(["import-llava", str(_llava(tmp_path, split)), "--media-root", str(tmp_path / "charts"),
                         "--out", str(out), "--task", "chart_qa", "--split", split, "--params", str(params)]) == 0
        with open(data / f"{split}.jsonl", "a") as f:
            f.write(out.read_text())
    recs = read_manifest(data / "train.jsonl")
    assert [r["task"] for r in recs].count("chart_qa") == 8
    assert data_cli(["validate", *(str(data / f"{s}.jsonl") for s in ("train", "val", "test")),
                     "--params", str(params)]) == 0
    assert "ok:" in capsys.readouterr().err

    cfg = load_config(params)
    res = train_stage(cfg, "user_sft", progress=False)
    assert res["steps"] == 3 and np.isfinite(res["train_loss"])

    results = evaluate(cfg, Path(cfg.train.checkpoints_dir) / "user_sft" / "model")
    assert list(results["tables"]) == ["text", "image"]       # built-ins' tables in their order, then the user's
    chart = results["tables"]["image"]["tasks"]["chart_qa"]
    assert chart["n"] == 6 and set(M.METRICS) & set(chart) == {"accuracy", "chrf"}
    # the declared baseline (majority over train, strict normalisation) scored on the test answers
    assert chart["baseline"] == "majority answer 'red'"
    assert chart["chance"]["accuracy"] == pytest.approx(100 * 2 / 6)
    assert set(chart["chance"]) == set(chart["margin_ci95"]) == {"accuracy", "chrf"}
    # the declared normalisation decides what counts as right: strict is case-sensitive
    preds = [p["prediction"] for p in results["predictions"]["chart_qa"]]
    refs = [p["reference"] for p in results["predictions"]["chart_qa"]]
    assert chart["accuracy"] == pytest.approx(M.strict_exact_match(preds, refs))
    assert M.score("chart_qa", ["Red", "blue"], ["red", "blue"])["accuracy"] == 50.0
    assert M.score("image_vqa", ["Red", "blue"], ["red", "blue"])["accuracy"] == 100.0
    written = json.loads((Path(cfg.eval.metrics_dir) / "image.json").read_text())
    assert list(written["tasks"]) == ["chart_qa"]
    md = render_markdown(results)
    assert "| chart colour QA (`chart_qa`) | Acc. (%) |" in md and "| chart colour QA (`chart_qa`) | chrF |" in md


def test_user_task_from_a_data_source_is_trained_scored_and_drawn(tmp_path):
    """The README's bring-your-own-data path: the dataset stays in its own folder as a data source (one manifest
    per split), a stage weights it beside the prepared data, and evaluation scores its test split with the
    task's declaration; the prediction grid finds its media beside its manifest."""
    from omni_core import plots
    from omni_core.eval.runner import evaluate
    from omni_core.train.loop import train_stage

    data = make_tiny_data(tmp_path / "data", n_train=4, n_val=2, tasks=("text_instruct",))
    params = _params(tmp_path, data, {"chart_qa": CHART})
    own = tmp_path / "charts_data"
    for split in ("train", "val", "test"):
        assert data_cli(["import-llava", str(_llava(tmp_path, split)), "--media-root", str(tmp_path / "charts"),
                         "--out", str(own / f"{split}.jsonl"), "--task", "chart_qa", "--split", split,
                         "--params", str(params)]) == 0
    raw = yaml.safe_load(params.read_text())
    raw["data"]["sources"] = [{"name": "charts", "license": "CC0-1.0",
                               **{split: str(own / f"{split}.jsonl") for split in ("train", "val", "test")}}]
    raw["stages"]["user_sft"]["sources"] = {"charts": 2.0}
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert not any("chart_qa" in line for line in (data / "train.jsonl").read_text().splitlines())

    cfg = load_config(params)
    res = train_stage(cfg, "user_sft", progress=False)
    assert res["steps"] == 3 and np.isfinite(res["train_loss"])
    results = evaluate(cfg, Path(cfg.train.checkpoints_dir) / "user_sft" / "model")
    chart = results["tables"]["image"]["tasks"]["chart_qa"]
    assert chart["n"] == 6 and chart["baseline"] == "majority answer 'red'"   # fit on the source's train split
    assert chart["chance"]["accuracy"] == pytest.approx(100 * 2 / 6)
    rows = [json.loads(line) for line in (Path(cfg.eval.metrics_dir) / "predictions.jsonl").read_text().splitlines()]
    assert {r["manifest"] for r in rows if r["task"] == "chart_qa"} == {str(own / "test.jsonl")}
    assert all("manifest" not in r for r in rows if r["task"] != "chart_qa")    # the prepared data's rows as before
    records = plots.prediction_records(rows, data / "test.jsonl")
    fig = plots.plot_prediction_grid([r for r in records if r["task"] == "chart_qa"], data, per_task=2)
    assert fig is not None


def test_user_task_undeclared_is_refused_in_one_line(tmp_path, capsys):
    from omni_core.eval.runner import read_manifest as eval_manifest

    png = tmp_path / "media" / "c.png"
    write_png(png, np.zeros((8, 8, 3), np.uint8))
    manifest = tmp_path / "train.jsonl"
    rec = make_sample("c-1", "chart_qa", "train", "mine", "CC0", [media("image", "media/c.png"), text("Colour?")],
                      "black")
    manifest.write_text(json.dumps(rec) + "\n")
    params = _params(tmp_path, tmp_path, None, mixture={"text_instruct": 1.0})   # a valid config without the task

    assert data_cli(["validate", str(manifest), "--params", str(params)]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{manifest}:1: c-1: unknown task 'chart_qa'; declare it in params.yaml under `tasks:`")
    assert "tasks: {chart_qa: {modalities: [image], metrics: [accuracy]" in lines[0]

    llava = tmp_path / "l.json"
    llava.write_text(json.dumps([{"id": "x", "image": "c.png", "conversations": [
        {"from": "human", "value": "<image>\nColour?"}, {"from": "gpt", "value": "black"}]}]))
    assert data_cli(["import-llava", str(llava), "--media-root", str(tmp_path / "media"), "--out",
                     str(tmp_path / "out.jsonl"), "--task", "chart_qa", "--params", str(params)]) == 1
    assert "--task: unknown task 'chart_qa'; declare it in params.yaml" in capsys.readouterr().err
    load_config(params)                                    # the active registry: this config's, without chart_qa
    with pytest.raises(ValueError, match=rf"{manifest}:1: unknown task 'chart_qa'; declare it"):
        eval_manifest(manifest)
    with pytest.raises(ConfigError, match=r"stages\.s\.mixture\.chart_qa: unknown task 'chart_qa'; declare it"):
        load_config(params, overrides={"stages": {"s": {"mixture": {"chart_qa": 1.0}}}})


@pytest.mark.parametrize("decl, match", [
    ({**CHART, "metrics": ["accuracy", "f1"]}, r"tasks\.chart_qa\.metrics: unknown metric 'f1'.*choose from accuracy"),
    ({**CHART, "modalities": ["imgae"]}, r"tasks\.chart_qa\.modalities: unknown modality 'imgae' \(did you mean 'image'"),
    ({**CHART, "chance": "random"}, r"tasks\.chart_qa\.chance: unknown chance kind 'random'.*majority, per_question"),
    ({**CHART, "table": "charts"}, r"tasks\.chart_qa\.table: unknown table 'charts'.*text, image, video, audio, omni"),
    ({**CHART, "normalise": "strict"}, r"tasks\.chart_qa\.normalise: unknown key \(did you mean 'normalize'"),
    ({k: v for k, v in CHART.items() if k != "chance"}, r"tasks\.chart_qa: missing chance; e\.g\. tasks:"),
    ({**CHART, "metrics": ["perplexity", "chrf"]}, r"tasks\.chart_qa\.metrics: perplexity .* declare it alone"),
    ({**CHART, "chance_from": "asr_real"}, r"tasks\.chart_qa\.chance_from: 'asr_real' is not a task with a training"),
])
def test_user_task_bad_declaration_names_the_key(tmp_path, decl, match):
    params = _params(tmp_path, tmp_path, {"chart_qa": decl})
    with pytest.raises(ConfigError, match=match) as e:
        load_config(params)
    assert str(e.value).startswith(str(params)) and "\n" not in str(e.value)


def test_user_task_may_not_redeclare_a_built_in(tmp_path):
    params = _params(tmp_path, tmp_path, {"chart_qa": CHART, "asr": {**CHART, "modalities": ["audio"]}})
    with pytest.raises(ConfigError, match=r"tasks\.asr: 'asr' is a built-in task .* e\.g\. tasks\.my_asr"):
        load_config(params)


def test_user_task_modalities_bound_its_samples_and_built_ins_stay_as_they_were():
    specs = R.merge({"chart_qa": CHART})
    ok = make_sample("c", "chart_qa", "train", "s", "CC0", [media("image", "a.png"), text("Colour?")], "red")
    assert schema_problems(ok, specs) == []
    spoken = make_sample("c", "chart_qa", "train", "s", "CC0", [media("image", "a.png"), media("audio", "a.wav")],
                         "red")
    (problem,) = schema_problems(spoken, specs)
    assert "task 'chart_qa' takes image but this sample carries audio" in problem
    assert "params.yaml tasks.chart_qa.modalities" in problem
    # the built-ins: declared once, in the paper's order, scored as before tasks were data
    assert set(R.BUILTIN) == set(ALL_TASKS) and M.TASKS is R.BUILTIN
    assert list(M.TASKS) == ["text_lm", "text_instruct", "image_caption", "image_vqa", "ocr", "highres_read",
                             "video_caption", "video_qa", "asr", "asr_real", "asr_open", "asr_heldout_voice",
                             "spoken_qa", "omni_image_speech", "omni_continuation", "video_narration_qa"]
    assert all(s.normalize == "metric" and s.builtin for s in R.BUILTIN.values())
    assert set(R.METRIC_NAMES) == set(M.METRICS) | {"perplexity"}
    assert set(R.NORMALIZATIONS) == set(M.NORMALIZERS) | {"metric"}
    assert load_config(REPO_ROOT / "params.yaml").tasks == {}          # none declared by default
