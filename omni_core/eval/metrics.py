"""Metric functions and trivial baselines, on plain strings (no model in here).

Scales follow the paper's tables: accuracy, WER and CER are percentages (0-100), BLEU and chrF are
sacrebleu's 0-100 scores, perplexity is exp(mean NLL per token).

Normalisation (documented because every reported number depends on it):

- answers (:func:`normalize_answer`, used by accuracy / exact match): Unicode NFKC, lower case,
  punctuation -> space, the English articles "a", "an", "the" dropped, whitespace collapsed. This is
  the SQuAD / VQA convention: "A seven." and "seven" match, "seven" and "7" do not.
- transcripts (:func:`normalize_transcript`, used by WER / CER and BLEU / chrF): NFKC, lower case,
  punctuation removed (apostrophes inside words kept: "don't"), whitespace collapsed. Close to
  Whisper's ``BasicTextNormalizer``; articles are words here and count as errors.
- strict (:func:`normalize_strict`, used by ``exact`` for text instructions, where case and single
  letters are the answer: "STORE", "p a i r"): NFKC, whitespace collapsed, one trailing ". ! ?" dropped.

A task declared with ``normalize:`` other than ``metric`` (omni_core/task_registry.py) uses that one
(:data:`NORMALIZERS`; ``none`` strips the ends only) in every metric and baseline instead.

Every task also gets a *chance* level computed from the data by :func:`chance_level`: the most common
answer (accuracy tasks), the most common answer per question (VQA), or the one training sentence that
scores best against the training references (ASR, captioning). Baselines are fit on the training split
and scored on the test split, like the model.
"""
from __future__ import annotations

import functools
import math
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass

import jiwer
import numpy as np
import sacrebleu

from omni_core.task_registry import BUILTIN, TaskSpec, declared
from omni_core.task_registry import TABLES as TABLES

Normalizer = Callable[[str], str]

_ARTICLES = {"a", "an", "the"}
_PUNCT = re.compile(r"[^\w\s']|_")
_QUOTES = re.compile(r"(?<!\w)'|'(?!\w)")      # apostrophes that are quotes, not inside a word
_SPACE = re.compile(r"\s+")


# ------------------------------------------------------------------------------------ normalisation
def normalize_transcript(text: str) -> str:
    """NFKC, lower case, punctuation removed (word-internal apostrophes kept), whitespace collapsed."""
    text = unicodedata.normalize("NFKC", str(text)).lower()
    text = _QUOTES.sub(" ", _PUNCT.sub(" ", text))
    return _SPACE.sub(" ", text).strip()


def normalize_strict(text: str) -> str:
    """NFKC, whitespace collapsed, a trailing sentence mark dropped; case and every word kept."""
    text = _SPACE.sub(" ", unicodedata.normalize("NFKC", str(text))).strip()
    return text[:-1].rstrip() if text[-1:] in ".!?" else text


def normalize_answer(text: str) -> str:
    """:func:`normalize_transcript` plus the articles "a", "an", "the" dropped (SQuAD / VQA style)."""
    return " ".join(w for w in normalize_transcript(text).split() if w not in _ARTICLES)


def normalize_none(text: str) -> str:
    """The text as given, only its ends stripped (a declared task's ``normalize: none``)."""
    return str(text).strip()


# a task's `normalize:` -> the function; "metric" (every built-in) = each metric's own, so it is absent here
NORMALIZERS: dict[str, Normalizer] = {"answer": normalize_answer, "transcript": normalize_transcript,
                                      "strict": normalize_strict, "none": normalize_none}


# ------------------------------------------------------------------------------------------ metrics
def _check(preds: Sequence[str], refs: Sequence[str], name: str) -> None:
    if len(preds) != len(refs):
        raise ValueError(f"{name}: {len(preds)} predictions but {len(refs)} references; pass one of each per sample")
    if not refs:
        raise ValueError(f"{name}: no samples; the task's test split is empty (check data/prepared/test.jsonl)")


def answers_match(pred: str, ref: str, normalize: Normalizer = normalize_answer) -> bool:
    """One prediction is right under exact match: equal to its reference after :func:`normalize_answer`."""
    return normalize(pred) == normalize(ref)


