"""Metric functions against cases computed by hand."""
import math
from collections import Counter

import numpy as np
import pytest

from omni_core.eval import metrics as M


def test_normalisation():
    assert M.normalize_answer("  The Seven. ") == "seven"
    assert M.normalize_answer("A red-circle!") == "red circle"
    assert M.normalize_transcript("Don't STOP, 'now'!") == "don't stop now"
    assert M.normalize_transcript("the cat") == "the cat"          # articles are words for WER
    assert M.normalize_strict("  STORE. ") == "STORE" and M.normalize_strict("p a  i r") == "p a i r"


def test_exact_match_counts_normalised_equality():
    preds = ["Seven.", "a cat", "7", "blue square"]
    refs = ["seven", "The cat", "seven", "red square"]
    assert M.exact_match(preds, refs) == pytest.approx(50.0)       # 2 of 4
    with pytest.raises(ValueError, match="2 predictions but 1"):
        M.exact_match(["a", "b"], ["a"])


def test_strict_exact_match_keeps_case_and_letters():
    # "p i r" would equal "p a i r" under normalize_answer (the article "a" is dropped); strict keeps it
    assert M.exact_match(["p i r"], ["p a i r"]) == 100.0
    assert M.strict_exact_match(["p i r", "store", "STORE."], ["p a i r", "STORE", "STORE"]) == pytest.approx(100 / 3)


def test_wer_cer_hand_computed():
    # ref "the cat sat down" (4 words), hyp "the cat sit" -> 1 substitution + 1 deletion = 2/4
    # ref "hello world" (2 words), hyp "hello world" -> 0; corpus WER = 2 / 6
    assert M.wer(["The cat sit.", "hello world"], ["the cat sat down", "Hello, world!"]) == pytest.approx(100 * 2 / 6)
    # CER: "abcd" vs "abxd" -> 1 substitution / 4 characters
    assert M.cer(["abxd"], ["abcd"]) == pytest.approx(25.0)
    with pytest.raises(ValueError, match="empty after normalisation"):
        M.wer(["x"], ["?!"])


def test_bleu_chrf():
    assert M.bleu(["the quick brown fox jumps"], ["The quick brown fox jumps."]) == pytest.approx(100.0)
    assert M.chrf(["abc def"], ["abc def"]) == pytest.approx(100.0)
    assert M.bleu(["zzz yyy"], ["the quick brown fox"]) == pytest.approx(0.0)
    assert 0 < M.chrf(["the quick brown cat"], ["the quick brown fox"]) < 100


def test_best_fixed_sentence_is_the_corpus_best():
    """best_fixed_sentence scores each candidate once per distinct reference, weighted by its count (sacrebleu
    caches the references' n-grams): every weighted score must be the corpus metric over all references,
    duplicates included, and the pick the brute-force best (ties: the more common, then the first seen)."""
    refs = ["two blue squares", "the red circle is at the top left", "two blue squares", "Nine.",
            "the digit seven moves up", "two blue squares", "the red circle", "Nine."]
    counts = Counter(refs)
    weights = np.array(list(counts.values()), dtype=np.float64)[:, None]
    for metric in ("chrf", "bleu", "wer", "accuracy"):
        fn, stats_of = M.METRICS[metric].fn, M.stats_against(metric, list(counts))
        for c in counts:
            weighted = M.score_from_stats(metric, (weights * stats_of([c] * len(counts))).sum(0))
            assert weighted == pytest.approx(fn([c] * len(refs), refs), abs=1e-9), (metric, c)
        candidates = [r for r, _ in counts.most_common()]
        best = (max if M.METRICS[metric].higher_is_better else min)(candidates, key=lambda c: fn([c] * len(refs), refs))
        assert M.best_fixed_sentence(refs, metric) == best, metric
    with pytest.raises(ValueError, match="4 references"):
        M.stats_against("chrf", refs[:4])(["one prediction"])


