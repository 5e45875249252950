"""The same few test prompts, one per modality, answered by each stage's checkpoint.

Notebooks 02 and 03 end every stage with them, so the curriculum shows in what the model says: the LM
pretraining gives text answers, stage 1a-1c images, 1d videos, 1e speech, 1f and SFT their mixtures. A
probe is the first test sample of its task (test samples are never trained on); the answer is greedy, as in
the evaluation (`runner.generate_answers`).
"""
from __future__ import annotations

from pathlib import Path

from omni_core.config import Config
from omni_core.eval.metrics import answers_match
from omni_core.eval.runner import generate_answers, load_checkpoint, read_manifest

# one task per modality, and one that mixes two: text, image, video, speech, image + speech
PROBE_TASKS = ("text_instruct", "image_vqa", "video_qa", "asr", "omni_image_speech")


def answer_probes(cfg: Config, checkpoint_dir: str | Path, tasks: tuple[str, ...] = PROBE_TASKS,
                  device: str | None = None):
    """A pandas DataFrame, one row per probe task the test split holds: the question, the reference, the
    checkpoint's greedy answer and whether it matches (exact match after the evaluation's normalisation)."""
    import pandas as pd

    root = Path(cfg.data.root)
    samples = [found[0] for found in read_manifest(root / "test.jsonl", tasks, max_per_task=1).values()]
    samples.sort(key=lambda s: tasks.index(s.task))
    model, processor = load_checkpoint(cfg, checkpoint_dir, device)
    answers = generate_answers(model, processor, samples, root, batch_size=1,   # one modality mix per batch
                               max_new_tokens=cfg.eval.max_new_tokens)
    rows = [{"task": s.task, "question": s.question, "reference": s.reference, "answer": a,
             "right": answers_match(a, s.reference)} for s, a in zip(samples, answers)]
    return pd.DataFrame(rows).set_index("task")