def exact_match(preds: Sequence[str], refs: Sequence[str], normalize: Normalizer = normalize_answer) -> float:
    """Percentage of predictions equal to their reference after :func:`normalize_answer`."""
    _check(preds, refs, "exact_match")
    return 100.0 * sum(answers_match(p, r, normalize) for p, r in zip(preds, refs)) / len(refs)


accuracy = exact_match   # the paper's "Acc." for VQA / MCQ answers is exact match of the normalised answer


def strict_exact_match(preds: Sequence[str], refs: Sequence[str], normalize: Normalizer = normalize_strict) -> float:
    """Percentage of predictions equal to their reference after :func:`normalize_strict` (case-sensitive)."""
    _check(preds, refs, "strict_exact_match")
    return 100.0 * sum(normalize(p) == normalize(r) for p, r in zip(preds, refs)) / len(refs)


def _nonempty_refs(preds: Sequence[str], refs: Sequence[str], name: str,
                   normalize: Normalizer = normalize_transcript) -> tuple[list[str], list[str]]:
    p = [normalize(x) for x in preds]
    r = [normalize(x) for x in refs]
    empty = [i for i, x in enumerate(r) if not x]
    if empty:
        raise ValueError(f"{name}: references {empty[:5]} are empty after normalisation; WER/CER are undefined "
                         "for them. Drop those samples or give them a transcript")
    return p, r


def wer(preds: Sequence[str], refs: Sequence[str], normalize: Normalizer = normalize_transcript) -> float:
    """Corpus word error rate in percent (jiwer; edits summed over all samples / reference words)."""
    _check(preds, refs, "wer")
    p, r = _nonempty_refs(preds, refs, "wer", normalize)
    return 100.0 * jiwer.wer(r, p)


def cer(preds: Sequence[str], refs: Sequence[str], normalize: Normalizer = normalize_transcript) -> float:
    """Corpus character error rate in percent (jiwer), on normalised text."""
    _check(preds, refs, "cer")
    p, r = _nonempty_refs(preds, refs, "cer", normalize)
    return 100.0 * jiwer.cer(r, p)


def bleu(preds: Sequence[str], refs: Sequence[str], normalize: Normalizer = normalize_transcript) -> float:
    """Corpus BLEU (sacrebleu defaults: 13a tokeniser, 4-grams), 0-100, on normalised text."""
    _check(preds, refs, "bleu")
    return float(sacrebleu.corpus_bleu([normalize(x) for x in preds], [[normalize(x) for x in refs]]).score)


def chrf(preds: Sequence[str], refs: Sequence[str], normalize: Normalizer = normalize_transcript) -> float:
    """Corpus chrF (sacrebleu defaults: character 6-grams, beta 2), 0-100, on normalised text."""
    _check(preds, refs, "chrf")
    return float(sacrebleu.corpus_chrf([normalize(x) for x in preds], [[normalize(x) for x in refs]]).score)


def perplexity(total_nll: float, total_tokens: int) -> float:
    """exp(summed negative log-likelihood / number of predicted tokens)."""
    if total_tokens <= 0:
        raise ValueError("perplexity: no predicted tokens; the text samples have no assistant tokens to score")
    return math.exp(total_nll / total_tokens)


def unigram_perplexity(train_tokens: Sequence[Sequence[int]], test_tokens: Sequence[Sequence[int]],
                       vocab_size: int) -> float:
    """Perplexity of an add-one-smoothed unigram model fit on ``train_tokens``: the text chance level."""
    counts = Counter(t for seq in train_tokens for t in seq)
    total = sum(counts.values()) + vocab_size
    nll = -sum(math.log((counts[t] + 1) / total) for seq in test_tokens for t in seq)
    return perplexity(nll, sum(len(s) for s in test_tokens))


@dataclass(frozen=True)
class Metric:
    fn: Callable[..., float]             # (preds, refs, normalize=<the metric's own>) -> score
    label: str
    higher_is_better: bool


METRICS: dict[str, Metric] = {
    "accuracy": Metric(exact_match, "Acc. (%)", True),
    "exact": Metric(strict_exact_match, "Exact (%)", True),
    "wer": Metric(wer, "WER (%)", False),
    "cer": Metric(cer, "CER (%)", False),
    "bleu": Metric(bleu, "BLEU", True),
    "chrf": Metric(chrf, "chrF", True),
}


