"""Figures: every plot writes a PNG and an SVG from realistic inputs, and draws what its input says (counts,
labels, spans); `dvc plots` renders offline."""
import json
import subprocess
import sys

import matplotlib.pyplot as plt
import numpy as np
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
    lo, hi = plots.results._margin_whiskers(rows[1:], {t: r for tab in RESULTS["tables"].values() for t, r in tab["tasks"].items()})
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


# ------------------------------------------------------------------ figures that teach (notebooks 00, 04-06)
@pytest.fixture
def drawn(monkeypatch):
    """The figures the plot functions save, kept for inspection after they are written."""
    figures = []
    save = plots.save_figure

    def keep(fig, path):
        figures.append(fig)
        return save(fig, path)

    for module in (plots.style, plots.ablations, plots.results, plots.tokens, plots.training):   # where it is called
        monkeypatch.setattr(module, "save_figure", keep)
    return figures


def _texts(fig) -> list[str]:
    return [t.get_text() for t in fig.findobj(plt.Text)]


def test_loss_curves_one_kind_of_loss_per_panel(tmp_path, drawn):
    for stage, losses in (("0_text", [7.0, 3.0]), ("0_vision", [2.0, 1.0]), ("0_audio", [60.0, 4.0]),
                          ("1a_image_caption", [3.0, 1.0])):
        _live_log(tmp_path / "logs", stage, losses)
    objectives = {"0_text": "lm", "0_vision": "digit_word_shape_classification", "0_audio": "speech_ctc",
                  "1a_image_caption": "lm"}
    _check(plots.plot_loss_curves(list(objectives), tmp_path / "logs", tmp_path / "loss", objectives))
    panels = {ax.get_title(): [line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")]
              for ax in drawn[0].axes}
    assert panels == {"next-token loss on answer tokens": ["0_text", "1a_image_caption"],
                      "classification loss (vision tower)": ["0_vision"], "CTC loss (audio encoder)": ["0_audio"]}


def test_metric_vs_chance_axis_matches_its_range(tmp_path, drawn):
    plots.plot_metric_vs_chance(RESULTS, tmp_path / "a")
    ax = drawn[0].axes[0]
    assert ax.get_xlim() == (0.0, 100.0) and "0-100" in ax.get_xlabel()
    wide = json.loads(json.dumps(RESULTS))
    wide["tables"]["audio"]["tasks"]["asr"]["chance"]["wer"] = 160.0     # a fixed sentence inserts words
    plots.plot_metric_vs_chance(wide, tmp_path / "b")
    ax = drawn[1].axes[0]
    assert ax.get_xlim()[1] >= 160.0 and "0-100" not in ax.get_xlabel() and f"0-{ax.get_xlim()[1]:.0f}" in ax.get_xlabel()


def test_speech_boundary_plot_labels_its_axes():
    from omni_core.speech_boundary import BoundaryEvent

    wave = np.sin(np.linspace(0, 300, 16000)).astype(np.float32)
    fig = plots.plot_speech_boundaries(wave, np.full(100, 0.9), [BoundaryEvent("speech_end", 0.5, 1.0)], np.ones(100))
    ax = fig.axes[0]
    assert ax.get_ylabel()
    assert {"audio", "P(speech)", "true utterance", "speech starts", "speech ends"} <= {
        t.get_text() for t in ax.get_legend().get_texts()}
    plt.close(fig)


@pytest.fixture(scope="module")
def processor():
    from omni_core.model import train_tokenizer
    from omni_core.processing import OmniProcessor

    tok = train_tokenizer(["Which digit is at the top left?", "Transcribe the audio.", "seven two"] * 8, 300)
    return OmniProcessor(tok, load_config(profile="tiny").model)


def test_token_runs_collapse_pads_and_keep_every_token(processor, tmp_path, drawn):
    from omni_core.model.configuration import SPECIAL_TOKENS

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)        # 2x2 AnyRes grid + the global view
    frames = [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(3)]
    wave = (0.1 * rng.standard_normal(16000)).astype(np.float32)
    messages = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "video", "frames": frames},
                                             {"type": "audio", "array": wave, "sampling_rate": 16000},
                                             {"type": "text", "text": "Which digit is at the top left?"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "seven two"}]}]
    batch = processor(messages)
    ids = batch["input_ids"]
    runs = plots.token_runs(ids, processor.tokenizer, batch["labels"])
    assert sum(r.count for r in runs) == len(ids)
    pads = {r.kind: r for r in runs if r.count > 1 and r.kind != "text"}
    for kind, run in pads.items():
        pad_id = processor.tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS[kind]["pad"])
        assert run.count == int((ids == pad_id).sum()) and run.label.endswith(f"×{run.count}")
    assert pads["image"].count == 5 * 16 and pads["video"].count == 3 * 4 and pads["audio"].count == 13
    assert "".join(r.label for r in runs if r.supervised) == "seven two<|im_end|>"
    assert "[<|image_pad|> ×80]" in plots.format_runs(runs)

    rows = [{"title": "omni", "runs": runs, "image": image}, {"title": "video", "runs": runs, "frames": frames},
            {"title": "audio", "runs": runs, "audio": wave}]
    _check(plots.plot_token_layout(rows, tmp_path / "layout"))
    texts = _texts(drawn[0])
    for run in pads.values():                      # each pad run is drawn once per row, with its count
        assert texts.count(run.label) == len(rows)


