"""``python -m omni_core.data {prepare,validate,import-llava,card}``."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..config import REPO_ROOT, load_config


def _processor(args, manifest_dir: Path):
    """The OmniProcessor for deep validation: ``--tokenizer`` or the prepared ``tokenizer/``."""
    tok_dir = Path(args.tokenizer) if args.tokenizer else manifest_dir / "tokenizer"
    if not tok_dir.is_dir():
        raise SystemExit(f"--deep needs a tokenizer: {tok_dir} does not exist; pass --tokenizer DIR")
    from ..model.tokenizer import load_tokenizer
    from ..processing import OmniProcessor
    model_cfg = load_config(args.params).model
    return OmniProcessor(load_tokenizer(tok_dir, model_cfg.trust_remote_code), model_cfg)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m omni_core.data", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="build data/prepared: manifests, media, tokenizer, data card")
    p.add_argument("--params", default=str(REPO_ROOT / "params.yaml"))
    p.add_argument("--out", default=None, help="output folder (default: data.root of the params)")
    p.add_argument("--profile", default=None, help="tiny|small|full|smoke (default: the params' profile)")
    p.add_argument("--workers", type=int, default=2, help="flite processes (default 2)")
    v = sub.add_parser("validate", help="check manifests; one line per problem, exit 1 if any")
    v.add_argument("manifests", nargs="+")
    v.add_argument("--no-media", action="store_true", help="skip decoding media files (paths are still checked)")
    v.add_argument("--deep", action="store_true", help="also run the OmniProcessor on every sample")
    v.add_argument("--tokenizer", default=None, help="tokenizer folder for --deep (default: <manifest dir>/tokenizer)")
    v.add_argument("--params", default=str(REPO_ROOT / "params.yaml"))
    i = sub.add_parser("import-llava", help="convert LLaVA / ShareGPT JSON into a manifest")
    i.add_argument("json")
    i.add_argument("--media-root", required=True, help="folder the JSON's media paths are relative to")
    i.add_argument("--out", required=True, help="manifest to write; media are copied to <its folder>/media/")
    i.add_argument("--task", default=None, help="task of every record: a built-in one or one declared under "
                   "`tasks:` in --params (default: a built-in task guessed from its media)")
    i.add_argument("--params", default=str(REPO_ROOT / "params.yaml"), help="where user tasks are declared")
    i.add_argument("--split", default="train", choices=["train", "val", "test"])
    i.add_argument("--source", default=None)
    i.add_argument("--license", default="unknown")
    c = sub.add_parser("card", help="rewrite card.md and stats.json from the manifests in a folder")
    c.add_argument("--params", default=str(REPO_ROOT / "params.yaml"))
    c.add_argument("--dir", default=None)
    args = ap.parse_args(argv)

    if args.cmd == "prepare":
        from .prepare import prepare
        cfg = load_config(args.params, profile=args.profile)
        print(json.dumps(prepare(cfg, args.out, workers=args.workers), indent=1))
        return 0
    if args.cmd == "validate":
        from .validate import validate_manifests
        paths = [Path(m) for m in args.manifests]
        proc = _processor(args, paths[0].parent) if args.deep else None
        tasks = load_config(args.params).task_registry()      # the built-ins and params.yaml `tasks:`
        problems = validate_manifests(paths, check_media=not args.no_media, processor=proc, known_tasks=tasks)
        for prob in problems:
            print(prob)
        if problems:
            print(f"{len(problems)} problem(s) in {len(paths)} manifest(s)", file=sys.stderr)
            return 1
        n = sum(1 for p in paths for line in p.open() if line.strip())
        print(f"ok: {n} samples in {len(paths)} manifest(s)", file=sys.stderr)
        return 0
    if args.cmd == "import-llava":
        from .llava import LlavaImportError, import_llava
        try:
            n = import_llava(args.json, args.media_root, args.out, args.task, args.split, args.source, args.license,
                             known_tasks=load_config(args.params).task_registry())
        except LlavaImportError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(f"wrote {n} samples to {args.out}", file=sys.stderr)
        return 0
    if args.cmd == "card":
        from .card import write_card
        out = Path(args.dir or load_config(args.params).data.root)
        stats = write_card(out)
        print(f"wrote {out / 'card.md'} and {out / 'stats.json'} ({len(stats['tasks'])} tasks)", file=sys.stderr)
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