# ------------------------------------------------------------------------------------------- tasks
# How each task is scored is declared in omni_core/task_registry.py (built-ins) and params.yaml `tasks:` (yours).
TASKS: dict[str, TaskSpec] = BUILTIN      # the built-in tasks, in the paper's order


def task_spec(task: str, tasks: Mapping[str, TaskSpec] | None = None) -> TaskSpec:
    """``task``'s declaration in ``tasks`` (``Config.task_registry()``; None = the active registry: the built-ins
    and the user tasks of the last loaded config)."""
    tasks = declared() if tasks is None else tasks
    if task not in tasks:
        raise KeyError(f"no metric spec for task {task!r}; add it to params.yaml under `tasks:` "
                       f"(docs/interfaces.md; known: {', '.join(tasks)})")
    return tasks[task]


def task_normalizer(spec: TaskSpec) -> Normalizer | None:
    """The normaliser a task declares (None = ``metric``: each metric's own, as every built-in task)."""
    return NORMALIZERS.get(spec.normalize)


def answer_key(spec: TaskSpec) -> Normalizer:
    """What makes two answers "the same" for ``distinct_answers`` and the majority baseline."""
    return task_normalizer(spec) or normalize_answer


def score(task: str, preds: Sequence[str], refs: Sequence[str],
          tasks: Mapping[str, TaskSpec] | None = None) -> dict[str, float]:
    """Every generation metric of ``task`` (perplexity is measured by the runner, not from strings)."""
    spec = task_spec(task, tasks)
    norm = task_normalizer(spec)
    kw = {} if norm is None else {"normalize": norm}
    return {m: METRICS[m].fn(preds, refs, **kw) for m in spec.metrics if m in METRICS}


# -------------------------------------------------------------------------------------- baselines
def majority_answer(train_refs: Sequence[str], normalize: Normalizer = normalize_answer) -> str:
    """Most common answer after normalisation (ties: first seen), returned in its original spelling."""
    if not train_refs:
        raise ValueError("majority_answer: no training answers")
    firsts: dict[str, str] = {}
    for r in train_refs:
        firsts.setdefault(normalize(r), r)
    best, _ = Counter(normalize(r) for r in train_refs).most_common(1)[0]
    return firsts[best]


def per_question_answers(train_questions: Sequence[str], train_refs: Sequence[str],
                         test_questions: Sequence[str], normalize: Normalizer = normalize_answer) -> list[str]:
    """For each test question, the most common training answer to the same (normalised) question;
    the overall majority answer for questions never seen in training."""
    by_q: dict[str, list[str]] = defaultdict(list)
    for q, r in zip(train_questions, train_refs):
        by_q[normalize_transcript(q)].append(r)
    answers = {"": majority_answer(train_refs, normalize)}          # the fallback, and each question's once
    keys = [k if (k := normalize_transcript(q)) in by_q else "" for q in test_questions]
    for k in set(keys) - set(answers):
        answers[k] = majority_answer(by_q[k], normalize)
    return [answers[k] for k in keys]


def best_fixed_sentence(train_refs: Sequence[str], metric: str, max_candidates: int = 64,
                        max_refs: int = 500, normalize: Normalizer | None = None) -> str:
    """The training reference that, said for every sample, scores best on the training references.

    Candidates are the ``max_candidates`` most common references (then first seen); they are scored on an
    evenly spaced subset of at most ``max_refs`` references, so the cost stays bounded as the data grows.
    """
    return _best_fixed_sentence(tuple(train_refs), metric, max_candidates, max_refs, normalize)


@functools.lru_cache(maxsize=4)        # asr_real's baseline is asr's: the same references
def _best_fixed_sentence(train_refs: tuple[str, ...], metric: str, max_candidates: int, max_refs: int,
                         normalize: Normalizer | None) -> str:
    candidates = [r for r, _ in Counter(train_refs).most_common(max_candidates)]
    refs = Counter(train_refs[::max(1, math.ceil(len(train_refs) / max_refs))])
    # one answer for all: each distinct reference's statistics, times how often it occurs, sum to the corpus's
    weights = np.array(list(refs.values()), dtype=np.float64)[:, None]
    stats_of = stats_against(metric, list(refs), normalize)
    scored = [(score_from_stats(metric, (weights * stats_of([c] * len(refs))).sum(0)), c) for c in candidates]
    return (max if METRICS[metric].higher_is_better else min)(scored, key=lambda sc: sc[0])[1]


