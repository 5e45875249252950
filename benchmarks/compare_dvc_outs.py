"""Compare the outputs two runs of the pipeline recorded, out by out: `python benchmarks/compare_dvc_outs.py
BEFORE/dvc.lock AFTER/dvc.lock [--rename OLD=NEW ...]` prints JSON with every out's md5 on both sides.

It is how a change that must not change a number is checked: run `dvc repro -f` before and after it on one
machine, then compare the two dvc.lock files. Outs are matched by path (stage names may differ); `--rename`
maps an out that moved. Reports (`.ipynb`/`.html`), dvclive logs and resumable states are listed apart:
they hold wall-clock times and code digests, so they differ between any two runs.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

TIMED = ("reports/", "logs/")                 # executed notebooks and dvclive logs record wall-clock times


def outs(lock: Path) -> dict[str, str]:
    """out path -> md5 of every out of every stage in a dvc.lock."""
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    return {o["path"]: o.get("md5", "") for st in stages.values() for o in st.get("outs", [])}


def compare(before: dict[str, str], after: dict[str, str], renames: dict[str, str]) -> dict:
    before = {renames.get(p, p): m for p, m in before.items()}
    timed = {p for p in before.keys() | after.keys() if p.startswith(TIMED) or p.endswith("/state")}
    result: dict = {"identical": {}, "different": {}, "only_before": [], "only_after": [], "timed_or_state": sorted(timed)}
    for path in sorted(before.keys() | after.keys()):
        if path in timed:
            continue
        if path not in after:
            result["only_before"].append(path)
        elif path not in before:
            result["only_after"].append(path)
        else:
            side = "identical" if before[path] == after[path] else "different"
            result[side][path] = before[path] if side == "identical" else {"before": before[path], "after": after[path]}
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    ap.add_argument("--rename", action="append", default=[], metavar="OLD=NEW", help="an out that moved")
    args = ap.parse_args(argv)
    renames = dict(r.split("=", 1) for r in args.rename)
    result = compare(outs(args.before), outs(args.after), renames)
    print(json.dumps(result, indent=1))
    return 1 if result["different"] or result["only_before"] or result["only_after"] else 0


if __name__ == "__main__":
    sys.exit(main())
