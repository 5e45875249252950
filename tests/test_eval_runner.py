"""The evaluation runner on a tiny random model: every table entry is produced, results do not depend on
the batch size, and the tables / CLI read the written metrics back."""
import json
from dataclasses import replace

import av
import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from omni_core.config import load_config
from omni_core.eval import metrics as M
from omni_core.eval import tables
from omni_core.eval.paper_results import LABEL
from omni_core.eval.runner import evaluate, left_pad_batch, read_manifest

TINY = {
    "model": {"llm": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "num_kv_heads": 1, "intermediate_size": 64},
              "vision": {"image_size": 16, "patch_size": 4, "hidden_size": 32, "num_layers": 1, "num_heads": 2,
                         "intermediate_size": 64, "max_tiles": 2, "video_max_frames": 2},
              "audio": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "ffn_size": 64, "window_seconds": 1.0,
                        "downsample": 4}},
    "eval": {"max_samples_per_task": 3, "max_new_tokens": 5},
}
WORDS = "red blue green circle square seven three cat dog the a hello world digit shows reads".split()


def _media(root):
    (root / "media").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / "media/img.png")
    Image.fromarray(rng.integers(0, 255, (16, 40, 3), dtype=np.uint8)).save(root / "media/wide.png")
    sf.write(root / "media/speech.wav", (0.1 * rng.standard_normal(8000)).astype(np.float32), 16000)
    with av.open(str(root / "media/clip.mp4"), "w") as c:
        s = c.add_stream("mpeg4", rate=2)
        s.width, s.height, s.pix_fmt = 16, 16, "yuv420p"
        for _ in range(4):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), format="rgb24")
            c.mux(s.encode(frame))
        c.mux(s.encode())


PARTS = {
    "image_caption": [("image", "img.png"), ("text", "Describe the image.")],
    "image_vqa": [("image", "img.png"), ("text", "What colour is the shape?")],
    "ocr": [("image", "img.png"), ("text", "What does it read?")],
    "highres_read": [("image", "wide.png"), ("text", "Read the digits.")],
    "video_caption": [("video", "clip.mp4"), ("text", "Describe the video.")],
    "video_qa": [("video", "clip.mp4"), ("text", "Which digit moves?")],
    "asr": [("audio", "speech.wav"), ("text", "Transcribe the audio.")],
    "asr_real": [("audio", "speech.wav"), ("text", "Transcribe the audio.")],
    "asr_open": [("audio", "speech.wav"), ("text", "Transcribe the audio.")],
    "asr_heldout_voice": [("audio", "speech.wav"), ("text", "Transcribe the audio.")],
    "spoken_qa": [("audio", "speech.wav")],
    "omni_image_speech": [("image", "img.png"), ("audio", "speech.wav")],
    "omni_continuation": [("image", "img.png"), ("audio", "speech.wav"), ("text", "Continue.")],
    "video_narration_qa": [("video", "clip.mp4"), ("text", "What number does the voice say?")],
    "text_instruct": [("text", "Name a colour.")],
    "text_lm": [("text", "Continue the text.")],
}