def baseline_answers(task: str, train: tuple[Sequence[str], Sequence[str]], test_questions: Sequence[str],
                     tasks: Mapping[str, TaskSpec] | None = None) -> tuple[list[str], str]:
    """The task's trivial baseline's answer to every test question, and a description of the baseline.

    ``train`` is ``(questions, answers)``; the baseline never sees test answers. ``tasks``: as :func:`task_spec`.
    """
    spec = task_spec(task, tasks)
    q_tr, a_tr = train
    if spec.chance == "per_question":
        return (per_question_answers(q_tr, a_tr, test_questions, answer_key(spec)),
                "most common training answer to the same question")
    if spec.chance == "fixed_sentence":
        headline = next(m for m in spec.metrics if m in METRICS)
        sentence = best_fixed_sentence(a_tr, headline, normalize=task_normalizer(spec))
        return [sentence] * len(test_questions), f"fixed sentence {sentence!r}"
    if spec.chance == "majority":
        answer = majority_answer(a_tr, answer_key(spec))
        return [answer] * len(test_questions), f"majority answer {answer!r}"
    raise ValueError(f"baseline_answers: {task!r} uses the {spec.chance!r} baseline, computed by the runner")


def chance_level(task: str, train: tuple[Sequence[str], Sequence[str]], test: tuple[Sequence[str], Sequence[str]],
                 tasks: Mapping[str, TaskSpec] | None = None) -> tuple[dict[str, float], str]:
    """Scores of the task's trivial baseline on the test split and a description of the baseline."""
    preds, what = baseline_answers(task, train, test[0], tasks)
    return score(task, preds, test[1], tasks), what


# ---------------------------------------------------------------------------- margin over chance
def sample_stats(metric: str, preds: Sequence[str], refs: Sequence[str],
                 normalize: Normalizer | None = None) -> np.ndarray:
    """Per-sample sufficient statistics of a corpus metric, shape (n, k): any subset of the rows, summed
    and passed to :func:`score_from_stats`, is the metric of that subset (what a bootstrap resamples).

    Accuracy / exact: (correct, 1). WER / CER: (edits, reference length), from jiwer's alignment.
    BLEU / chrF: sacrebleu's own sentence statistics (n-gram matches and totals), which it sums for corpus
    scores; ``tests/test_eval_metrics.py`` checks every metric against its corpus function. ``normalize``: a
    task's declared normaliser (None = the metric's own)."""
    return stats_against(metric, refs, normalize)(preds)


def stats_against(metric: str, refs: Sequence[str],
                  normalize: Normalizer | None = None) -> Callable[[Sequence[str]], np.ndarray]:
    """:func:`sample_stats` as a function of the predictions, ``refs`` prepared once (normalised; for BLEU and
    chrF, sacrebleu caches their n-grams): many prediction lists scored against the same references, as in
    :func:`best_fixed_sentence`, then cost about half as much."""
    _check(refs, refs, metric)
    if metric in ("accuracy", "exact"):
        norm = normalize or (normalize_answer if metric == "accuracy" else normalize_strict)
        ref_norm = [norm(r) for r in refs]

        def stats(preds: Sequence[str]) -> np.ndarray:
            _check(preds, refs, metric)
            return np.array([[norm(p) == r, 1] for p, r in zip(preds, ref_norm)], dtype=np.float64)
    elif metric in ("wer", "cer"):
        text_norm = normalize or normalize_transcript
        _, ref_norm = _nonempty_refs(refs, refs, metric, text_norm)
        process = jiwer.process_words if metric == "wer" else jiwer.process_characters

        def stats(preds: Sequence[str]) -> np.ndarray:
            _check(preds, refs, metric)
            out = (process(r, text_norm(p)) for p, r in zip(preds, ref_norm))
            return np.array([[o.substitutions + o.deletions + o.insertions, o.substitutions + o.deletions + o.hits]
                             for o in out], dtype=np.float64)
    else:
        text_norm = normalize or normalize_transcript
        cached = _SACREBLEU[metric](references=[[text_norm(x) for x in refs]])

        def stats(preds: Sequence[str]) -> np.ndarray:
            _check(preds, refs, metric)
            return np.array(cached._extract_corpus_statistics([text_norm(x) for x in preds], None),
                            dtype=np.float64)
    return stats


