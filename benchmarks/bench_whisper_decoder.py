"""The reference the small profile's speech results are read against: Whisper tiny.en's own decoder on the same
held-out clips the small model transcribes through its LLM.

The small profile keeps only Whisper's encoder; its LLM learns to transcribe from the projected encoder frames.
Here the whole converted Whisper (``models/small/whisper-tiny-en``, encoder and decoder) transcribes the test
split's speech tasks greedily, scored by the same metric code as ``metrics/small/audio.json``
(:func:`omni_core.eval.metrics.score`), and the JSON puts the two side by side:

    python benchmarks/bench_whisper_decoder.py [--tasks asr_real asr_open asr_heldout_voice] [--max-clips 200]

Writes ``benchmarks/results/whisper_decoder.json``. Needs ``make repro PROFILE=small``'s data and weights;
about 6 min on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402
from transformers import WhisperForConditionalGeneration, WhisperTokenizerFast  # noqa: E402

from omni_core.config import REPO_ROOT, load_config  # noqa: E402
from omni_core.eval.metrics import score  # noqa: E402
from omni_core.eval.runner import cpu_model, read_manifest  # noqa: E402
from omni_core.model.audio import SAMPLING_RATE, feature_extractor  # noqa: E402
from omni_core.processing import load_audio  # noqa: E402

# tiny.en's decoder prompt: <|startoftranscript|><|notimestamps|> (an English-only model has no language token)
PROMPT = ("<|startoftranscript|>", "<|notimestamps|>")


@torch.no_grad()
def transcribe(model: WhisperForConditionalGeneration, tokenizer: WhisperTokenizerFast, extractor, wav,
               max_new_tokens: int) -> str:
    """Greedy decoding of one clip, as the small model's evaluation decodes."""
    features = extractor(wav, sampling_rate=SAMPLING_RATE, return_tensors="pt").input_features
    ids = torch.tensor([tokenizer.convert_tokens_to_ids(list(PROMPT))])
    encoder_out = model.model.encoder(features)
    past = None
    out: list[int] = []
    step = ids
    for _ in range(max_new_tokens):
        o = model(encoder_outputs=encoder_out, decoder_input_ids=step, past_key_values=past, use_cache=True)
        past = o.past_key_values
        nxt = int(o.logits[0, -1].argmax())
        if nxt == tokenizer.eos_token_id:
            break
        out.append(nxt)
        step = torch.tensor([[nxt]])
    return tokenizer.decode(out, skip_special_tokens=True).strip()


def audio_part(sample) -> dict:
    return next(p for p in sample.prompt[0]["content"] if p["type"] == "audio")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--whisper", default="models/small/whisper-tiny-en")
    ap.add_argument("--data", default="data/small", help="the small profile's prepared data")
    ap.add_argument("--metrics", default="metrics/small/audio.json", help="the small model's scores, for the side by side")
    ap.add_argument("--tasks", nargs="+", default=["asr_real", "asr_open", "asr_heldout_voice"])
    ap.add_argument("--max-clips", type=int, default=200, help="per task (evaluation's eval.max_samples_per_task)")
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--out", default="benchmarks/results/whisper_decoder.json")
    args = ap.parse_args(argv)
    root = Path(REPO_ROOT)
    data = root / args.data
    if not (data / "test.jsonl").is_file():
        raise SystemExit(f"{data / 'test.jsonl'} is missing: run `make repro PROFILE=small` (or its prepare_data "
                         "stage) first")
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    model = WhisperForConditionalGeneration.from_pretrained(root / args.whisper).eval()
    tokenizer = WhisperTokenizerFast.from_pretrained(root / args.whisper)
    extractor = feature_extractor(model.config.num_mel_bins)
    small = json.loads((root / args.metrics).read_text())["tasks"] if (root / args.metrics).is_file() else {}
    known = load_config(root / "params.yaml", profile="small").task_registry()
    by_task = read_manifest(data / "test.jsonl", args.tasks, args.max_clips, known)
    result = {"whisper": args.whisper, "decoding": "greedy", "cpu": cpu_model(), "tasks": {}}
    for task in args.tasks:
        samples = by_task.get(task, [])
        preds = [transcribe(model, tokenizer, extractor, load_audio(audio_part(s), data), args.max_new_tokens)
                 for s in tqdm(samples, desc=f"whisper tiny.en: {task}")]
        refs = [s.reference for s in samples]
        scores = score(task, preds, refs)
        result["tasks"][task] = {"n": len(samples), "whisper_decoder": {m: round(v, 2) for m, v in scores.items()},
                                 "small_model_through_llm": {m: round(small[task][m], 2) for m in scores
                                                             if m in small.get(task, {})},
                                 "examples": [{"reference": r, "whisper": p} for r, p in list(zip(refs, preds))[:3]]}
    (root / args.out).parent.mkdir(parents=True, exist_ok=True)
    (root / args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
