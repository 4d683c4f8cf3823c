"""open, gallery: the gallery page in a browser, served by the agent or on its own."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from types import FrameType
from typing import Any

from agent.config.loader import load
from agent.errors import EXIT_OK, UsageError
from agent.gallery.launch import entry_url, open_in_browser, running_gallery

log = logging.getLogger(__name__)


def register(sub: Any) -> None:
    p = sub.add_parser("open", help="open the gallery (thumbnails and live status) in the default browser")
    p.add_argument(
        "--print",
        dest="print_only",
        action="store_true",
        help="print the entry URL instead (it holds the token: keep it private)",
    )
    p.set_defaults(func=cmd_open)
    p = sub.add_parser("gallery", help="serve the gallery from the local folders (no agent needed) until Ctrl+C")
    p.add_argument("--port", type=int, metavar="N", help="port on 127.0.0.1 (default: gallery.port; 0: any free one)")
    p.add_argument("--open", dest="open_browser", action="store_true", help="also open it in the default browser")
    p.set_defaults(func=cmd_gallery)


def cmd_open(args: argparse.Namespace) -> int:
    from agent.ops.backend import state_dir

    url = entry_url(state_dir(load(args.config, local=args.local)))
    if args.print_only:
        print(url)
    else:
        open_in_browser(url)
        print("gallery opened in your browser")
    return EXIT_OK


def cmd_gallery(args: argparse.Namespace) -> int:
    from agent.gallery.server import Gallery
    from agent.ops.backend import state_dir

    cfg = load(args.config, local=args.local)
    sdir = state_dir(cfg)
    other = running_gallery(sdir)
    if other is not None:
        raise UsageError(
            f"a gallery is already serving this state dir on port {other['port']} (pid {other.get('pid')})",
            hint="open it with 'thumbdrop open'",
        )
    if args.port is not None and not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be between 0 and 65535, got {args.port}")
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    gallery = Gallery(cfg, sdir, port=args.port, standalone=True)
    try:
        gallery.start()
        print(f"gallery at {gallery.url} — open it with 'thumbdrop open'; Ctrl+C stops it", flush=True)
        if args.open_browser:
            open_in_browser(entry_url(sdir))
        while not stop.wait(0.5):
            pass
    finally:
        gallery.stop()
        gallery.join(5.0)
        for s, h in previous.items():
            signal.signal(s, h)
    return EXIT_OK
