"""Markdown tables laid out like the paper's: text, image, video, audio (+ omni: image or video with audio).

Each section has two tables that are never merged: *measured* (this run, on our held-out test split,
with the chance level beside every number) and *reported (paper)* (Baichuan-Omni 7B on public
benchmarks, from :mod:`omni_core.eval.paper_results`). Input is the dict :func:`omni_core.eval.runner.evaluate`
returns, or the same data read back from ``metrics/*.json`` by :func:`load_results`. The README's
results table is built from the same cells by :mod:`omni_core.eval.readme_results`.
"""
from __future__ import annotations

import json
from pathlib import Path

from .metrics import METRICS, TABLES, higher_is_better, one_answer_for_all, relative_to_chance, task_spec
from .paper_results import LABEL, SOURCE, reported

_TITLES = {"text": "Text", "image": "Image", "video": "Video", "audio": "Audio", "omni": "Omni (image / video + audio)"}
_UNITS = {**{k: m.label for k, m in METRICS.items()}, "perplexity": "perplexity"}


def load_results(metrics_dir: str | Path) -> dict:
    """Read ``metrics/<table>.json`` back into the dict ``evaluate`` returns."""
    metrics_dir = Path(metrics_dir)
    tables = {}
    for t in TABLES:
        f = metrics_dir / f"{t}.json"
        if f.exists():
            tables[t] = json.loads(f.read_text())
    if not tables:
        raise FileNotFoundError(f"{metrics_dir}: no <table>.json files; run `python -m omni_core.eval` first")
    settings = next(iter(tables.values())).get("settings", {})
    return {"settings": settings, "tables": tables}


def fmt_number(x: float | None) -> str:
    """One decimal (three below 1, so small values keep a digit); "–" for a missing number."""
    if x is None:
        return "–"
    return f"{x:.1f}" if abs(x) >= 1 or x == 0 else f"{x:.3f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured Markdown table, one line per row."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def beats_chance(res: dict, metric: str) -> str:
    """"yes" (the margin's 95 % interval is above 0), "within noise" (better than chance, but a resampled
    test set could erase the margin, or a single item gave no interval), "no", or "–" (no chance level).
    Results recorded before the intervals existed have none and say "yes" for any lead. A run that gives every sample one
    answer never beats chance, whatever its score: a constant that happens to fit the test split better than
    the training majority is still a constant."""
    chance = res.get("chance", {}).get(metric)
    if chance is None:
        return "–"
    if one_answer_for_all(res):
        return "no (one answer for all)"
    if relative_to_chance(res[metric], chance, higher_is_better(metric)) <= 0:
        return "no"
    cis = res.get("margin_ci95", {})
    if metric in cis and cis[metric] is None:
        return "within noise (one item: no interval)"
    return "within noise" if cis.get(metric) is not None and cis[metric][0] <= 0 else "yes"


def margin_cell(res: dict, metric: str) -> str:
    """The margin over chance in the metric's units (positive = better) and its 95 % interval."""
    chance, ci = res.get("chance", {}).get(metric), res.get("margin_ci95", {}).get(metric)
    if chance is None:
        return "–"
    out = f"{relative_to_chance(res[metric], chance, higher_is_better(metric)):+.1f}"
    return out + (f" [{ci[0]:+.1f}, {ci[1]:+.1f}]" if ci is not None else "")


def measured_table(table: dict) -> str:
    """One row per (task, metric): ours, chance, the margin with its interval, verdict, distinct answers, n."""
    rows = []
    for task, res in table.get("tasks", {}).items():
        spec = task_spec(task)
        n, distinct = str(res.get("n", "")), str(res.get("distinct_answers", "–"))
        for m in spec.metrics:
            if m not in res:
                continue
            rows.append([f"{spec.title} (`{task}`)", _UNITS[m], fmt_number(res[m]),
                         fmt_number(res.get("chance", {}).get(m)), margin_cell(res, m), beats_chance(res, m), distinct,
                         n])
        if "perplexity_before" in res:
            rows.append([f"{spec.title} (`{task}`), before multimodal training", "perplexity",
                         fmt_number(res["perplexity_before"]), fmt_number(res.get("chance", {}).get("perplexity")),
                         "–", "–", "–", n])
    return markdown_table(["task", "metric", "measured", "chance", "margin [95 % CI]", "beats chance",
                           "distinct answers", "n"], rows)


def reported_table(name: str) -> str:
    rows = [[r.benchmark, r.metric + ("" if r.higher_is_better else " ↓"), fmt_number(r.value), f"Table {r.paper_table}"
             if r.paper_table else (r.note or "")] for r in reported(name)]
    return markdown_table(["benchmark", "metric", f"Baichuan-Omni 7B, {LABEL}", "paper"], rows)


def settings_line(settings: dict) -> str:
    keys = ("checkpoint", "profile", "split", "batch_size", "dtype", "attn_implementation", "seed",
            "max_new_tokens", "device")
    return "; ".join(f"{k} = {settings[k]}" for k in keys if k in settings)


def render_markdown(results: dict) -> str:
    """All sections: measured (with settings and chance) then reported, per table, in the paper's order."""
    out = ["# Evaluation", "", f"Measured here: {settings_line(results.get('settings', {}))}.",
           "Chance = the trivial baseline of each task, fit on the training split (see omni_core/eval/metrics.py). "
           "Margin = how much better than chance, with its paired-bootstrap 95 % interval over the test samples; "
           "\"yes\" needs the whole interval above 0, \"within noise\" is better than chance by less than that.",
           f"Reported numbers are the paper's ({SOURCE}); they are on public benchmarks, not on our test split, "
           "and are shown for orientation only.", ""]
    for name in TABLES:
        out += [f"## {_TITLES[name]}", ""]
        if name in results.get("tables", {}):
            out += ["Measured (this run):", "", measured_table(results["tables"][name]), ""]
        out += [f"{LABEL.capitalize()}:", "", reported_table(name), ""]
    return "\n".join(out)


def write_markdown(results: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_markdown(results))
    return path
