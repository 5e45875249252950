"""Why spoken_qa fails on the small profile: does the model hear the question, and does it know the answer?

For each distinct spoken_qa test clip, the trained small model (``checkpoints/small/2_sft/model``) is asked three
ways, greedily: the clip with the task's prompt (what evaluation scores), the clip with asr's prompt "Transcribe
the audio." (does it hear the question?), and the question typed as text (does the LLM know the answer?). The
clip's question is recovered from the generator's pool (:func:`omni_core.data.tasks._spoken_questions`): the
question with the clip's answer closest to the transcript.

    python benchmarks/bench_spoken_qa.py [--checkpoint checkpoints/small/2_sft/model]

Writes ``benchmarks/results/spoken_qa_small.json``; about 2 min on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import jiwer
import torch

from omni_core.config import REPO_ROOT, load_config
from omni_core.data.tasks import _spoken_questions
from omni_core.eval.runner import Sample, cpu_model, generate_answers, load_checkpoint, read_manifest


def ask(content: list[dict], manifest: Path, i: int) -> Sample:
    prompt = [{"role": "user", "content": content}]
    return Sample(id=str(i), task="spoken_qa", prompt=prompt, messages=prompt, question="", reference="",
                  manifest=manifest)


def same(answer: str, reference: str) -> bool:
    return answer.strip(" .?!").lower() == reference


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="checkpoints/small/2_sft/model")
    ap.add_argument("--data", default="data/small", help="the small profile's prepared data")
    ap.add_argument("--out", default="benchmarks/results/spoken_qa_small.json")
    args = ap.parse_args(argv)
    root = Path(REPO_ROOT)
    manifest = root / args.data / "test.jsonl"
    cfg = load_config(root / "params.yaml", profile="small")
    model, processor = load_checkpoint(cfg, root / args.checkpoint, "cpu")
    clips: dict[str, Sample] = {}
    for s in read_manifest(manifest, ["spoken_qa"], known=cfg.task_registry())["spoken_qa"]:
        clips.setdefault(s.prompt[0]["content"][0]["path"], s)
    rows = list(clips.values())
    refs = [s.reference for s in rows]
    audio = [s.prompt[0]["content"][0] for s in rows]

    def answers(prompts: list[list[dict]], max_new_tokens: int) -> list[str]:
        return generate_answers(model, processor, [ask(p, manifest, i) for i, p in enumerate(prompts)], manifest.parent,
                                16, max_new_tokens)

    spoken = answers([s.prompt[0]["content"] for s in rows], 8)
    heard = answers([[a, {"type": "text", "text": "Transcribe the audio."}] for a in audio], 24)
    pool = _spoken_questions()
    questions = [min((q for q, a in pool if a == ref), key=lambda q: jiwer.wer(q, h.lower() or "-"))
                 for h, ref in zip(heard, refs)]
    typed = answers([[{"type": "text", "text": q}] for q in questions], 8)
    result = {
        "checkpoint": args.checkpoint, "cpu": cpu_model(), "torch_threads": torch.get_num_threads(),
        "clips": len(rows),
        "answered_from_speech": sum(map(same, spoken, refs)),
        "answered_when_typed": sum(map(same, typed, refs)),
        "question_heard_exactly": sum(q == h.lower().strip(" .?!") for q, h in zip(questions, heard)),
        "question_transcript_wer": round(100 * jiwer.wer(questions, [h.lower() or "-" for h in heard]), 1),
        "examples": [{"question": q, "heard": h, "answer_from_speech": s, "answer_typed": t, "reference": r}
                     for q, h, s, t, r in list(zip(questions, heard, spoken, typed, refs))[:8]],
    }
    (root / args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
