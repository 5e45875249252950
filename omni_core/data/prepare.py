"""Build the prepared data directory: manifests, media, tokenizer, data card.

``prepare(cfg, out)`` is what notebook 01 and ``python -m omni_core.data prepare`` call. The same
params and seed give byte-identical files, so DVC does not rerun the stages that depend on them.

Beside the folder it writes ``<out>.sha256`` (``sha256sum`` format, checkable with
``cd data/prepared && sha256sum -c ../prepared.sha256``). Later pipeline stages depend on that one file
instead of the folder: DVC would otherwise re-walk its ~10,000 files once per stage on every ``dvc repro``,
while ``prepare_data`` itself still notices any change to the folder and rebuilds it.
"""
from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path

from ..config import Config, DataConfig
from .card import write_card
from .manifest import EVAL_ONLY_TASKS, OPT_IN_TASKS, SPLITS, TASKS, Sample, sample_text, write_manifest
from .tasks import BUILDERS, BuildContext

OWNED = ("media", "tokenizer", "train.jsonl", "val.jsonl", "test.jsonl", "card.md", "stats.json")


SPEECH_FIRST = ("asr", "asr_open", "asr_heldout_voice", "spoken_qa", "omni_image_speech", "omni_continuation",
                "video_caption", "video_qa", "video_narration_qa")


def sample_count(cfg: DataConfig, task: str, split: str) -> int:
    """Samples of ``task`` in ``split``: ``data.task_samples`` where it names them, else ``<split>_per_task``;
    an opt-in task has none unless named."""
    named = cfg.task_samples.get(task)
    if named is None and task in OPT_IN_TASKS:
        return 0
    return (named or {}).get(split, getattr(cfg, f"{split}_per_task"))


def build_samples(ctx: BuildContext, tasks=TASKS + EVAL_ONLY_TASKS) -> dict[str, list[Sample]]:
    """All tasks' samples per split, in ``tasks`` order; media are written under ``ctx.out``.

    Tasks with speech are built first so the flite pool works while images are drawn."""
    built = {}
    for task in sorted(tasks, key=lambda t: t not in SPEECH_FIRST):
        for split in SPLITS:
            n = sample_count(ctx.cfg, task, split)
            built[task, split] = BUILDERS[task](ctx, split, n) if n else []
    ctx.flush()
    return {split: [s for task in tasks for s in built[task, split]] for split in SPLITS}


def train_tokenizer_on(samples: list[Sample], cfg: Config, out: Path) -> str:
    """Train the tiny profile's tokenizer on the train texts and save it in ``out``; returns a status."""
    if cfg.model.tokenizer.path is not None:
        return f"skipped: model.tokenizer.path = {cfg.model.tokenizer.path}"
    try:
        from ..model.tokenizer import train_tokenizer
    except ImportError as e:       # written by another part of the package; data stays usable without it
        return f"skipped: omni_core.model.tokenizer.train_tokenizer is not importable ({e})"
    tok = train_tokenizer([sample_text(s) for s in samples], cfg.model.tokenizer.vocab_size)
    tok.save_pretrained(str(out))
    return f"trained: vocab {len(tok)}"


def prepare(cfg: Config, out: str | Path | None = None, workers: int = 2) -> dict:
    """Write ``{train,val,test}.jsonl``, ``media/``, ``tokenizer/``, ``card.md``, ``stats.json``."""
    t0 = time.perf_counter()
    out = Path(out or cfg.data.root)
    out.mkdir(parents=True, exist_ok=True)
    for name in OWNED:                   # stale files from other params would break byte-identity
        p = out / name
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    ctx = BuildContext(cfg.data, out, cfg.model.audio.sampling_rate, workers)
    splits = build_samples(ctx)
    for split, samples in splits.items():
        write_manifest(out / f"{split}.jsonl", samples)
    t_data = time.perf_counter() - t0
    tok = train_tokenizer_on(splits["train"], cfg, out / "tokenizer")
    stats = write_card(out, splits, tokenizer=tok)
    sums = write_checksums(out)
    return {"out": str(out), "checksums": str(sums), "seconds": round(time.perf_counter() - t0, 2), "data_seconds": round(t_data, 2),
            "tokenizer": tok, "samples": {s: len(v) for s, v in splits.items()}, "tasks": len(stats["tasks"])}


def checksums_path(folder: str | Path) -> Path:
    """``data/prepared`` -> ``data/prepared.sha256``."""
    folder = Path(folder)
    return folder.with_name(folder.name + ".sha256")


def write_checksums(folder: str | Path) -> Path:
    """Write one ``<sha256>  <path>`` line per file under ``folder`` (sorted) to ``checksums_path(folder)``."""
    folder = Path(folder)
    lines = []
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        with open(f, "rb") as fh:
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
        lines.append(f"{digest}  {f.relative_to(folder).as_posix()}\n")
    out = checksums_path(folder)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("".join(lines))
    tmp.replace(out)
    return out
