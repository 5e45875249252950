"""Evaluate a checkpoint on every task's test split and write ``metrics/<table>.json``.

Decoding is batched greedy (left padding, KV cache) with a fixed batch size, dtype, attention
implementation and seed, all recorded beside the numbers: peers' users fight scores that move with
batch size or attention kernel, so ours are checked to be identical at batch size 1 and 8 on CPU.

Per task: the metrics its declaration names (omni_core/task_registry.py: the built-ins, then params.yaml
``tasks:``) on the model's answers, and the same
metrics for the task's trivial baseline (fit on the training split), with a paired-bootstrap 95 % interval
of the model's margin over it (a few hundred test samples still leave a few points to chance). Held-out text perplexity is
measured on the checkpoint and on the model *before* multimodal training (``checkpoints/0_text``,
or the LLM as loaded for profiles that start from a pretrained one), which is the paper's claim
that multimodal training keeps the text ability.
"""
from __future__ import annotations

import json
import logging
import platform
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from omni_core.config import Config
from omni_core.data.manifest import iter_manifest
from omni_core.model.labels import IGNORE_INDEX
from omni_core.task_registry import TaskSpec, declared, undeclared_task

from .metrics import (
    TABLES,
    answer_key,
    baseline_answers,
    margin_ci,
    perplexity,
    score,
    task_normalizer,
    unigram_perplexity,
)

log = logging.getLogger(__name__)
MEDIA_KEYS = ("pixel_values", "video_values", "audio_features", "audio_window_counts", "audio_token_counts")


# -------------------------------------------------------------------------------------------- samples
@dataclass
class Sample:
    """One test conversation split into the prompt (every turn before the last answer) and its reference."""
    id: str
    task: str
    prompt: list[dict]
    messages: list[dict]
    question: str
    reference: str
    manifest: Path | None = None    # where it was read; its media paths are relative to its folder
    source: str = ""                # the record's source (e.g. pydoc, fortune, task-sentences)

    @property
    def base_dir(self) -> Path | None:
        return self.manifest.parent if self.manifest is not None else None


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return " ".join(p.get("text", "") for p in content if p.get("type") == "text").strip()


def to_sample(record: dict, where: str, manifest: Path | None = None) -> Sample:
    """Split a manifest record; the last message must be the assistant's answer."""
    msgs = record.get("messages") or []
    if not msgs or msgs[-1].get("role") != "assistant":
        raise ValueError(f"{where}: record {record.get('id')!r} must end with an assistant message (the reference); "
                         "fix the manifest or re-run `python -m omni_core.data prepare`")
    question = " ".join(_text(m["content"]) for m in msgs[:-1] if m.get("role") == "user")
    return Sample(str(record.get("id")), record["task"], msgs[:-1], msgs, question, _text(msgs[-1]["content"]),
                  manifest, str(record.get("source", "")))


def read_manifest(path: str | Path, tasks: Iterable[str] | None = None, max_per_task: int | None = None,
                  known: Mapping[str, TaskSpec] | None = None) -> dict[str, list[Sample]]:
    """Samples of ``path`` grouped by task, in file order, at most ``max_per_task`` each. ``known``: the declared
    tasks (``Config.task_registry()``; None = the active registry)."""
    path = Path(path)
    known = declared() if known is None else known
    if not path.exists():
        raise FileNotFoundError(f"{path}: no manifest; run `python -m omni_core.data prepare` first")
    wanted = set(tasks) if tasks is not None else None
    out: dict[str, list[Sample]] = defaultdict(list)
    for i, rec in iter_manifest(path):
        task = rec.get("task")
        if task not in known:
            raise ValueError(f"{path}:{i}: {undeclared_task(str(task), known)}")
        if (wanted is None or task in wanted) and (max_per_task is None or len(out[task]) < max_per_task):
            out[task].append(to_sample(rec, f"{path}:{i}", path))
    return dict(out)


def split_manifests(cfg: Config, split: str) -> list[Path]:
    """The manifests of ``split``: the prepared data's, then each data source's that has one (``data.sources``).
    The prepared one may be missing only when a source gives the split."""
    prepared = Path(cfg.data.root) / f"{split}.jsonl"
    own = [Path(getattr(src, split)) for src in cfg.data.sources if getattr(src, split, None)]
    return ([prepared] if prepared.exists() or not own else []) + own


def read_split(cfg: Config, split: str, tasks: Iterable[str] | None = None, max_per_task: int | None = None,
               known: Mapping[str, TaskSpec] | None = None) -> dict[str, list[Sample]]:
    """:func:`read_manifest` over every manifest of ``split`` (:func:`split_manifests`), grouped by task, in
    manifest order; ``max_per_task`` caps each task over all of them."""
    out: dict[str, list[Sample]] = defaultdict(list)
    for path in split_manifests(cfg, split):
        for task, samples in read_manifest(path, tasks, max_per_task, known).items():
            out[task] += samples
    return {task: samples[:max_per_task] for task, samples in out.items()}


