"""The README's results block, rendered from ``metrics/*.json``: ``python -m omni_core.eval.readme_results``.

The block lies between :data:`START` and :data:`END` in README.md: the run's settings, one row per task
(headline metric, chance, margin with its 95 % interval, verdict, distinct answers) and how many tasks are
clearly above chance. ``--write`` rewrites it in place, ``--check`` exits 1 with a diff when it is stale;
``tests/test_readme_results.py`` runs the check, so the README cannot drift from the committed metrics.

Numbers are read, never recomputed; cells use the formatting of :mod:`omni_core.eval.tables`. What the
metrics cannot say is kept here as presentation: each task's note, the highlighted numbers and which
secondary metric is stated beside a verdict that it confirms.
"""
from __future__ import annotations

import argparse
import difflib
import json
import sys
import textwrap
from collections import Counter
from pathlib import Path

from omni_core.config import REPO_ROOT

from .metrics import TABLES, higher_is_better, task_spec
from .tables import beats_chance, fmt_number, load_results, margin_cell, markdown_table

START = "<!-- results:start: generated from metrics/*.json by `python -m omni_core.eval.readme_results --write` -->"
END = "<!-- results:end -->"
# the small profile beside the tiny one: metrics/small/*.json (small/dvc.yaml) against metrics/*.json
SMALL_START = ("<!-- small-results:start: generated from metrics/small/*.json and metrics/*.json by "
               "`python -m omni_core.eval.readme_results --write` -->")
SMALL_END = "<!-- small-results:end -->"
README = REPO_ROOT / "README.md"
METRICS_DIR = REPO_ROOT / "metrics"
SMALL_DIR = "small"             # the small profile's metrics: a folder of metrics/

_METRIC_CELL = {"perplexity": "perplexity", "exact": "exact match %", "accuracy": "accuracy %", "chrf": "chrF",
                "bleu": "BLEU", "wer": "WER %", "cer": "CER %"}
_METRIC_NAME = {"perplexity": "perplexity", "exact": "exact match", "accuracy": "accuracy", "chrf": "chrF",
                "bleu": "BLEU", "wer": "WER", "cer": "CER"}
_TASK_NOTE = {"asr": "closed vocabulary", "asr_real": "real speech, open vocabulary, never trained on",
              "asr_open": "open vocabulary", "asr_heldout_voice": "a voice never trained on",
              "video_narration_qa": "the answer is in the clip's sound track"}
# the audio branch's headline and the one task that only hearing solves
_HIGHLIGHT = {"asr", "video_narration_qa"}
# a fixed sentence already scores a high chrF on these, so BLEU, which separates more, is stated beside it
_CONFIRMING = {"video_caption": ("bleu",), "omni_continuation": ("bleu",)}
# a clear margin whose interval starts less than one unit of the metric above 0 is "by a hair"
_BY_A_HAIR = 1.0
_DTYPE = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
_RUN_SETTINGS = (("decoding", "{} decoding"), ("batch_size", "batch {}"), ("dtype", "{}"),
                 ("attn_implementation", "{}"), ("seed", "seed {}"))
_HOST_SETTINGS = (("cpu", "{}"), ("cpu_capability", "{}"), ("torch", "torch {}"), ("torch_threads", "{} threads"))


def _headline(task: str, res: dict) -> str:
    """The task's first metric that the results hold (its spec lists the headline first)."""
    return next(m for m in task_spec(task).metrics if m in res)


def _verdict(res: dict, metric: str) -> str:
    """The README's words for :func:`~omni_core.eval.tables.beats_chance`: "clearly" needs the whole interval
    above 0; "within noise" is not clearly, so it reads "no" beside a margin that shows by how much."""
    said = beats_chance(res, metric)
    if said == "yes":
        return "clearly"
    return said if said == "–" or said.startswith("no (") else "no"


def _verdict_cell(task: str, res: dict, headline: str) -> str:
    verdict = _verdict(res, headline)
    cell = "**clearly**" if verdict == "clearly" else verdict
    ci = res.get("margin_ci95", {}).get(headline)
    if verdict == "clearly" and ci is not None and ci[0] < _BY_A_HAIR:
        cell += ", by a hair"
    notes = []
    for m in task_spec(task).metrics[1:]:
        if m not in res or res.get("chance", {}).get(m) is None:
            continue
        if _verdict(res, m) != verdict:          # a secondary metric that disagrees is always stated
            notes.append(f"{_METRIC_NAME[m]}: {_verdict(res, m)}")
        elif m in _CONFIRMING.get(task, ()):
            notes.append(f"{_METRIC_NAME[m]} too: {fmt_number(res[m])} vs {fmt_number(res['chance'][m])}")
    return cell + (f" ({'; '.join(notes)})" if notes else "")


