"""What every notebook stage of `dvc repro` pays besides its own work (JSON on stdout), variants side by side:

- kernel shutdown: a kernel that imported what a training stage imports (torch, transformers, omni_core's
  model and loop) is asked to exit (papermill's default) or killed once its last cell has run (what
  `python -m omni_core.notebooks run` does): the interpreter's teardown is the difference;
- the runner's imports: `import papermill` in a fresh interpreter, as installed and with `rfc3987_syntax`
  blocked (what `python -m omni_core.notebooks run` does; jsonschema builds a Lark grammar with it);
- the model's imports: `import omni_core.model.omni` in a fresh interpreter, with transformers' generation
  code loaded first as transformers loads it (it then imports scikit-learn) and as omni_core loads it
  (scikit-learn hidden from that code);
- video decoding (1d, 1f, SFT and evaluation decode ~2,800 clips): PyAV's `frame.to_image()`, which builds
  a pixel-format converter per frame, against `load_video_frames` (one per video), on tiny moving-digit
  clips like the data's; the frames must be equal.

    python benchmarks/bench_notebook_overhead.py [--reps 3] [--out benchmarks/results/notebook_overhead.json]

The variants alternate, so a slow minute on a shared machine hits both.
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


def _model_import_seconds(sklearn_hidden: bool) -> float:
    first = "" if sklearn_hidden else "import transformers.generation.candidate_generator\n"
    code = f"import time\nt = time.perf_counter()\n{first}import omni_core.model.omni\nprint(time.perf_counter() - t)"
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def _videos(folder: Path, n: int = 200) -> list[Path]:
    import numpy as np

    from omni_core.data.sources.media import write_mp4
    from omni_core.data.sources.video import moving_digit

    rng = np.random.default_rng(0)
    digit = (rng.random((28, 28)) * 255).astype(np.uint8)
    paths = [folder / f"clip{i}.mp4" for i in range(n)]
    for i, p in enumerate(paths):
        write_mp4(p, moving_digit(digit, ("left", "right", "up", "down")[i % 4], 4, 32, rng), fps=1.0)
    return paths


def _decode_ms(paths: list[Path], per_frame_converter: bool) -> tuple[float, list]:
    """Milliseconds per clip, and every clip's frames as arrays."""
    import av
    import numpy as np

    from omni_core.processing import load_video_frames

    clips = []
    t = time.perf_counter()
    for p in paths:
        if per_frame_converter:
            with av.open(str(p)) as c:
                stream = c.streams.video[0]
                stream.thread_type = "AUTO"
                clips.append([f.to_image() for f in c.decode(stream)])
        else:
            clips.append(load_video_frames({"type": "video", "path": p.name}, p.parent, fps=1.0, max_frames=64))
    ms = 1000 * (time.perf_counter() - t) / len(paths)
    return ms, [np.asarray(f) for frames in clips for f in frames]


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
    model_imports: dict[str, list[float]] = {"sklearn_imported": [], "sklearn_hidden": []}
    decode: dict[str, list[float]] = {"converter_per_frame": [], "converter_per_video": []}
    with tempfile.TemporaryDirectory() as tmp:
        nb = _notebook(Path(tmp) / "stage.ipynb")
        clips = _videos(Path(tmp) / "clips")
        for _ in range(args.reps):
            for k in shutdowns:
                w, t = _papermill_seconds(nb, Path(tmp) / f"out_{k}.ipynb", k)
                wall[k].append(w)
                teardown[k].append(t)
            for k, block in (("as_installed", False), ("rfc3987_blocked", True)):
                imports[k].append(_import_seconds(block))
            for k, hidden in (("sklearn_imported", False), ("sklearn_hidden", True)):
                model_imports[k].append(_model_import_seconds(hidden))
            (ms_frame, a), (ms_video, b) = _decode_ms(clips, True), _decode_ms(clips, False)
            assert len(a) == len(b) and all((x == y).all() for x, y in zip(a, b)), "the two decoders' frames differ"
            decode["converter_per_frame"].append(ms_frame)
            decode["converter_per_video"].append(ms_video)
    med, shut, imp = ({k: round(statistics.median(v), 2) for k, v in d.items()} for d in (wall, teardown, imports))
    model_imp, dec = ({k: round(statistics.median(v), 2) for k, v in d.items()} for d in (model_imports, decode))
    saved = (med["graceful"] - med["immediate"]) + (imp["as_installed"] - imp["rfc3987_blocked"])
    report = json.dumps({
        "stage_imports": STAGE_IMPORTS, "reps": args.reps,
        "notebook_run_seconds": med, "last_cell_to_papermill_return_seconds": shut,
        "papermill_import_seconds": imp,
        "model_import_seconds": model_imp, "model_import_ratio_hidden_to_imported":
            round(model_imp["sklearn_hidden"] / model_imp["sklearn_imported"], 2),
        "video_decode_ms_per_clip": dec, "video_decode_ratio_per_video_to_per_frame":
            round(dec["converter_per_video"] / dec["converter_per_frame"], 2),
        "saved_per_stage_seconds": round(saved, 2), "notebook_stages_in_dvc_yaml": notebook_stages,
        "saved_per_repro_seconds": round(saved * notebook_stages, 1),
        "runs": {"notebook_run_seconds": wall, "last_cell_to_papermill_return_seconds": teardown,
                 "papermill_import_seconds": imports, "model_import_seconds": model_imports,
                 "video_decode_ms_per_clip": decode},
    }, indent=2)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(report + "\n")
    print(report)


if __name__ == "__main__":
    main()
