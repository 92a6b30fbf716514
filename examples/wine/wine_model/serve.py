"""Run the model server: `python -m wine_model.serve`.

Environment: HOST (default 127.0.0.1), PORT (default 8000), LOG_LEVEL (default
info), plus the server's own MLOPS_MODEL_DIR and MLOPS_MODEL_VERSION.

On SIGTERM (or Ctrl-C) uvicorn shuts down gracefully: it stops accepting
connections and lets in-flight requests finish, for at most 5 seconds. The
process then exits with status 0 after SIGTERM and 130 after Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import sys

import uvicorn


def _stopped(signum, frame):
    # Uvicorn catches SIGTERM itself, shuts down, restores the previous handler
    # (this one) and raises the signal again: by then the stop was clean.
    raise SystemExit(0)


def main() -> int:
    host = os.environ.get("HOST", "127.0.0.1")
    try:
        port = int(os.environ.get("PORT", "8000"))
        if not 0 <= port <= 65535:
            raise ValueError
    except ValueError:
        print(f"PORT must be a port number, got {os.environ['PORT']!r}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _stopped)
    try:
        uvicorn.run(
            "wine_model.server:app",
            host=host,
            port=port,
            log_level=os.environ.get("LOG_LEVEL", "info"),
            timeout_graceful_shutdown=5,
        )
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