def _rows(results: dict) -> list[list[str]]:
    rows, direction_said = [], set()
    for table in TABLES:
        for task, res in results["tables"].get(table, {}).get("tasks", {}).items():
            headline = _headline(task, res)
            metric = _METRIC_CELL[headline]
            if not higher_is_better(headline) and headline not in direction_said:   # said once per metric
                metric += " (lower is better)"
                direction_said.add(headline)
            measured = fmt_number(res[headline])
            if task in _HIGHLIGHT:
                measured = f"**{measured}**"
            if "perplexity_before" in res:
                measured += f" ({fmt_number(res['perplexity_before'])} before multimodal training)"
            label = f"{task} ({_TASK_NOTE[task]})" if task in _TASK_NOTE else task
            rows.append([table, label, metric, measured, fmt_number(res.get("chance", {}).get(headline)),
                         margin_cell(res, headline), _verdict_cell(task, res, headline),
                         str(res.get("distinct_answers", "–"))])
    return rows


def _samples(results: dict) -> str:
    """'300 test samples per task, 10 for asr_real': the usual test size, then the tasks that differ."""
    sizes = {task: res["n"] for t in results["tables"].values() for task, res in t.get("tasks", {}).items()
             if "n" in res}
    if not sizes:
        return ""
    usual = Counter(sizes.values()).most_common(1)[0][0]
    return ", ".join([f"{usual} test samples per task"] + [f"{n} for {task}" for task, n in sizes.items()
                                                            if n != usual])


def _settings_sentence(results: dict) -> str:
    """'Measured with greedy decoding, batch 64, ... on CPU (Intel Xeon, ...); 300 test samples per task, ...'."""
    s = dict(results.get("settings", {}))
    if "dtype" in s:
        s["dtype"] = _DTYPE.get(s["dtype"], s["dtype"])
    if "cpu" in s:                       # "Intel(R) Xeon(R) Processor" -> "Intel Xeon"
        s["cpu"] = " ".join(w for w in s["cpu"].replace("(R)", "").replace("(TM)", "").split()
                            if w not in ("CPU", "Processor"))
    run = ", ".join(f.format(s[k]) for k, f in _RUN_SETTINGS if k in s)
    host = ", ".join(f.format(s[k]) for k, f in _HOST_SETTINGS if k in s)
    sentence = f"Measured with {run}" if run else "Measured"
    if "device" in s:
        sentence += f" on {'CPU' if s['device'] == 'cpu' else s['device']}" + (f" ({host})" if host else "")
    samples = _samples(results)
    return textwrap.fill(sentence + (f"; {samples}." if samples else "."), width=110, break_long_words=False,
                         break_on_hyphens=False)


def _summary(results: dict) -> str:
    verdicts = {task: _verdict(res, _headline(task, res)) == "clearly"
                for t in results["tables"].values() for task, res in t.get("tasks", {}).items()}
    above, n = sum(verdicts.values()), len(verdicts)
    if above == n:
        return f"**All {n} tasks are clearly above chance in this run.**"
    below = [task for task, clearly in verdicts.items() if not clearly]
    return (f"**{above} of {n} tasks are clearly above chance in this run**: "
            + (f"all but {', '.join(below)}." if above else "none."))


def reading(results: dict) -> str:
    """A few sentences that read the results, computed from them (notebook 04 closes with it, so the words
    cannot go stale): how many tasks are clearly above chance, which are not, and what multimodal training
    did to the text perplexity, which the paper says it keeps."""
    lines = [_summary(results)]
    close = [task for t in results["tables"].values() for task, res in t.get("tasks", {}).items()
             if _verdict(res, _headline(task, res)) == "clearly"
             and (res.get("margin_ci95", {}).get(_headline(task, res)) or [_BY_A_HAIR])[0] < _BY_A_HAIR]
    if close:
        lines.append(f"Clearly but by a hair (the interval's lower end under one unit): {', '.join(close)}.")
    for task, res in results["tables"].get("text", {}).get("tasks", {}).items():
        if "perplexity_before" in res:
            before, after = res["perplexity_before"], res["perplexity"]
            change = "rose" if after > before else "fell"
            lines.append(f"{task} perplexity {change} from {before:.1f} before multimodal training to {after:.1f} "
                         f"after it ({after / before - 1:+.0%}; lower is better): "
                         + ("text ability was not fully kept." if after > before else "text ability was kept."))
    return "\n\n".join(lines)


def render_block(results: dict) -> str:
    """The block between the markers (markers excluded), from what :func:`load_results` returns."""
    header = ["table", "task", "metric", "measured", "chance", "margin [95 % CI]", "above chance", "answers"]
    return "\n\n".join([_settings_sentence(results), markdown_table(header, _rows(results)), _summary(results)])


def _task_rows(results: dict) -> dict[str, tuple[str, dict]]:
    return {task: (table, res) for table in TABLES for task, res in results["tables"].get(table, {}).get("tasks", {}).items()}


def _duration(seconds: float) -> str:
    h, m = divmod(round(seconds / 60), 60)
    return f"{h} h {m:02d} min" if h else f"{m} min"


