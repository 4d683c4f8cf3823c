"""Child process of the embedded backend: moto's server until stdin closes.

Run as ``python -m agent.cloud.local_server``; prints ``PORT <n>`` when ready.
"""

from __future__ import annotations

import logging
import os
import signal
import sys


def main() -> int:
    # moto's S3 reads these at import; the backend must never touch the real AWS.
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "thumbdrop-local")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "thumbdrop-local")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the owner decides when we stop
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        print("moto[server] is not installed", file=sys.stderr)
        return 2
    # werkzeug logs a line per request: 9% of the server's CPU, for output nobody reads.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    _host, port = server.get_host_and_port()
    sys.stdout.write(f"PORT {port}\n")
    sys.stdout.flush()
    # Block until the owner closes our stdin (or dies): then stop.
    while sys.stdin.buffer.read(65536):
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
