"""The provider emulators (workers/sandbox/) in a process of their own, answering after ``--latency``
seconds, as a provider would from across the network.

    python -m bench.emulators --oracle-dir DIR --web-url URL --latency 0.2

Prints one JSON line once every emulator listens: the DISPATCH_* settings that point the gateways at
them. Each emulator appends what it accepted to DIR/oracle-<provider>.jsonl (the sandbox oracle; the
last line for a provider id is that send's final outcome). Runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--oracle-dir", type=Path, required=True)
    parser.add_argument("--web-url", required=True)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each send is answered")
    options = parser.parse_args()

    from workers.sandbox.serve import DEFAULT_PORTS, serve_all
    from workers.sandbox.server import free_port

    running = serve_all(
        web_url=options.web_url,
        oracle_dir=options.oracle_dir,
        ports={name: free_port() for name in DEFAULT_PORTS},
    )
    for state in running.states.values():
        state.latency = options.latency
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(json.dumps(running.settings), flush=True)
    stop.wait()
    running.stop()
    sys.exit(0)


if __name__ == "__main__":
    main()
