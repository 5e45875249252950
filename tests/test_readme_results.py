"""The README's results block is what metrics/*.json give, and the check catches a number that moved."""
import json
import shutil

import pytest

from omni_core.eval import readme_results as R


def test_readme_block_matches_committed_metrics():
    diff = R.stale_diff(R.README, R.METRICS_DIR)
    assert not diff, f"README.md's results block is stale; run `python -m omni_core.eval.readme_results --write`\n{diff}"


@pytest.fixture
def copies(tmp_path):
    """A copy of the README and of metrics/*.json to change."""
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    for f in R.METRICS_DIR.glob("*.json"):
        shutil.copy(f, metrics / f.name)
    if (R.METRICS_DIR / R.SMALL_DIR).is_dir():
        shutil.copytree(R.METRICS_DIR / R.SMALL_DIR, metrics / R.SMALL_DIR)
    readme = tmp_path / "README.md"
    readme.write_text(R.README.read_text())
    R.write(readme, metrics)
    return readme, metrics


def _edit(metrics, table, task, **values):
    f = metrics / f"{table}.json"
    data = json.loads(f.read_text())
    data["tasks"][task].update(values)
    f.write_text(json.dumps(data))


def test_check_reports_a_changed_number(copies, capsys):
    readme, metrics = copies
    assert R.stale_diff(readme, metrics) == "" and R.main(["--check", "--readme", str(readme),
                                                         "--metrics", str(metrics)]) == 0
    _edit(metrics, "image", "image_vqa", accuracy=52.0)
    diff = R.stale_diff(readme, metrics)
    assert "-| image | image_vqa | accuracy % | 49.7 | 34.7 | +15.0 [+8.7, +21.3] |" in diff
    assert "+| image | image_vqa | accuracy % | 52.0 | 34.7 | +17.3 [+8.7, +21.3] |" in diff
    assert R.main(["--check", "--readme", str(readme), "--metrics", str(metrics)]) == 1
    assert "+| image | image_vqa | accuracy % | 52.0" in capsys.readouterr().out


def test_write_rewrites_only_the_block(copies):
    readme, metrics = copies
    before = readme.read_text()
    _edit(metrics, "audio", "spoken_qa", margin_ci95={"accuracy": [0.4, 7.3]})     # now clearly above chance
    assert R.write(readme, metrics) and R.stale_diff(readme, metrics) == ""
    after = readme.read_text()
    assert "**All 14 tasks are clearly above chance in this run.**" in after
    head, tail = before.split(R.START)[0], before.split(R.END)[1]
    assert after.startswith(head + R.START) and after.endswith(R.END + tail)
    assert not R.write(readme, metrics)                       # a second write changes nothing