def test_anyres_tiling_counts_the_global_view(tmp_path, drawn):
    from omni_core.model.token_counts import image_tokens

    vision = load_config(profile="tiny").model.vision
    _check(plots.plot_anyres_tiling(np.zeros((64, 64, 3), np.uint8), vision, tmp_path / "anyres"))
    assert image_tokens(64, 64, vision) == 80
    assert "2x2 grid = 4 tiles + 1 global view = 5 tiles x 16 tokens = 80 image tokens" in drawn[0]._suptitle.get_text()
    assert len(drawn[0].axes) == 1 + 5                                # the image, the global view, 4 tiles
    fig = plots.plot_anyres_tiling(np.zeros((32, 32, 3), np.uint8), vision)
    assert "fits one tile: the global view alone, 16 image tokens" in fig._suptitle.get_text() and len(fig.axes) == 2
    plt.close(fig)


def test_stage_grid_shows_each_stage_lr_and_the_paper(tmp_path):
    from omni_core.config import MODULES
    from omni_core.train.freezing import stage_lrs

    cfg = load_config(profile="tiny")
    # configs/full.yaml marks the lrs that come from the paper; the rest (1e, 1f, 2) are ours
    assert plots.paper_lr_stages() == {"1a_image_caption", "1b_image_vqa", "1c_image_full", "1d_video_images", "1d_video"}
    fig = plots.plot_stage_grid(cfg, current="1b_image_vqa")
    cells = [t.get_text() for t in fig.axes[0].texts]
    stages = [s for s, st in cfg.stages.items() if st.enabled]
    assert len(cells) == len(stages) * len(MODULES)
    for y, stage in enumerate(stages):
        lrs = stage_lrs(cfg.stage(stage))
        for x, module in enumerate(MODULES):
            ours = cells[y * len(MODULES) + x].split("\n")[0]
            assert ours == (plots.training._lr_text(lrs[module]) if module in lrs else "frozen"), (stage, module)
    row = stages.index("1b_image_vqa") * len(MODULES)
    assert cells[row + MODULES.index("vision_projector")] == "1e-3\npaper: 1e-5"       # the paper's SigLIP stage II
    assert cells[row + MODULES.index("llm")] == "1e-3\npaper: frozen"                  # tiny departs: its LM trains
    assert cells[len(stages) * len(MODULES) - 1] == "1e-3\npaper: trains"             # 2_sft: the paper gives no lr
    bold = [t.get_text() for t in fig.axes[0].get_yticklabels() if t.get_fontweight() == "bold"]
    assert bold == ["▶ 1b_image_vqa"]
    plt.close(fig)
    _check(plots.plot_stage_grid(cfg, paper=None, out=tmp_path / "grid"))
    with pytest.raises(Exception, match="unknown stage"):
        plots.plot_stage_grid(cfg, current="1z_nope")


def _record(task, question, prediction, reference, i=0):
    return {"task": task, "id": f"{task}-{i}", "question": question, "prediction": prediction, "reference": reference}


def test_confusion_counts_by_question_kind(tmp_path, drawn):
    records = [_record("image_vqa", "What shape is at the top left?", p, r, i) for i, (p, r) in
               enumerate([("circle", "circle"), ("Square.", "square"), ("circle", "square"), ("red", "triangle")])]
    records += [_record("image_vqa", "What colour is the shape at the top left?", "red", r, 9) for r in ("red", "blue")]
    records += [_record("image_vqa", f"Read the number {i}", str(i), str(i), i) for i in range(30)]   # open: left out
    panels = plots.confusion_panels(records)
    assert list(panels) == ["what shape", "what colour"]
    classes, counts = panels["what shape"]
    assert classes == ["circle", "square", "triangle"]                  # the tasks' vocabulary order
    assert counts.tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 1]]  # "red" is no shape: the "other" column
    _check(plots.plot_confusion(records, "image_vqa", tmp_path / "confusion"))
    titles = [ax.get_title() for ax in drawn[0].axes]
    assert titles == ["“what shape …”: 2/4 right", "“what colour …”: 1/2 right"]
    with pytest.raises(ValueError, match="no question kind"):
        plots.plot_confusion(records, "video_qa")