# ---------------------------------------------------------------------------------------- batching
def left_pad_batch(features: Sequence[dict[str, torch.Tensor]], pad_id: int) -> dict[str, torch.Tensor]:
    """Stack processor outputs with padding on the left (so every row's next token is at the end) and
    concatenate media keys in sample order (the layout the model expects, see docs/interfaces.md)."""
    width = max(f["input_ids"].shape[-1] for f in features)
    ids = torch.full((len(features), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(features), width), dtype=torch.long)
    for i, f in enumerate(features):
        n = f["input_ids"].shape[-1]
        ids[i, width - n:] = f["input_ids"].reshape(-1)
        mask[i, width - n:] = f["attention_mask"].reshape(-1) if "attention_mask" in f else 1
    batch = {"input_ids": ids, "attention_mask": mask}
    for key in MEDIA_KEYS:
        parts = [f[key] for f in features if key in f]
        if parts:
            batch[key] = torch.cat(parts, dim=0)
    return batch


def _chunks(items: Sequence, size: int) -> Iterable[Sequence]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _model_dtype(model) -> torch.dtype:
    return next(model.parameters()).dtype


def _to(batch: dict[str, torch.Tensor], model) -> dict[str, torch.Tensor]:
    dev, dt = next(model.parameters()).device, _model_dtype(model)
    return {k: v.to(dev, dtype=dt) if v.is_floating_point() else v.to(dev) for k, v in batch.items()}


def _pad_id(tokenizer) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ValueError("the tokenizer has neither a pad nor an eos token; set tokenizer.pad_token in data prep")
    return int(pad)


def suppressed_token_ids(tokenizer) -> list[int]:
    """Tokens greedy decoding may never emit: media placeholders (they need features the answer does not
    have) and the turn opener. An undertrained model can otherwise crash or loop on them."""
    from omni_core.model.tokenizer import IM_START, MEDIA_TOKENS

    return sorted(tokenizer.convert_tokens_to_ids([IM_START, *MEDIA_TOKENS]))


@torch.no_grad()
def generate_answers(model, processor, samples: Sequence[Sample], base_dir: str | Path, batch_size: int,
                     max_new_tokens: int) -> list[str]:
    """Greedy answers for ``samples`` (prompts end with the assistant generation prompt)."""
    tok = processor.tokenizer
    pad = _pad_id(tok)
    suppress = suppressed_token_ids(tok)
    answers: list[str] = []
    for chunk in _chunks(samples, batch_size):
        feats = [processor(s.prompt, base_dir=s.base_dir or base_dir, add_generation_prompt=True) for s in chunk]
        batch = _to(left_pad_batch(feats, pad), model)
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                             pad_token_id=pad, eos_token_id=tok.eos_token_id, suppress_tokens=suppress,
                             use_cache=True)
        new = out[:, batch["input_ids"].shape[1]:]
        answers += [t.strip() for t in tok.batch_decode(new, skip_special_tokens=True)]
    return answers


def _label_tokens(feat: dict[str, torch.Tensor]) -> torch.Tensor:
    """Token ids the model is scored on: the supervised (assistant) tokens, shifted like causal LM loss."""
    labels = feat["labels"].reshape(-1)[1:]
    return labels[labels != IGNORE_INDEX]


@torch.no_grad()
def sample_nll(model, processor, samples: Sequence[Sample], base_dir: str | Path) -> list[tuple[float, int]]:
    """Each sample's summed negative log-likelihood of its assistant tokens, and their count.

    One sample per forward pass: padded batches change the shapes of the matmuls and with them the last
    bits of the sum, and perplexity must not depend on the eval batch size (it is cheap: no decoding).
    Logits are computed here from the full sequence, so the model's label convention does not matter.
    """
    out = []
    for s in samples:
        feat = processor(s.messages, base_dir=s.base_dir or base_dir)
        batch = _to({"input_ids": feat["input_ids"][None], "attention_mask": feat["attention_mask"][None]}, model)
        logits = model(**batch).logits[0, :-1].float()
        target = feat["labels"][1:].to(logits.device)
        keep = target != IGNORE_INDEX
        out.append((float(torch.nn.functional.cross_entropy(logits[keep], target[keep], reduction="sum")), int(keep.sum())))
    return out


def _summed(nll: Sequence[tuple[float, int]]) -> tuple[float, int]:
    total, count = 0.0, 0
    for n, c in nll:                 # in sample order: the same sum, to the last bit, as one running total
        total += n
        count += c
    return total, count


