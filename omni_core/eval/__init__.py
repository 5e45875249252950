"""Evaluation: metrics, the checkpoint runner, the paper's reported numbers, tables, ablations, lmms-eval.

``from omni_core.eval import evaluate`` imports the runner (and the model) lazily, so the metric and
table helpers stay importable without torch models being built.
"""
from .metrics import METRICS, TABLES, TASKS, chance_level, score
from .paper_results import LABEL as REPORTED_LABEL
from .tables import load_results, render_markdown

__all__ = ["METRICS", "TABLES", "TASKS", "chance_level", "score", "REPORTED_LABEL", "load_results",
           "render_markdown", "evaluate"]


def __getattr__(name: str):
    if name == "evaluate":
        from .runner import evaluate
        return evaluate
    raise AttributeError(f"module 'omni_core.eval' has no attribute {name!r}")
