"""CLI: ``python -m omni_core.eval --checkpoint checkpoints/2_sft/model``.

Writes ``metrics/<table>.json`` + ``metrics/predictions.jsonl`` and the Markdown tables
(``metrics/tables.md``), and prints the tables.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from omni_core.config import REPO_ROOT, load_config, parse_overrides

from .runner import evaluate
from .tables import render_markdown


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m omni_core.eval", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", help="HF checkpoint directory (default: checkpoints/<eval.checkpoint>/model)")
    ap.add_argument("--params", default=str(REPO_ROOT / "params.yaml"))
    ap.add_argument("--profile", default=None, help="tiny | small | full | smoke (default: params.yaml's)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--tasks", nargs="*", help="only these tasks (default: every task in the split)")
    ap.add_argument("--batch-size", type=int, help="overrides eval.batch_size")
    ap.add_argument("--device", default=None, help="cpu | cuda | cuda:1 ... (default: the GPU when there is one)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="config override, e.g. --set eval.max_samples_per_task=10 (values parsed as YAML)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = load_config(args.params, overrides=parse_overrides(args.sets) or None, profile=args.profile)
    ckpt = args.checkpoint or str(Path(cfg.train.checkpoints_dir) / cfg.eval.checkpoint / "model")
    results = evaluate(cfg, ckpt, split=args.split, tasks=args.tasks, batch_size=args.batch_size, device=args.device)
    md = render_markdown(results)
    (Path(cfg.eval.metrics_dir) / "tables.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