def score_from_stats(metric: str, totals: np.ndarray) -> float:
    """The corpus metric from summed :func:`sample_stats` rows."""
    if metric in ("accuracy", "exact", "wer", "cer"):
        return 100.0 * float(totals[0]) / float(totals[1])
    return float(_SACREBLEU[metric]()._compute_score_from_stats([int(round(x)) for x in totals]).score)


_SACREBLEU = {"bleu": sacrebleu.metrics.BLEU, "chrf": sacrebleu.metrics.CHRF}


def _sum_rows(stats: np.ndarray, index: np.ndarray, n: int) -> np.ndarray:
    """Row i = the sum of the rows of ``stats`` whose ``index`` is i, in one pass (np.add.at adds repeats)."""
    out = np.zeros((n, stats.shape[1]))
    np.add.at(out, index, stats)
    return out


def margin_ci(metric: str, preds: Sequence[str], baseline: Sequence[str], refs: Sequence[str],
              level: float = 0.95, n_resamples: int = 1000, seed: int = 0,
              groups: Sequence[Hashable] | None = None,
              normalize: Normalizer | None = None) -> tuple[float, float] | None:
    """Paired-bootstrap interval of the model's margin over its baseline (positive = better), resampling
    the test samples with the model's and the baseline's answers kept together (Koehn 2004; scipy's
    percentile bootstrap). A lower bound above 0 is what the tables call *clearly* above chance: with a
    few hundred samples a few points of accuracy are within what another draw of the test set would move.

    ``groups`` (one key per sample, e.g. its prompt) resamples distinct items instead of samples: a test
    split that repeats an item (the same clip and question) holds less evidence than its length says.
    ``normalize``: the task's declared normaliser (None = the metric's own).
    None for fewer than two items: one item says nothing about how the margin would move."""
    ours, theirs = sample_stats(metric, preds, refs, normalize), sample_stats(metric, baseline, refs, normalize)
    if groups is not None:                   # one row per distinct item: the sum of its samples' statistics
        keys = {k: i for i, k in enumerate(dict.fromkeys(groups))}
        index = np.array([keys[k] for k in groups])
        ours, theirs = (_sum_rows(st, index, len(keys)) for st in (ours, theirs))
    if len(ours) < 2:
        return None
    sign = 1.0 if METRICS[metric].higher_is_better else -1.0

    def margin(idx: np.ndarray) -> float:
        return sign * (score_from_stats(metric, ours[idx].sum(0)) - score_from_stats(metric, theirs[idx].sum(0)))

    return _percentile_ci(len(ours), margin, level, n_resamples, seed)


def score_ci(metric: str, preds: Sequence[str], refs: Sequence[str], level: float = 0.95,
             n_resamples: int = 1000, seed: int = 0) -> tuple[float, float] | None:
    """Percentile-bootstrap interval of a corpus metric itself over the test samples (None for fewer than two):
    how far another draw of the test samples would move it (not how far another training draw would)."""
    stats = sample_stats(metric, preds, refs)
    if len(stats) < 2:
        return None
    return _percentile_ci(len(stats), lambda idx: score_from_stats(metric, stats[idx].sum(0)), level, n_resamples, seed)


def _percentile_ci(n: int, statistic: Callable[[np.ndarray], float], level: float, n_resamples: int,
                   seed: int) -> tuple[float, float]:
    """scipy's percentile bootstrap of ``statistic`` (a function of resampled row indices) over ``n`` rows."""
    from scipy.stats import bootstrap

    res = bootstrap((np.arange(n),), statistic, vectorized=False, confidence_level=level,
                    n_resamples=n_resamples, method="percentile", rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def one_answer_for_all(res: dict) -> bool:
    """True when an evaluation entry's model gave all of its (several) samples the same answer."""
    return res.get("distinct_answers") == 1 and res.get("n", 0) > 1


def higher_is_better(metric: str) -> bool:
    """A metric's direction; perplexity, which has no 0-100 spec in METRICS, is lower-is-better."""
    return METRICS[metric].higher_is_better if metric in METRICS else False


def relative_to_chance(value: float, chance: float, higher_is_better: bool) -> float:
    """How much better than chance, as a signed difference in the metric's own units (positive = better)."""
    return (value - chance) if higher_is_better else (chance - value)
