"""`python -m omni_core.train --stage NAME [--params params.yaml] [--profile P] [--set key=value ...]`

Also runs under `torchrun --nproc_per_node N -m omni_core.train ...` and the `deepspeed` launcher
(`deepspeed --module omni_core.train ...`; it passes `--local_rank`, which is accepted and ignored:
the rank comes from the environment). `--set train.backend=deepspeed --set stages.2_sft.steps=10`
overrides any params key (values parsed as YAML).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

from omni_core.config import REPO_ROOT, ConfigError, load_config, parse_overrides
from omni_core.train.launch import LOG_FORMAT, progress_default


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m omni_core.train", description=__doc__.split("\n")[0])
    ap.add_argument("--stage", required=True, help="stage name in params.yaml, e.g. 1a_image_caption")
    ap.add_argument("--params", default=str(REPO_ROOT / "params.yaml"), help="params file (default: the repo's)")
    ap.add_argument("--profile", default=None, help="tiny | small | full | smoke (default: params.yaml's)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="override a params key, e.g. --set stages.2_sft.steps=10 (repeatable; YAML values)")
    ap.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    from omni_core.train.run_state import CheckpointMismatchError

    try:
        cfg = load_config(args.params, overrides=parse_overrides(args.sets) or None, profile=args.profile)
        from omni_core.train.loop import train_stage

        # no bar in an executed notebook's report: train_stage passes disable= to tqdm, which overrides tqdm's own check
        result = train_stage(cfg, args.stage, progress=progress_default())
    except (ConfigError, CheckpointMismatchError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if result.get("rank", 0) == 0:
        print(json.dumps({k: v for k, v in result.items() if k not in ("rank", "model")}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