def test_perplexity():
    assert M.perplexity(4 * math.log(8), 4) == pytest.approx(8.0)
    # unigram: train counts {1: 3, 2: 1}, vocab 4 -> p(1) = 4/8, p(2) = 2/8; test [1, 2] -> exp(-(ln .5 + ln .25)/2)
    assert M.unigram_perplexity([[1, 1, 1, 2]], [[1, 2]], 4) == pytest.approx(math.sqrt(8))
    with pytest.raises(ValueError):
        M.perplexity(1.0, 0)


def test_baselines():
    assert M.majority_answer(["Red", "blue", "red.", "green"]) == "Red"
    qs = ["What colour?", "What shape?", "what colour", "What shape?"]
    ans = ["red", "square", "red", "circle"]
    assert M.per_question_answers(qs, ans, ["What colour?", "What shape?", "How many?"]) == ["red", "square", "red"]
    # a fixed sentence for ASR: "a b c" has WER (0 + 1/3 + 2/3 ...) lower than the outliers
    refs = ["a b c", "a b d", "a e c", "x y z"]
    assert M.best_fixed_sentence(refs, "wer") == "a b c"
    scores, what = M.chance_level("image_vqa", (qs, ans), (["What shape?", "What colour?"], ["square", "blue"]))
    assert scores == {"accuracy": 50.0} and "question" in what
    scores, what = M.chance_level("asr", ([""] * 4, refs), ([""], ["a b c"]))
    assert scores["wer"] == 0.0 and "a b c" in what


@pytest.mark.parametrize("metric", list(M.METRICS))
def test_sample_stats_sum_to_the_corpus_metric(metric):
    """The bootstrap resamples per-sample statistics: summed, they must give exactly the corpus metric."""
    preds = ["the red cat sat", "", "A seven.", "blue square on top", "STORE", "p i r"]
    refs = ["the red hat sat down", "one two", "seven", "a blue square", "STORE.", "p a i r"]
    stats = M.sample_stats(metric, preds, refs)
    assert stats.shape[0] == len(refs)
    assert M.score_from_stats(metric, stats.sum(0)) == pytest.approx(M.METRICS[metric].fn(preds, refs), abs=1e-9)
    sub = [0, 3, 5]       # and so must any subset (what one resample is)
    assert M.score_from_stats(metric, stats[sub].sum(0)) == pytest.approx(
        M.METRICS[metric].fn([preds[i] for i in sub], [refs[i] for i in sub]), abs=1e-9)