def test_missing_markers_say_what_to_do(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# no results here\n")
    with pytest.raises(ValueError, match="put the markers around the results table"):
        R.stale_diff(readme, R.METRICS_DIR)


def _row(table, task, res):
    block = R.render_block({"settings": {}, "tables": {table: {"tasks": {task: res}}}})
    return next(line for line in block.splitlines() if line.startswith(f"| {table} | {task}"))


def test_verdicts_read_from_the_metrics():
    # a lower bound under one unit is "by a hair"; a secondary metric that disagrees is named
    asr = {"wer": 90.0, "cer": 80.0, "chance": {"wer": 95.0, "cer": 79.0}, "n": 10, "distinct_answers": 4,
           "margin_ci95": {"wer": [0.5, 9.0], "cer": [-3.0, 1.0]}}
    assert _row("audio", "asr", asr).endswith("| **clearly**, by a hair (CER: no) | 4 |")
    # better than chance within noise reads "no"; one answer for all never counts
    vqa = {"accuracy": 40.0, "chance": {"accuracy": 35.0}, "margin_ci95": {"accuracy": [-1.0, 11.0]}, "n": 50,
           "distinct_answers": 9}
    assert _row("image", "image_vqa", vqa).endswith("| +5.0 [-1.0, +11.0] | no | 9 |")
    vqa.update(distinct_answers=1, margin_ci95={"accuracy": [2.0, 8.0]})
    assert _row("image", "image_vqa", vqa).endswith("| no (one answer for all) | 1 |")
    # BLEU is stated beside video captioning's chrF whether it confirms or not
    cap = {"chrf": 60.0, "bleu": 20.0, "accuracy": 5.0, "chance": {"chrf": 50.0, "bleu": 18.0, "accuracy": 2.0},
           "margin_ci95": {"chrf": [4.0, 16.0], "bleu": [3.0, 4.0], "accuracy": [1.0, 5.0]}, "n": 50,
           "distinct_answers": 9}
    assert "| **clearly** (BLEU too: 20.0 vs 18.0) |" in _row("video", "video_caption", cap)
    cap["margin_ci95"]["bleu"] = [-1.0, 4.0]
    assert "| **clearly** (BLEU: no) |" in _row("video", "video_caption", cap)


def test_reading_says_what_the_text_perplexity_did(tmp_path):
    """Notebook 04's closing words come from the metrics: a perplexity that rose reads as text ability not
    fully kept, one that fell as kept."""
    from omni_core.eval.tables import load_results

    said = R.reading(load_results(R.METRICS_DIR))
    text = json.loads((R.METRICS_DIR / "text.json").read_text())["tasks"]["text_lm"]
    assert ("not fully kept" in said) == (text["perplexity"] > text["perplexity_before"])
    shutil.copytree(R.METRICS_DIR, tmp_path / "m")
    doc = json.loads((tmp_path / "m" / "text.json").read_text())
    doc["tasks"]["text_lm"]["perplexity"] = doc["tasks"]["text_lm"]["perplexity_before"] / 2
    (tmp_path / "m" / "text.json").write_text(json.dumps(doc))
    flipped = R.reading(load_results(tmp_path / "m"))
    assert "text ability was kept" in flipped and "not fully kept" not in flipped


def test_small_profile_block_sits_beside_the_tiny_results(copies):
    readme, metrics = copies
    small = metrics / R.SMALL_DIR
    shutil.rmtree(small, ignore_errors=True)
    assert "make repro PROFILE=small" in R.render_small_block(*R.load_small(metrics)[:1], R.load_results(metrics))
    small.mkdir()
    for f in metrics.glob("*.json"):                   # the tiny numbers standing in for a small run
        shutil.copy(f, small / f.name)
    _edit(small, "audio", "asr", wer=5.0)
    (small / "timing.json").write_text(json.dumps({"total_seconds": 6000, "cpu": "Some CPU", "cpu_count": 2}))
    assert R.stale_diff(readme, metrics) != "" and R.write(readme, metrics) and R.stale_diff(readme, metrics) == ""
    block = R.readme_block(readme.read_text(), R.SMALL_START, R.SMALL_END)
    tiny_wer = R.load_results(metrics)["tables"]["audio"]["tasks"]["asr"]["wer"]
    row = next(line for line in block.splitlines() if line.startswith("| audio | asr ("))
    assert f"| {R.fmt_number(tiny_wer)} | 5.0 |" in row            # tiny's committed WER beside the small run's
    assert "took 1 h 40 min on 2 CPU cores (Some CPU)" in " ".join(block.split())
    assert readme.read_text().count(R.SMALL_START) == 1


def test_run_times_read_the_notebooks_and_the_training_logs(tmp_path):
    from omni_core.eval import run_times

    reports, logs = tmp_path / "reports", tmp_path / "logs"
    reports.mkdir()
    for name, seconds in (("01_data_prep", 95.5), ("train_1e_audio", 700.0)):
        (reports / f"{name}.ipynb").write_text(json.dumps({"metadata": {"papermill": {"duration": seconds}}, "cells": []}))
    (reports / "not_run.ipynb").write_text(json.dumps({"metadata": {}, "cells": []}))
    (logs / "1e_audio").mkdir(parents=True)
    (logs / "1e_audio" / "metrics.json").write_text(json.dumps({"val_loss_end": 1.5, "wall_s": 600.0, "step": 120}))
    (logs / "0_text").mkdir()          # a skipped stage: no summary
    out = run_times.run_times(reports, logs)
    assert out["notebooks"] == {"01_data_prep": 95.5, "not_run": None, "train_1e_audio": 700.0}
    assert out["training"] == {"1e_audio": {"seconds": 600.0, "steps": 120, "seconds_per_step": 5.0}}
    assert out["total_seconds"] == 795.5 and out["cpu_count"] >= 1
