"""Figures: every plot writes a PNG and an SVG from realistic inputs; `dvc plots` renders offline."""
import subprocess
import sys

import pytest

from omni_core import plots
from omni_core.config import load_config
from omni_core.eval.ablation import token_budget
from omni_core.model.token_counts import audio_tokens_per_second


def _live_log(root, stage, losses):
    from dvclive import Live

    with Live(dir=str(root / stage), save_dvc_exp=False, dvcyaml=None) as live:
        for i, v in enumerate(losses):
            live.log_metric("train/loss", v)
            live.log_metric("train/lr", 1e-3)
            if i % 2 == 0:
                live.log_metric("val/loss", v + 0.5)
            live.next_step()


def _check(paths):
    assert [p.suffix for p in paths] == [".png", ".svg"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[0].stat().st_size > 5000
    assert "<svg" in paths[1].read_text()[:500]


def test_loss_curves_reads_dvclive_logs(tmp_path):
    _live_log(tmp_path / "logs", "0_text", [3.0, 2.0, 1.5])
    _live_log(tmp_path / "logs", "1a_image_caption", [2.5, 1.0])
    f = plots.find_loss_log(tmp_path / "logs" / "0_text")
    assert f.parts[-2:] == ("train", "loss.tsv")
    assert plots.read_tsv(f, "loss") == ([0.0, 1.0, 2.0], [3.0, 2.0, 1.5])
    assert plots.read_tsv(plots.find_loss_log(tmp_path / "logs" / "0_text", "val"), "loss") == ([0.0, 2.0], [3.5, 2.0])
    curves = plots.stage_losses(["0_text", "missing", "1a_image_caption"], tmp_path / "logs")
    assert list(curves) == ["0_text", "1a_image_caption"]
    _check(plots.plot_loss_curves(["0_text", "1a_image_caption"], tmp_path / "logs", tmp_path / "fig" / "loss"))
    with pytest.raises(FileNotFoundError, match="no dvclive loss logs"):
        plots.plot_loss_curves(["nope"], tmp_path / "logs", tmp_path / "x")
    with pytest.raises(ValueError, match="expected columns"):
        plots.read_tsv(f, "accuracy")


RESULTS = {"tables": {
    "text": {"tasks": {"text_lm": {"perplexity": 12.0, "perplexity_before": 11.0, "chance": {"perplexity": 90.0}}}},
    "image": {"tasks": {"image_vqa": {"accuracy": 60.0, "chance": {"accuracy": 25.0}, "n": 8}}},
    "audio": {"tasks": {"asr": {"wer": 40.0, "cer": 20.0, "chance": {"wer": 80.0, "cer": 60.0}, "n": 8,
                                "margin_ci95": {"wer": [30.0, 50.0], "cer": [20.0, 60.0]}}}},
}}


def test_metric_vs_chance(tmp_path):
    rows = plots.headline_rows(RESULTS)
    assert [(r[1], r[2], r[3], r[4], r[5]) for r in rows] == [
        ("text_lm", "perplexity", 12.0, 90.0, False), ("image_vqa", "accuracy", 60.0, 25.0, True),
        ("asr", "wer", 40.0, 80.0, False)]
    _check(plots.plot_metric_vs_chance(RESULTS, tmp_path / "chance"))
    # whiskers on chance + the margin's interval: WER 80 - [30, 50] = [30, 50] around the measured 40
    lo, hi = plots._margin_whiskers(rows[1:], {t: r for tab in RESULTS["tables"].values() for t, r in tab["tasks"].items()})
    assert (lo, hi) == ([0.0, 10.0], [0.0, 10.0])


def test_ablation_plots(tmp_path):
    variants = {n: {"wer": w, "tokens_per_second": audio_tokens_per_second(n), "chance_wer": 90.0} for n, w in ((2, 30.0), (4, 35.0), (8, 50.0))}
    _check(plots.plot_downsample_ablation(variants, tmp_path / "ds", reported={2: 7.7, 4: 8.3, 8: 8.0}))
    per_task = {"staged": {"image_vqa": 60.0, "asr": 40.0}, "joint": {"image_vqa": 25.0, "asr": 45.0},
                "chance": {"image_vqa": 25.0, "asr": 80.0}}
    _check(plots.plot_staging_ablation(per_task, tmp_path / "staging"))


def test_token_budget_full_scale(tmp_path):
    budget = token_budget(load_config(profile="full"), max_seconds=60)
    assert budget["image"]["tokens_per_tile"] == 182                   # the paper's 729 -> 182 per 384 tile
    assert budget["image"]["tokens"][:2] == [182, 3 * 182]            # fits one tile; 2-tile grid + global view
    assert budget["audio"]["tokens"]["4"][59] == 750                   # 60 s at 12.5 tokens/s
    assert budget["video"]["tokens_per_frame"] == [182, 546]          # a square frame: 1 tile; 384x768: 2 + global
    assert budget["video"]["tokens"][-1] == 48 * 546 and budget["video"]["tokens_min"][-1] == 48 * 182   # 1 fps, 48 max
    _check(plots.plot_token_budget(budget, tmp_path / "budget"))


def test_render_dvc_plots_offline(tmp_path):
    pytest.importorskip("vl_convert", reason="vl-convert-python not installed (requirements-optional.txt)")
    _live_log(tmp_path / "logs", "0_text", [3.0, 2.0, 1.5])
    pytest.importorskip("dvc", reason="dvc not installed")
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "dvc.yaml").write_text("plots:\n  - logs/0_text/plots/metrics/train/loss.tsv:\n      x: step\n      y: loss\n")
    out = plots.render_dvc_plots(tmp_path / "dvc_plots", repo=tmp_path)
    assert [p.name for p in out] == ["logs_0_text_plots_metrics_train_loss.tsv.png",
                                     "logs_0_text_plots_metrics_train_loss.tsv.svg"]
    _check(out)


def test_seed_spread_plot(tmp_path):
    per_seed = {0: {"image_vqa": 35.0, "asr": 60.0, "text_lm": 30.0}, 1: {"image_vqa": 28.0, "asr": 62.0}}
    _check(plots.plot_seed_spread(per_seed, {"image_vqa": 30.0, "asr": 90.0}, tmp_path / "seeds",
                                  {0: {"asr": [3.0, 40.0]}}))
    with pytest.raises(ValueError, match="no task results"):
        plots.plot_seed_spread({0: {"text_lm": 30.0}}, {}, tmp_path / "none")
