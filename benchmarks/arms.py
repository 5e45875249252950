"""What the side-by-side benchmarks share: each arm runs in a temporary folder of its own and prints its
line when it finishes; the whole result is printed and written as JSON at the end."""
from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path


def run_arms(arms: dict[str, Callable[[Path], dict]], result: dict, out: str | Path, prefix: str) -> dict:
    """Run each arm (a function of its work folder returning its JSON record) into ``result["arms"]``."""
    result.setdefault("arms", {})
    for name, run in arms.items():
        with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
            result["arms"][name] = run(Path(tmp))
        print(name, json.dumps(result["arms"][name]), flush=True)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return result
