"""What each pipeline stage cost on the machine that ran it: the executed notebooks' run times (papermill's
``metadata.papermill.duration``) and, for training stages, the loop's own wall time and steps (dvclive's summary,
``logs/<stage>/metrics.json``). The small pipeline writes ``metrics/small/timing.json`` with it:

    python -m omni_core.eval.run_times --reports reports/small --logs logs/small --out metrics/small/timing.json

A stage resumed after an interruption counts the resumed part only.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def notebook_seconds(path: Path) -> float | None:
    """The run time papermill recorded in an executed notebook, or None (not executed by papermill)."""
    meta = json.loads(path.read_text()).get("metadata", {}).get("papermill", {})
    return round(meta["duration"], 1) if meta.get("duration") is not None else None


def training_summary(stage_log: Path) -> dict:
    """dvclive's summary of a stage ({} for a stage that never trained: skipped, or not run yet)."""
    f = stage_log / "metrics.json"
    return json.loads(f.read_text()) if f.is_file() else {}


def run_times(reports: str | Path, logs: str | Path) -> dict:
    """``{"notebooks": {report: seconds}, "training": {stage: {seconds, steps, seconds_per_step}}, ...}``."""
    import torch

    from omni_core.eval.runner import cpu_model

    notebooks = {p.stem: notebook_seconds(p) for p in sorted(Path(reports).glob("*.ipynb"))}
    training = {}
    for stage_dir in sorted(p for p in Path(logs).iterdir() if p.is_dir()):
        s = training_summary(stage_dir)
        if s.get("wall_s") is not None:
            steps = int(s.get("step", 0))
            training[stage_dir.name] = {"seconds": round(s["wall_s"], 1), "steps": steps,
                                        "seconds_per_step": round(s["wall_s"] / steps, 2) if steps else None}
    total = sum(v for v in notebooks.values() if v)
    return {"notebooks": notebooks, "training": training, "total_seconds": round(total, 1),
            "total_hours": round(total / 3600, 2), "cpu": cpu_model(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reports", required=True, help="folder of the executed notebooks (reports/small)")
    ap.add_argument("--logs", required=True, help="folder of the stages' logs (logs/small)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    result = run_times(args.reports, args.logs)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