def test_prediction_records_and_grid(tmp_path):
    from PIL import Image

    (tmp_path / "media").mkdir()
    Image.new("RGB", (32, 32), "red").save(tmp_path / "media" / "a.png")
    samples = [{"id": f"s{i}", "task": "ocr", "split": "test", "source": "x", "license": "x",
                "messages": [{"role": "user", "content": [{"type": "image", "path": "media/a.png"},
                                                          {"type": "text", "text": "What does the text say?"}]},
                             {"role": "assistant", "content": [{"type": "text", "text": "red"}]}]} for i in range(5)]
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    (tmp_path / "predictions.jsonl").write_text("".join(
        json.dumps({"task": "ocr", "id": f"s{i}", "prediction": p, "reference": "red"}) + "\n"
        for i, p in enumerate(["red", "blue", "Red.", "green", "red"])))
    records = plots.prediction_records(tmp_path / "predictions.jsonl", tmp_path / "test.jsonl")
    assert [r["question"] for r in records] == ["What does the text say?"] * 5
    assert [plots.is_right(r) for r in records] == [True, False, True, False, True]
    fig = plots.plot_prediction_grid(records, tmp_path, per_task=4)
    marks = [ax.get_title(loc="left").split("\n")[-1] for ax in fig.axes]
    assert marks == ["✓ right", "✓ right", "✗ wrong", "✗ wrong"]       # right and wrong ones mixed
    assert "3/5 right" in fig._suptitle.get_text()
    plt.close(fig)
    with pytest.raises(KeyError, match="no sample"):
        plots.prediction_records([{"task": "ocr", "id": "gone", "prediction": "", "reference": ""}], tmp_path / "test.jsonl")


def test_stream_recorder_and_timeline(tmp_path, drawn):
    import torch

    from omni_core.model import build_model, train_tokenizer
    from omni_core.processing import OmniProcessor
    from omni_core.stream import OmniSession

    cfg = load_config(overrides={"model": {
        "llm": {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "num_kv_heads": 1, "intermediate_size": 128},
        "vision": {"image_size": 16, "patch_size": 4, "hidden_size": 32, "num_layers": 1, "num_heads": 2,
                   "intermediate_size": 64},
        "audio": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "ffn_size": 64, "window_seconds": 1.0}}})
    torch.manual_seed(0)
    processor = OmniProcessor(train_tokenizer(["what is in the video", "hello world"] * 20, 300), cfg.model)
    model = build_model(cfg, processor.tokenizer).eval()
    events, texts = [], []
    session = OmniSession(model, processor, cfg=cfg.stream, on_event=events.append, on_text=texts.append)
    recorder = plots.StreamRecorder(session)
    rng = np.random.default_rng(0)
    for _ in range(2):
        session.add_frame(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
    session.end_turn(audio=(0.1 * rng.standard_normal(8000)).astype(np.float32))
    session.answer(max_new_tokens=4)
    kinds = [r["kind"] for r in recorder.records]
    assert kinds[:3] == ["frame", "frame", "prefill"] and kinds[-1] == "answer_end" and "first_token" in kinds
    assert [e.kind for e in events] == ["answer_start", "answer_end"]          # the session's callbacks still run
    assert "".join(texts) == session.turns[0].answer
    # the first frame opens the turn (the template's user header, <|video_start|>), the second adds its tile alone
    assert recorder.records[0]["tokens"] == len(session.user_open) + 1 + session.tile_tokens
    assert recorder.records[1]["tokens"] == session.tile_tokens
    assert recorder.records[2]["tokens"] == session.turns[0].tokens_prefilled_after_speech
    t = {r["kind"]: r["t"] for r in recorder.records}
    assert t["frame"] <= t["prefill"] <= t["answer_start"] <= t["first_token"] <= t["answer_end"]

    records = [{"kind": "speech_start", "t": 0.5, "duration": 0.0}, {"kind": "frame", "t": 0.5, "duration": 0.02, "tokens": 5},
               {"kind": "frame", "t": 1.5, "duration": 0.02, "tokens": 4}, {"kind": "speech_end", "t": 2.0, "duration": 0.0},
               {"kind": "prefill", "t": 2.0, "duration": 0.04, "tokens": 33, "audio_seconds": 1.3},
               {"kind": "answer_start", "t": 2.05, "duration": 0.0}, {"kind": "first_token", "t": 2.1, "duration": 0.0},
               {"kind": "text", "t": 2.12, "duration": 0.0, "text": "four"},
               {"kind": "answer_end", "t": 2.15, "duration": 0.0}, {"kind": "barge_in", "t": 2.4, "duration": 0.0}]
    probs = np.r_[np.zeros(40), np.ones(110), np.zeros(100)]               # speech from 0.4 s to 1.5 s
    _check(plots.plot_stream_timeline(records, np.zeros(40000, np.float32), probs, 0.01, 0.5, out=tmp_path / "timeline"))
    texts = _texts(drawn[0])
    assert {"4 tok", "5 tok", "33 tokens (1.3 s audio) in 40 ms", "four", "barge-in",
            "first token 100 ms after the decision", "0.50 s of silence"} <= set(texts)
