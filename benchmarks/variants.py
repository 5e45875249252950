"""What the side-by-side benchmarks share: each variant runs in a temporary folder of its own and prints its
line when it finishes; the whole result is printed and written as JSON at the end."""
from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path


def run_variants(variants: dict[str, Callable[[Path], dict]], result: dict, out: str | Path, prefix: str) -> dict:
    """Run each variant (a function of its work folder returning its JSON record) into ``result["arms"]``."""
    result.setdefault("arms", {})          # "arms": the key the results files keep the variants under
    for name, run in variants.items():
        with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
            result["arms"][name] = run(Path(tmp))
        print(name, json.dumps(result["arms"][name]), flush=True)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return result
