"""Import-time speed-ups: third-party imports that every pipeline process would pay for and nothing here uses.

A `dvc repro` starts a dozen Python processes (papermill kernels and CLIs); each of these saves about a
second in each process that would otherwise import what it skips. Every function here changes what
later imports see, never a computed value.
"""
from __future__ import annotations

import sys


def hide_sklearn_from_generation() -> None:
    """transformers' generation code imports scikit-learn (0.8 s of every process that builds the model)
    only to adapt assisted decoding's confidence threshold, which nothing here uses. The modules
    transformers imports from now on see it absent; its own import checks still find it."""
    if "transformers.generation.candidate_generator" not in sys.modules:
        import transformers.utils

        transformers.utils.is_sklearn_available = lambda: False


def skip_iri_grammar() -> None:
    """nbformat imports jsonschema, which imports rfc3987_syntax when it is installed and builds a Lark
    grammar for IRI formats (1-1.5 s per notebook run); notebook schemas have no IRI fields to check."""
    sys.modules.setdefault("rfc3987_syntax", None)
