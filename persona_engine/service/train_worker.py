"""The training process the service starts: ``python -m persona_engine.service.train_worker``.

It fits a backend on the stored comparisons and registers the new version *inactive*
(``Engine.train(activate=False)``); the service switches to it once it is loaded. Running in its
own process keeps the server's event loop and GIL free for scoring, and a crash or kill of the
worker leaves the previous version active (model files are written to a temporary directory and
renamed; the registry row and profiles are written in transactions). The store is the one
``PERSONA_ENGINE_DATABASE`` names (the service sets it: a path, or a URL with its password). The
last line on stdout is JSON: ``{"model_id": ...}`` or ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="persona_engine.service.train_worker")
    parser.add_argument("--home", required=True, type=Path)
    parser.add_argument("--backend", required=True)
    parser.add_argument("--config", default="{}", help="backend options as JSON")
    parser.add_argument("--encoder", required=True)
    parser.add_argument("--encoder-config", default="{}")
    args = parser.parse_args(argv)

    from ..engine import Engine
    from ..errors import PersonaEngineError

    try:
        engine = Engine(
            args.home,
            encoder=args.encoder,
            encoder_config=json.loads(args.encoder_config),
        )
        record = engine.train(args.backend, json.loads(args.config), activate=False)
    except PersonaEngineError as e:
        print(json.dumps({"error": {"code": e.code, "message": e.message}}), flush=True)
        return 2
    print(json.dumps({"model_id": record.id}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