def test_margin_ci_is_paired_and_oriented():
    refs = [f"w{i}" for i in range(100)]
    ours = [r if i < 30 else "x" for i, r in enumerate(refs)]        # right on 30
    base = [r if i < 25 else "x" for i, r in enumerate(refs)]        # right on 25, all of them also ours
    lo, hi = M.margin_ci("accuracy", ours, base, refs)
    # paired: only the 5 samples where the two differ vary, so +5 points is clearly above 0 here
    # (unpaired intervals of 30 % and 25 % would overlap widely)
    assert 0 < lo < 5 < hi < 12
    assert M.margin_ci("accuracy", ours, base, refs) == (lo, hi)      # seeded
    assert M.margin_ci("accuracy", base, base, refs) == (0.0, 0.0)
    lo, hi = M.margin_ci("accuracy", base, ours, refs)
    assert hi < 0
    # WER is lower-is-better: fewer errors than the baseline is a positive margin
    lo, hi = M.margin_ci("wer", ours, ["x"] * 100, refs)
    assert lo > 0
    # the same 100 answers, but only 20 distinct items each asked 5 times: less evidence, a wider interval
    items = [i // 5 for i in range(100)]
    grouped = M.margin_ci("accuracy", ours, base, refs, groups=items)
    alone = M.margin_ci("accuracy", ours, base, refs)
    assert grouped[1] - grouped[0] > 1.5 * (alone[1] - alone[0])
    assert M.margin_ci("accuracy", ours, base, refs, groups=list(range(100))) == alone   # all distinct: no change
    assert M.margin_ci("accuracy", ours[:1], base[:1], refs[:1]) is None          # one item: no interval
    assert M.margin_ci("accuracy", ours[:5], base[:5], refs[:5], groups=[0] * 5) is None


def test_task_registry_covers_interface_tasks():
    tasks = ("image_caption image_vqa ocr highres_read video_caption video_qa asr spoken_qa omni_image_speech "
             "omni_continuation video_narration_qa text_instruct text_lm asr_real asr_open asr_heldout_voice").split()
    assert set(tasks) == set(M.TASKS)
    with pytest.raises(KeyError, match="add it to"):
        M.task_spec("nope")


def test_video_narration_chance_is_the_most_common_digit_word():
    """The clip's picture shows another digit than its sound track says: chance is the training majority word
    (about one in ten), and answering with the digit in the picture scores 0."""
    spec = M.task_spec("video_narration_qa")
    assert (spec.table, spec.metrics, spec.baseline) == ("omni", ("accuracy",), "majority")
    q = "What number does the voice say?"
    train = ([q] * 5, ["seven", "seven", "two", "one", "nine"])
    said, shown = ["seven", "two", "four", "one"], ["one", "six", "seven", "zero"]
    scores, what = M.chance_level("video_narration_qa", train, ([q] * 4, said))
    assert scores == {"accuracy": 25.0} and what == "majority answer 'seven'"
    assert M.score("video_narration_qa", shown, said) == {"accuracy": 0.0}


def test_reported_numbers_stay_apart_from_measured():
    from omni_core.eval import paper_results, tables

    d = paper_results.as_dict()
    assert d["label"] == "reported (paper)" and set(d["tables"]) == set(M.TABLES)
    mmlu = next(r for r in paper_results.reported("text") if r.benchmark == "MMLU")
    assert (mmlu.value, mmlu.paper_table) == (65.3, 1)
    assert {r.paper_table for rows in paper_results.REPORTED.values() for r in rows} <= {0, 1, 2, 3, 4, 5, 6, 7}
    measured = {"settings": {"batch_size": 8}, "tables": {"image": {"tasks": {
        "image_vqa": {"accuracy": 41.0, "chance": {"accuracy": 24.0}, "margin_ci95": {"accuracy": [5.0, 29.0]},
                      "n": 50, "distinct_answers": 12},
        "highres_read": {"accuracy": 9.0, "chance": {"accuracy": 4.0}, "margin_ci95": {"accuracy": [-1.0, 11.0]},
                         "n": 50, "distinct_answers": 9},
        "image_caption": {"chrf": 60.0, "chance": {"chrf": 40.0}, "margin_ci95": {"chrf": None}, "n": 1,
                          "distinct_answers": 1},
        "ocr": {"accuracy": 5.0, "cer": 80.0, "chance": {"accuracy": 3.0, "cer": 90.0}, "n": 50, "distinct_answers": 1}}}}}
    md = tables.render_markdown(measured)
    image = md.split("## Image")[1].split("## Video")[0]
    ours, paper = image.split("Reported (paper):")
    assert "| VQA (`image_vqa`) | Acc. (%) | 41.0 | 24.0 | +17.0 [+5.0, +29.0] | yes | 12 | 50 |" in ours
    assert "MMBench" not in ours
    # better than chance, but a resampled test set could erase the margin; one sample gives no interval
    assert "| 9.0 | 4.0 | +5.0 [-1.0, +11.0] | within noise | 9 | 50 |" in ours
    assert "| 60.0 | 40.0 | +20.0 | within noise (one item: no interval) | 1 | 1 |" in ours
    # a constant answer that scores above the training majority is still a constant; lower-is-better margins
    assert "| OCR (`ocr`) | Acc. (%) | 5.0 | 3.0 | +2.0 | no (one answer for all) | 1 | 50 |" in ours
    assert "| OCR (`ocr`) | CER (%) | 80.0 | 90.0 | +10.0 | no (one answer for all) | 1 | 50 |" in ours
    assert "| MMBench | Acc. (%) | 76.2 | Table 2 |" in paper and "image_vqa" not in paper
