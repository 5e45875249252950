"""``python -m omni_core.web``: serve the live demo on localhost (``make demo`` runs it)."""
from __future__ import annotations

import argparse
import sys

from omni_core.stream import add_session_arguments, session_parts_from_args, warm_up
from omni_core.web.server import LiveOptions, LiveState, create_app


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Talk to the model from a browser: camera and microphone in, answers out.")
    add_session_arguments(ap)
    ap.add_argument("--host", default="127.0.0.1", help="interface to listen on; 0.0.0.0 exposes the model (and "
                    "your camera's conversation) to the network")
    ap.add_argument("--port", type=int, default=7860)
    ap.add_argument("--speak", action="store_true", help="also speak each answer with flite in the browser")
    args = ap.parse_args(argv)
    cfg, model, processor, speech_boundary = session_parts_from_args(args)
    warm_up(model, processor, cfg.stream)
    state = LiveState(model, processor, speech_boundary, cfg.stream, LiveOptions(speak=args.speak, profile=cfg.profile))

    import uvicorn  # imported here: the rest of omni_core never needs a web server

    print(f"[demo] {cfg.profile} model ready: open http://{args.host}:{args.port} and press Start", file=sys.stderr)
    uvicorn.run(create_app(state), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
