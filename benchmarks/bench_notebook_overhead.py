"""What every notebook stage of `dvc repro` pays besides its own work (JSON on stdout), arms side by side:

- kernel shutdown: a kernel that imported what a training stage imports (torch, transformers, omni_core's
  model and loop) is asked to exit (papermill's default) or killed once its last cell has run (what
  `python -m omni_core.notebooks run` does): the interpreter's teardown is the difference;
- the runner's imports: `import papermill` in a fresh interpreter, as installed and with `rfc3987_syntax`
  blocked (what `python -m omni_core.notebooks run` does; jsonschema builds a Lark grammar with it).

    python benchmarks/bench_notebook_overhead.py [--reps 3] [--out benchmarks/results/notebook_overhead.json]

The arms alternate, so a slow minute on a shared machine hits both.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from omni_core.config import REPO_ROOT  # noqa: E402

STAGE_IMPORTS = "import omni_core.model.omni, omni_core.train.loop, matplotlib.pyplot"   # a training stage's imports


def _notebook(path: Path) -> Path:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(STAGE_IMPORTS)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def _papermill_seconds(notebook: Path, out: Path, shutdown: str) -> tuple[float, float]:
    """(the whole run, the kernel's shutdown): papermill stamps the notebook's end after the kernel is gone."""
    import papermill

    t0 = time.perf_counter()
    nb = papermill.execute_notebook(str(notebook), str(out), kernel_name="python3", cwd=str(REPO_ROOT),
                                    progress_bar=False, shutdown_kernel=shutdown)
    wall = time.perf_counter() - t0
    stamp = datetime.fromisoformat
    return wall, (stamp(nb.metadata.papermill.end_time) - stamp(nb.cells[-1].metadata.papermill.end_time)).total_seconds()


def _import_seconds(block_rfc3987: bool) -> float:
    code = ("import sys, time\n"
            + ("sys.modules.setdefault('rfc3987_syntax', None)\n" if block_rfc3987 else "")
            + "t = time.perf_counter(); import papermill; print(time.perf_counter() - t)")
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results" / "notebook_overhead.json"))
    args = ap.parse_args()
    import yaml

    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    notebook_stages = sum(1 for s in stages.values() if str(s["cmd"]).startswith("${nb}"))
    shutdowns = ("graceful", "immediate")
    wall: dict[str, list[float]] = {k: [] for k in shutdowns}
    teardown: dict[str, list[float]] = {k: [] for k in shutdowns}
    imports: dict[str, list[float]] = {"as_installed": [], "rfc3987_blocked": []}
    with tempfile.TemporaryDirectory() as tmp:
        nb = _notebook(Path(tmp) / "stage.ipynb")
        for _ in range(args.reps):
            for k in shutdowns:
                w, t = _papermill_seconds(nb, Path(tmp) / f"out_{k}.ipynb", k)
                wall[k].append(w)
                teardown[k].append(t)
            for k, block in (("as_installed", False), ("rfc3987_blocked", True)):
                imports[k].append(_import_seconds(block))
    med, shut, imp = ({k: round(statistics.median(v), 2) for k, v in d.items()} for d in (wall, teardown, imports))
    saved = (med["graceful"] - med["immediate"]) + (imp["as_installed"] - imp["rfc3987_blocked"])
    report = json.dumps({
        "stage_imports": STAGE_IMPORTS, "reps": args.reps,
        "notebook_run_seconds": med, "last_cell_to_papermill_return_seconds": shut,
        "papermill_import_seconds": imp,
        "saved_per_stage_seconds": round(saved, 2), "notebook_stages_in_dvc_yaml": notebook_stages,
        "saved_per_repro_seconds": round(saved * notebook_stages, 1),
        "runs": {"notebook_run_seconds": wall, "last_cell_to_papermill_return_seconds": teardown,
                 "papermill_import_seconds": imports},
    }, indent=2)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(report + "\n")
    print(report)


if __name__ == "__main__":
    main()