# --------------------------------------------------------------------------------------------- loading
def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_checkpoint(cfg: Config, checkpoint_dir: str | Path, device: str | None = None):
    """(model, processor) from an HF checkpoint directory written by the trainer, in eval mode on ``device``
    (default: the GPU when there is one)."""
    from omni_core.model import OmniForConditionalGeneration
    from omni_core.model.attention import resolve_attn
    from omni_core.processing import OmniProcessor

    path = Path(checkpoint_dir)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path}: no checkpoint (config.json missing); train first, e.g. "
                                f"`python -m omni_core.train --stage {cfg.eval.checkpoint}`")
    model = OmniForConditionalGeneration.from_pretrained(
        path, dtype=getattr(torch, cfg.model.dtype), attn_implementation=resolve_attn(cfg.model.attn_implementation))
    return model.to(device or default_device()).eval(), OmniProcessor.from_pretrained(path)


def before_model(cfg: Config, processor, device: str):
    """The model before multimodal training: ``checkpoints/0_text/model`` when stage 0 runs, else a model
    built from the config (its LLM as loaded from ``model.llm.path``). None when neither exists."""
    stage0 = cfg.stages.get("0_text")
    if stage0 is not None and stage0.enabled:
        path = Path(cfg.train.checkpoints_dir) / "0_text" / "model"
        return (load_checkpoint(cfg, path, device)[0], str(path)) if (path / "config.json").exists() else (None, None)
    if cfg.model.llm.path:
        from dataclasses import replace

        from omni_core.model import build_model

        # text perplexity runs the LLM alone: the pretrained SigLIP and Whisper are not loaded a second time
        # (random towers at params.yaml's small sizes stand in); build_model falls back from flash_attention_2
        m = cfg.model
        text_only = replace(cfg, model=replace(m, vision=replace(m.vision, path=None), audio=replace(m.audio, path=None)))
        model = build_model(text_only, processor.tokenizer).to(device, dtype=getattr(torch, cfg.model.dtype))
        return model.eval(), cfg.model.llm.path
    return None, None