def _record(task, split, i, rng):
    answer = " ".join(rng.choice(WORDS, size=int(rng.integers(1, 5))))
    content = [{"type": k, "path": f"media/{v}"} if k != "text" else {"type": "text", "text": v}
               for k, v in PARTS[task]]
    return {"id": f"{task}-{split}-{i}", "task": task, "split": split, "source": "test", "license": "CC0",
            "messages": [{"role": "user", "content": content},
                         {"role": "assistant", "content": [{"type": "text", "text": answer}]}]}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from omni_core.model import build_model, train_tokenizer
    from omni_core.processing import OmniProcessor

    root = tmp_path_factory.mktemp("eval")
    data = root / "data"
    _media(data)
    rng = np.random.default_rng(1)
    for split, n in (("train", 6), ("test", 5)):
        with open(data / f"{split}.jsonl", "w") as f:
            for task in M.TASKS:
                if split == "train" and task == "asr_real":     # real speech is test-only, like the real data
                    continue
                for i in range(n):
                    f.write(json.dumps(_record(task, split, i, rng)) + "\n")
    over = {**TINY, "data": {"root": str(data)}, "train": {"checkpoints_dir": str(root / "ckpt")},
            "eval": {**TINY["eval"], "metrics_dir": str(root / "metrics")}}
    cfg = load_config(overrides=over)
    tok = train_tokenizer([" ".join(WORDS)] * 20 + [p[1] for ps in PARTS.values() for p in ps if p[0] == "text"],
                          vocab_size=300)
    torch.manual_seed(0)
    model = build_model(cfg, tok).eval()
    with torch.no_grad():          # larger weights than the init: varied answers instead of one repeated token
        for prm in model.parameters():
            if prm.dim() >= 2:
                prm.normal_(0, 0.2)
    processor = OmniProcessor(tok, cfg.model)
    # the "before multimodal training" model: the same weights saved as stage 0, so perplexity must match
    for d in (root / "ckpt/0_text/model", root / "ckpt/2_sft/model"):
        model.save_pretrained(d)
        processor.save_pretrained(d)
    return cfg, model, processor, root


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def test_left_pad_batch_layout():
    a = {"input_ids": torch.tensor([5, 6, 7]), "attention_mask": torch.ones(3, dtype=torch.long),
         "pixel_values": torch.zeros(2, 3, 4, 4)}
    b = {"input_ids": torch.tensor([8]), "attention_mask": torch.ones(1, dtype=torch.long),
         "pixel_values": torch.ones(1, 3, 4, 4)}
    batch = left_pad_batch([a, b], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [0, 0, 8]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert batch["pixel_values"][:, 0, 0, 0].tolist() == [0.0, 0.0, 1.0]      # concatenated in sample order


def test_every_table_entry_and_batch_invariance(setup):
    cfg, model, processor, root = setup
    r1 = evaluate(cfg, root / "ckpt/2_sft/model", batch_size=1, model=model, processor=processor, write=False)
    r8 = evaluate(cfg, root / "ckpt/2_sft/model", batch_size=8, model=model, processor=processor)
    # every task of the registry lands in its table with every metric and a chance level
    for task, spec in M.TASKS.items():
        res = r8["tables"][spec.table]["tasks"][task]
        assert res["n"] == 3
        assert spec.metrics == ("perplexity",) or 1 <= res["distinct_answers"] <= 3, task
        for m in spec.metrics:
            assert np.isfinite(res[m]), (task, m)
            assert np.isfinite(res["chance"][m]), (task, m)
    text = r8["tables"]["text"]["tasks"]["text_lm"]
    assert text["perplexity_before"] == pytest.approx(text["perplexity"], rel=1e-5)   # same weights saved as 0_text
    assert 1 < text["perplexity"] < 10 * len(processor.tokenizer)
    # identical results across batch sizes 1 and 8 (left padding, greedy), on answers that vary
    assert r1["predictions"] == r8["predictions"]
    answers = [p["prediction"] for rows in r8["predictions"].values() for p in rows]
    assert len(set(answers)) >= 5 and all(answers)
    flat1, flat8 = _flat(r1["tables"]), _flat(r8["tables"])
    diff = {k: (flat1[k], flat8.get(k)) for k in flat1 if flat1[k] != flat8.get(k) and not k.endswith("batch_size")}
    assert not diff
    s = r8["settings"]
    assert (s["batch_size"], s["dtype"], s["attn_implementation"], s["seed"]) == (8, "float32", "sdpa", 0)
    assert s["cpu"] and s["cpu_capability"]      # fp32 results depend on the CPU's instruction set
    # metrics/*.json for DVC, read back by the tables
    written = {p.name for p in (root / "metrics").iterdir()}
    assert {"text.json", "image.json", "video.json", "audio.json", "omni.json", "predictions.jsonl"} <= written
    md = tables.render_markdown(tables.load_results(root / "metrics"))
    for title in ("## Text", "## Image", "## Video", "## Audio", "## Omni"):
        assert title in md
    assert LABEL in md and "`asr_real`" in md and "batch_size = 8" in md


def test_chance_baseline_is_fit_on_train(setup):
    cfg, *_ = setup
    train = read_manifest(cfg.data.root + "/train.jsonl")
    test = read_manifest(cfg.data.root + "/test.jsonl", ["asr_real"], 3)
    assert "asr_real" not in train and len(test["asr_real"]) == 3
    with pytest.raises(ValueError, match="unknown task"):
        bad = cfg.data.root + "/bad.jsonl"
        open(bad, "w").write(json.dumps({"task": "nope", "messages": []}) + "\n")
        read_manifest(bad)


def test_cli_writes_tables(setup, capsys):
    from omni_core.eval.__main__ import main

    cfg, _, _, root = setup
    sets = [f"data.root={cfg.data.root}", f"train.checkpoints_dir={root / 'ckpt'}",
            f"eval.metrics_dir={root / 'cli_metrics'}", "eval.max_samples_per_task=1", "eval.max_new_tokens=2"]
    sets += [f"model.{k}.{kk}={vv}" for k, v in TINY["model"].items() for kk, vv in v.items()]
    main(["--checkpoint", str(root / "ckpt/2_sft/model"), "--tasks", "image_vqa", "asr", "--batch-size", "2",
          *sum((["--set", s] for s in sets), [])])
    out = capsys.readouterr().out
    assert "| VQA (`image_vqa`) | Acc. (%) |" in out
    assert json.loads((root / "cli_metrics/audio.json").read_text())["tasks"]["asr"]["n"] == 1
    assert (root / "cli_metrics/tables.md").exists()


def test_lmms_core_matches_runner(setup):
    """The lmms-eval adapter, fed in-memory media the way lmms-eval passes them, answers like the runner."""
    from omni_core.eval.lmms_eval_adapter import OmniLMMsCore

    cfg, model, processor, root = setup
    core = OmniLMMsCore(model=model, processor=processor, cfg=cfg, batch_size=2)
    data = root / "data"
    test = read_manifest(data / "test.jsonl", ["image_vqa", "asr", "video_qa"], 2)
    expected = evaluate(cfg, "mem", tasks=["image_vqa", "asr", "video_qa"], model=model, processor=processor,
                        write=False)["predictions"]
    as_lmms = {"image": lambda p: Image.open(data / p), "video": lambda p: str(data / p),
               "audio": lambda p: dict(zip(("array", "sampling_rate"), sf.read(data / p, dtype="float32")))}
    convs, want = [], []
    for task, samples in test.items():
        for s, e in zip(samples, expected[task]):
            raw = [{"role": "user", "content": [c if c["type"] == "text" else {"type": c["type"],
                                                                               "url": as_lmms[c["type"]](c["path"])}
                                                for c in s.prompt[0]["content"]]}]
            convs.append(core.to_messages(raw))
            want.append(e["prediction"])
    got = core.generate(convs, [{"max_new_tokens": cfg.eval.max_new_tokens, "until": []}] * len(convs))
    assert got == want
    cut = core.generate(convs[:1], [{"max_new_tokens": cfg.eval.max_new_tokens, "until": [want[0][1:3]]}])
    assert cut == [want[0].split(want[0][1:3])[0].strip()]
    logp, greedy = core.score_continuation(convs[0], "hello world seven")
    assert logp < 0 and np.isfinite(logp) and greedy is False


def test_ablation_helpers(setup, tmp_path):
    from omni_core.eval import ablation

    cfg, model, processor, root = setup
    # a stage that trains the audio projector and starts from a checkpoint of another rate rebuilds the
    # Conv-GMLP, seeded, and keeps every other weight; the processor counts audio tokens at the new rate
    from omni_core.train.model_init import init_model

    rate2 = {**TINY, "model": {**TINY["model"], "audio": {**TINY["model"]["audio"], "downsample": 2}},
             "train": {**TINY.get("train", {}), "checkpoints_dir": str(root / "ckpt")}}
    variant_cfg = load_config(overrides=rate2)
    audio_stage = replace(variant_cfg.stage("1e_audio"), init_from="0_text")
    torch.manual_seed(1234)
    before = torch.rand(1)
    moved, proc = init_model(variant_cfg, audio_stage)
    assert torch.rand(1) != before                     # the global stream goes on as it would have (not reseeded)
    assert moved.config.audio_downsample == 2 and proc.model_cfg.audio.downsample == 2
    assert moved.audio_projector.gate.stride == (2,)
    theirs = model.state_dict()
    fresh = {k for k in moved.state_dict() if k.startswith("audio_projector.")}
    assert all(torch.equal(v, theirs[k]) for k, v in moved.state_dict().items() if k not in fresh)
    again = init_model(variant_cfg, audio_stage)[0].state_dict()
    assert all(torch.equal(moved.state_dict()[k], again[k]) for k in fresh)
    # a stage that would leave the new projector untrained refuses, naming the knob
    with pytest.raises(ValueError, match="model.audio.downsample = 2"):
        init_model(variant_cfg, replace(variant_cfg.stage("1a_image_caption"), init_from="0_text"))
    # the downsample result's interval: over the test clips, around the corpus WER
    lo, hi = M.score_ci("wer", ["a b c", "a x", "d e f g", "q"], ["a b c", "a b", "d e f g", "r s"])
    assert 0 <= lo <= 100 * 3 / 11 <= hi
    # staging variant: after the shared stand-ins (0_*), the joint stage spends the recipe's tokens on the union
    # of its mixtures
    tiny = load_config()
    joint = ablation.joint_stage(tiny)
    assert ablation.pretraining_stages(tiny) == ["0_text", "0_vision", "0_audio"] and joint["init_from"] == "0_audio"
    stages = [tiny.stages[s] for s in ablation.recipe_stages(tiny)[3:]]
    total = sum(s.steps * s.batch_size * s.grad_accum * s.seq_len for s in stages)
    per_step = joint["batch_size"] * joint["grad_accum"] * joint["seq_len"]
    assert total <= joint["steps"] * per_step < total + per_step
    assert set(joint["mixture"]) == {t for s in stages for t in s.mixture}
    assert joint["lr"]["llm"] == max(s.lr.get("llm", 0) for s in stages)
    assert joint["audio_projector_ctc_steps"] == tiny.stage("1e_audio").audio_projector_ctc_steps > 0   # same warm-up
    sets = ablation._dotted({"stages": {"joint": joint}, "train": {"checkpoints_dir": "x/y"}})
    assert "train.checkpoints_dir=\"x/y\"" in sets and any(s.startswith("stages.joint.mixture={") for s in sets)
    # the joint stage's overrides load as a valid config
    assert load_config(overrides={"stages": {"joint": joint}}).stage("joint").steps == joint["steps"]


def test_ablation_cli_names_the_staging_variant(monkeypatch):
    """``--variant`` picks the staging variant, and the command refuses to guess one."""
    from omni_core.eval import ablation

    calls = []
    monkeypatch.setattr(ablation, "staging_variant", lambda cfg, variant, *args: calls.append(variant) or {})
    ablation.main(["staging", "--variant", "joint"])
    assert calls == ["joint"]
    with pytest.raises(SystemExit, match="--variant staged"):
        ablation.main(["staging"])


def test_seed_variants_are_collected_and_summarised(tmp_path):
    """The seeds ablation: variants found by seed, each task's spread over the seeds and how often it beats chance."""
    from omni_core.eval import ablation

    assert ablation.variant_name("staged") == "staged" and ablation.variant_name("staged", 2) == "staged-seed2"
    with pytest.raises(ValueError, match="give one of them"):
        ablation.staging_variant(load_config(), "staged", tmp_path, reuse_checkpoint="x", seed=1)
    chance = {"image_vqa": 30.0, "asr": 90.0, "text_lm": 300.0}
    variants = {"staging/staged": (0, {"image_vqa": 35.0, "asr": 60.0, "text_lm": 30.0}),
            "staging/joint": (0, {"image_vqa": 99.0, "asr": 99.0, "text_lm": 999.0}),     # another variant: ignored
            "seeds/staged-seed1": (1, {"image_vqa": 30.0, "asr": 62.0, "text_lm": 33.0}),
            "seeds/staged-seed2": (2, {"image_vqa": 28.0, "asr": 91.0, "text_lm": 31.0})}
    for rel, (seed, measured) in variants.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        # the margin's interval: asr clearly ahead in seed 0 only; seed 2 (recorded before intervals) has none
        ci = {"asr": [12.0, 45.0] if seed == 0 else [-3.0, 50.0]} if seed != 2 else None
        (tmp_path / f"{rel}.json").write_text(json.dumps(
            {"arm": rel.split("/")[1].split("-")[0], "seed": seed, "measured": measured, "chance": chance,
             **({"margin_ci95": ci} if ci else {})}))
    got = ablation.collect_seeds([tmp_path / "staging", tmp_path / "seeds", tmp_path / "absent"])
    assert list(got["seeds"]) == [0, 1, 2] and got["seeds"][0]["image_vqa"] == 35.0 and got["chance"] == chance
    rows = {r["task"]: r for r in ablation.seed_summary(got["seeds"], got["chance"], got["margins"])}
    assert list(rows) == [t for t in ablation.TASKS if t in chance]
    vqa, asr, ppl = rows["image_vqa"], rows["asr"], rows["text_lm"]
    assert (vqa["min"], vqa["max"], vqa["above_chance"], vqa["worst_margin"]) == (28.0, 35.0, 1, -2.0)  # a tie is not a win
    assert (asr["above_chance"], asr["worst_margin"], asr["higher_is_better"]) == (2, -1.0, False)      # WER: lower wins
    assert ppl["above_chance"] == 3 and ppl["mean"] == pytest.approx(94 / 3)
    assert asr["clearly_above_chance"] == 1 and "clearly_above_chance" not in vqa   # no interval recorded for vqa


def test_probes_answer_one_test_prompt_per_task_as_the_evaluation_does(setup):
    """A stage's probes are the first test sample of each probe task, answered greedily like the evaluation."""
    from omni_core.eval.probes import PROBE_TASKS, answer_probes
    from omni_core.eval.runner import generate_answers, read_manifest

    cfg, model, processor, root = setup
    table = answer_probes(cfg, root / "ckpt/2_sft/model", device="cpu")
    assert list(table.index) == list(PROBE_TASKS)
    firsts = [read_manifest(root / "data/test.jsonl", [t], max_per_task=1)[t][0] for t in PROBE_TASKS]
    assert list(table["reference"]) == [s.reference for s in firsts]
    assert list(table["answer"]) == generate_answers(model, processor, firsts, root / "data", 1, cfg.eval.max_new_tokens)
    assert table["right"].dtype == bool