def render_small_block(small: dict | None, tiny: dict, timing: dict | None = None) -> str:
    """The small profile's results beside the tiny one's, task by task (the small run's chance, margin and
    verdict), its settings and what the run cost; a line saying how to run it when there are no results."""
    if small is None:
        return ("The small profile has no committed results in this checkout yet: `make repro PROFILE=small` "
                "writes them to `metrics/small/`.")
    header = ["table", "task", "metric", "tiny", "small", "small: chance", "small: margin [95 % CI]",
              "small: above chance"]
    tiny_rows, rows = _task_rows(tiny), []
    for task, (table, res) in _task_rows(small).items():
        headline = _headline(task, res)
        cells = []
        for r in (tiny_rows.get(task, (None, None))[1], res):
            cell = fmt_number(r.get(headline)) if r else "–"
            if r and "perplexity_before" in r:
                cell += f" ({fmt_number(r['perplexity_before'])} before)"
            cells.append(cell)
        label = f"{task} ({_TASK_NOTE[task]})" if task in _TASK_NOTE else task
        rows.append([table, label, _METRIC_CELL[headline], *cells, fmt_number(res.get("chance", {}).get(headline)),
                     margin_cell(res, headline), _verdict_cell(task, res, headline)])
    parts = [_settings_sentence(small)]
    if timing:
        cpu = timing.get("cpu", "")
        parts[0] += (f" The whole small recipe took {_duration(timing['total_seconds'])} on {timing.get('cpu_count', '?')} "
                     f"CPU cores ({cpu}); per stage: `metrics/small/timing.json`.")
    return "\n\n".join([textwrap.fill(parts[0], width=110, break_long_words=False, break_on_hyphens=False),
                        markdown_table(header, rows), _summary(small)])


def load_small(metrics_dir: str | Path) -> tuple[dict | None, dict | None]:
    """(results, timing) of ``<metrics_dir>/small``, each None when absent."""
    folder = Path(metrics_dir) / SMALL_DIR
    if not any((folder / f"{t}.json").exists() for t in TABLES):
        return None, None
    timing = folder / "timing.json"
    return load_results(folder), (json.loads(timing.read_text()) if timing.exists() else None)


def _split(readme_text: str, start: str = START, end: str = END) -> tuple[str, str, str]:
    """(before and START, the block, END and after); the markers must each be on their own line, once."""
    lines = readme_text.split("\n")
    for marker in (start, end):
        if lines.count(marker) != 1:
            raise ValueError(f"README: expected the line {marker!r} once, found it {lines.count(marker)} times; "
                             "put the markers around the results table")
    i, j = lines.index(start), lines.index(end)
    if j < i:
        raise ValueError("README: the results end marker comes before the start marker")
    return "\n".join(lines[:i + 1]), "\n".join(lines[i + 1:j]), "\n".join(lines[j:])


def readme_block(readme_text: str, start: str = START, end: str = END) -> str:
    """The block as the README has it now."""
    return _split(readme_text, start, end)[1]


def replace_block(readme_text: str, block: str, start: str = START, end: str = END) -> str:
    """The README with ``block`` between the markers; everything outside them kept byte for byte."""
    head, _, tail = _split(readme_text, start, end)
    return "\n".join([head, block, tail])


def _blocks(metrics_dir: str | Path) -> list[tuple[str, str, str]]:
    """(start marker, end marker, block) of each generated block, from ``metrics_dir``."""
    tiny = load_results(metrics_dir)
    small, timing = load_small(metrics_dir)
    return [(START, END, render_block(tiny)), (SMALL_START, SMALL_END, render_small_block(small, tiny, timing))]


def stale_diff(readme: str | Path = README, metrics_dir: str | Path = METRICS_DIR) -> str:
    """A unified diff from the README's blocks to the ones ``metrics_dir`` gives; empty when they agree."""
    text, diffs = Path(readme).read_text(), []
    for start, end, want in _blocks(metrics_dir):
        have = readme_block(text, start, end)
        diffs += difflib.unified_diff(have.splitlines(), want.splitlines(), f"{Path(readme).name} (block {start[5:25]}...)",
                                      f"from {Path(metrics_dir).name}/", lineterm="")
    return "\n".join(diffs)


def write(readme: str | Path = README, metrics_dir: str | Path = METRICS_DIR) -> bool:
    """Rewrite the README's blocks from ``metrics_dir``; True when one changed."""
    readme = Path(readme)
    text = new = readme.read_text()
    for start, end, block in _blocks(metrics_dir):
        new = replace_block(new, block, start, end)
    if new != text:
        readme.write_text(new)
    return new != text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m omni_core.eval.readme_results", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite the README's results block in place")
    mode.add_argument("--check", action="store_true", help="exit 1 with a diff when the block is stale")
    ap.add_argument("--readme", default=str(README))
    ap.add_argument("--metrics", default=str(METRICS_DIR), help="folder of <table>.json (default: metrics/)")
    args = ap.parse_args(argv)
    if args.write:
        print(f"{args.readme}: results block {'rewritten' if write(args.readme, args.metrics) else 'up to date'}")
    elif args.check:
        diff = stale_diff(args.readme, args.metrics)
        if diff:
            print(diff)
            print(f"{args.readme}: the results block differs from {args.metrics}; "
                  "run `python -m omni_core.eval.readme_results --write`", file=sys.stderr)
            return 1
    else:
        print(render_block(load_results(args.metrics)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