# ------------------------------------------------------------------------------------------ evaluate
def _baseline_inputs(train: dict[str, list[Sample]], spec: TaskSpec, task: str) -> tuple[list[str], list[str]]:
    src = spec.chance_from or task
    rows = train.get(src, [])
    return [s.question for s in rows], [s.reference for s in rows]


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo; else what `platform` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def settings(cfg: Config, checkpoint_dir: str | Path, split: str, batch_size: int, model) -> dict[str, Any]:
    return {"checkpoint": str(checkpoint_dir), "profile": cfg.profile, "split": split, "batch_size": batch_size,
            "dtype": str(_model_dtype(model)).replace("torch.", ""),
            "attn_implementation": getattr(model.config, "_attn_implementation", cfg.model.attn_implementation),
            "seed": cfg.eval.seed, "max_new_tokens": cfg.eval.max_new_tokens, "decoding": "greedy",
            "device": str(next(model.parameters()).device), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "machine": platform.machine(),
            # fp32 kernels differ by instruction set (AVX2 vs AVX-512 sum in different orders), so the same
            # seed trains a different draw on another CPU type; results reproduce exactly on the same type
            "cpu": cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def evaluate(cfg: Config, checkpoint_dir: str | Path, split: str = "test", tasks: Iterable[str] | None = None,
             batch_size: int | None = None, write: bool = True, model=None, processor=None,
             device: str | None = None) -> dict:
    """Evaluate ``checkpoint_dir`` on ``data/prepared/<split>.jsonl`` and each data source's ``split`` manifest
    (``data.sources``; chance baselines fit on their train manifests alike); return and (``write``) save the results.

    Returns ``{"settings": {...}, "tables": {table: {"settings", "tasks": {task: {metric: value, "chance":
    {metric: value}, "margin_ci95": {metric: [low, high]}, "baseline": str, "n": int, "distinct_answers": int}}}},
    "predictions": {task: [...]}}`` (``margin_ci95``: :func:`omni_core.eval.metrics.margin_ci`). ``model`` /
    ``processor`` skip loading (tests, notebooks holding a model already). ``device`` defaults to the GPU
    when there is one; batch-size invariance is checked on CPU in fp32 (GPU kernels may differ in the
    last bits across batch shapes, which greedy decoding can amplify).
    """
    tasks = list(tasks) if tasks is not None else None
    specs = cfg.task_registry()            # the built-ins, then params.yaml `tasks:`
    unknown = sorted(set(tasks or ()) - set(specs))
    if unknown:
        raise ValueError(f"evaluate(tasks=...): {undeclared_task(unknown[0], specs)}")
    torch.manual_seed(cfg.eval.seed)
    batch_size = batch_size or cfg.eval.batch_size
    if model is None or processor is None:
        model, processor = load_checkpoint(cfg, checkpoint_dir, device)
    model.eval()
    root = Path(cfg.data.root)
    test = read_split(cfg, split, tasks, cfg.eval.max_samples_per_task, specs)
    train = read_split(cfg, "train", None, None, specs) if all(p.exists() for p in split_manifests(cfg, "train")) else {}
    if not test:
        raise ValueError(f"{', '.join(map(str, split_manifests(cfg, split)))}: no samples for tasks "
                         f"{sorted(tasks or specs)}")
    run = settings(cfg, checkpoint_dir, split, batch_size, model)
    tables: dict[str, dict] = {}
    predictions: dict[str, list[dict]] = {}
    for task in [t for t in specs if t in test]:   # the paper's order (user tasks after it), not the file's
        samples, spec = test[task], specs[task]
        log.info("evaluating %s on %d samples", task, len(samples))
        if spec.metrics == ("perplexity",):
            res = _perplexity_entry(cfg, model, processor, samples, train.get(task, []), root)
        else:
            answers = generate_answers(model, processor, samples, root, batch_size, cfg.eval.max_new_tokens)
            refs = [s.reference for s in samples]
            # a model that gives every sample the same answer has learned the task's prior, not the task
            res = {**score(task, answers, refs, specs), "n": len(samples),
                   "distinct_answers": len({answer_key(spec)(a) for a in answers})}
            q_tr, a_tr = _baseline_inputs(train, spec, task)
            if a_tr:
                base, res["baseline"] = baseline_answers(task, (q_tr, a_tr), [s.question for s in samples], specs)
                res["chance"] = score(task, base, refs, specs)
                # how far a resampled test set could move the margin: "clearly above chance" needs low > 0;
                # samples with the same prompt (the same clip and question) are resampled as one item
                items = [json.dumps(s.prompt, sort_keys=True) for s in samples]
                cis = {m: margin_ci(m, answers, base, refs, seed=cfg.eval.seed, groups=items,
                                    normalize=task_normalizer(spec)) for m in spec.metrics}
                res["margin_ci95"] = {m: list(ci) if ci is not None else None for m, ci in cis.items()}
            # a data source's sample names its manifest (the figures find its media there)
            predictions[task] = [{"id": s.id, "prediction": a, "reference": s.reference,
                                  **({"manifest": str(s.manifest)} if s.base_dir not in (None, root) else {})}
                                 for s, a in zip(samples, answers)]
        tables.setdefault(spec.table, {"settings": run, "tasks": {}})["tasks"][task] = res
    results = {"settings": run, "tables": tables, "predictions": predictions}
    if write:
        write_results(results, cfg.eval.metrics_dir)
    return results


def _perplexity_entry(cfg: Config, model, processor, samples, train_samples, root) -> dict:
    after = sample_nll(model, processor, samples, root)
    nll, n = _summed(after)
    res: dict[str, Any] = {"perplexity": perplexity(nll, n), "n": len(samples), "tokens": n}
    before, where = before_model(cfg, processor, str(next(model.parameters()).device))
    prior = sample_nll(before, processor, samples, root) if before is not None else None
    if prior is not None:
        res["perplexity_before"] = perplexity(*_summed(prior))
        res["before_checkpoint"] = where
    if cfg.eval.perplexity_by_source:       # e.g. the real prose alone, which no stage's text resembles
        by: dict[str, list[int]] = {}
        for i, s in enumerate(samples):
            by.setdefault(s.source, []).append(i)
        res["perplexity_by_source"] = {
            src: {"perplexity": perplexity(*_summed([after[i] for i in idx])), "n": len(idx),
                  **({"perplexity_before": perplexity(*_summed([prior[i] for i in idx]))} if prior is not None else {})}
            for src, idx in sorted(by.items())}
    if train_samples:
        tr = [_label_tokens(processor(s.messages, base_dir=s.base_dir or root)).tolist() for s in train_samples]
        te = [_label_tokens(processor(s.messages, base_dir=s.base_dir or root)).tolist() for s in samples]
        res["chance"] = {"perplexity": unigram_perplexity(tr, te, len(processor.tokenizer))}
        res["baseline"] = "add-one unigram model of the training split's tokens"
    return res


def write_results(results: dict, metrics_dir: str | Path) -> list[Path]:
    """``metrics/<table>.json`` for every table (DVC metrics) plus ``metrics/predictions.jsonl``."""
    out = Path(metrics_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for table in TABLES:
        if table in results["tables"]:
            f = out / f"{table}.json"
            f.write_text(json.dumps(results["tables"][table], indent=2) + "\n")
            written.append(f)
    with open(out / "predictions.jsonl", "w") as f:
        for task, rows in results.get("predictions", {}).items():
            for r in rows:
                f.write(json.dumps({"task": task, **r}) + "\n")
    return written + [out / "predictions.jsonl"]
