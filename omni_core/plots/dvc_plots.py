"""`dvc plots show --json` rendered to PNG/SVG offline with vl-convert (the HTML `dvc plots show` writes
loads Vega from a CDN and is blank offline)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path


# ------------------------------------------------------------------------------ offline dvc plots
def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "plot"


def render_dvc_plots(out_dir: str | Path, repo: str | Path = ".", targets: Iterable[str] = ()) -> list[Path]:
    """Run ``dvc plots show --json`` in ``repo`` and render every Vega-Lite spec to PNG + SVG offline.

    Image plots (already PNG files) are left alone. Needs ``vl-convert-python`` (requirements-optional).
    """
    try:
        import vl_convert as vlc
    except ImportError as e:           # optional dependency: say how to get it
        raise ImportError("render_dvc_plots needs vl-convert-python: pip install vl-convert-python") from e
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run([sys.executable, "-m", "dvc", "plots", "show", "--json", *targets], cwd=repo, env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"`dvc plots show --json` failed in {repo}: {proc.stderr.strip()[-800:]}")
    data = json.loads(proc.stdout).get("data", {})
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, plots in data.items():
        for i, plot in enumerate(plots):
            if plot.get("type") != "vega":
                continue
            stem = _slug(name) + (f"_{i}" if i else "")
            png, svg = out_dir / f"{stem}.png", out_dir / f"{stem}.svg"
            png.write_bytes(vlc.vegalite_to_png(plot["content"], scale=2))
            svg.write_text(vlc.vegalite_to_svg(plot["content"]))
            written += [png, svg]
    return written
