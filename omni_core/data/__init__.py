"""Data for every stage and task: offline sources, one manifest format, loading and batching.

``python -m omni_core.data prepare`` builds ``data/prepared``; see docs/interfaces.md "Manifest".
"""
from .collate import PackCollator, pack_rows, pad_collate
from .manifest import ALL_TASKS, TASKS, ManifestError, read_manifest, write_manifest
from .validate import Problem, validate_manifest, validate_manifests

__all__ = ["ALL_TASKS", "TASKS", "ManifestError", "PackCollator", "Problem", "pack_rows", "pad_collate",
           "read_manifest", "validate_manifest", "validate_manifests", "write_manifest"]
