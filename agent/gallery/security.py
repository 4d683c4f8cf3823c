"""The gallery's guards: the entry token, the session cookie, CSRF tokens, the Host check, safe file paths.

The token lives in the state dir (0600) so that ``thumbdrop open`` can read it; sessions and CSRF tokens
are HMACs keyed by it, so they survive a restart of the server (an agent reload) without a session store,
and all die together when the token file is removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Any

from agent.state.files import atomic_write

TOKEN_FILE = "gallery.token"
RUNTIME_FILE = "gallery.json"  # where a running gallery listens: read by 'thumbdrop open'
COOKIE = "thumbdrop_session"
CSRF_HEADER = "X-CSRF-Token"
# Served types: media only. A page or script dropped in a watch folder must never run on the gallery's origin.
MEDIA_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
    ".gif": "image/gif",
    ".avif": "image/avif",
    ".bmp": "image/bmp",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
    ".heic": "image/heic",
    ".mp4": "video/mp4",
    ".webm": "video/webm",
    ".mov": "video/quicktime",
}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; media-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def load_token(state_dir: Path) -> str:
    """The gallery's secret, made on first use (0600); a file readable by others is replaced, never trusted."""
    path = state_dir / TOKEN_FILE
    with contextlib.suppress(OSError):
        st = path.stat()
        token = path.read_text(encoding="utf-8").strip()
        if st.st_mode & 0o077 == 0 and st.st_uid == os.getuid() and len(token) >= 32:
            return token
    token = secrets.token_urlsafe(32)
    atomic_write(path, token + "\n", perms=0o600)
    return token


def read_token(state_dir: Path) -> str | None:
    """The token for ``thumbdrop open``, or None when no gallery has made one yet."""
    try:
        token = (state_dir / TOKEN_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return token or None


def write_runtime(state_dir: Path, info: dict[str, Any]) -> None:
    atomic_write(state_dir / RUNTIME_FILE, json.dumps(info), perms=0o600)


def read_runtime(state_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((state_dir / RUNTIME_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def remove_runtime(state_dir: Path, pid: int) -> None:
    """Remove the runtime file if this process wrote it (another gallery may have taken over)."""
    info = read_runtime(state_dir)
    if info is not None and info.get("pid") == pid:
        with contextlib.suppress(OSError):
            (state_dir / RUNTIME_FILE).unlink()


class Guard:
    """Checks made on every request, from the one secret."""

    def __init__(self, token: str, port: int) -> None:
        self._token = token
        self._key = hashlib.sha256(b"thumbdrop-gallery\0" + token.encode()).digest()
        self.port = port

    def allowed_hosts(self) -> set[str]:
        return {f"127.0.0.1:{self.port}", f"localhost:{self.port}"}

    def host_ok(self, host: str | None) -> bool:
        """Against DNS rebinding: a page of evil.example resolving to 127.0.0.1 still sends its own Host."""
        return host is not None and host.strip().lower() in self.allowed_hosts()

    def origin_ok(self, origin: str | None) -> bool:
        """A browser's Origin on a POST must be ours (absent is fine: the CSRF header is the real check)."""
        if origin is None:
            return True
        return origin.lower() in {f"http://{h}" for h in self.allowed_hosts()}

    def token_ok(self, offered: str | None) -> bool:
        return offered is not None and hmac.compare_digest(offered.encode(), self._token.encode())

    def _mac(self, purpose: str, value: str) -> str:
        return hmac.new(self._key, f"{purpose}\0{value}".encode(), hashlib.sha256).hexdigest()

    def new_session(self) -> str:
        nonce = secrets.token_hex(16)
        return f"{nonce}.{self._mac('session', nonce)}"

    def session_ok(self, cookie: str | None) -> bool:
        if not cookie or "." not in cookie:
            return False
        nonce, _, mac = cookie.partition(".")
        return hmac.compare_digest(mac.encode(), self._mac("session", nonce).encode())

    def csrf_for(self, session: str) -> str:
        return self._mac("csrf", session)

    def csrf_ok(self, session: str, offered: str | None) -> bool:
        return offered is not None and hmac.compare_digest(offered.encode(), self.csrf_for(session).encode())


def resolve_inside(root: Path, rel: str) -> Path | None:
    """The regular file ``root/rel`` after resolving symlinks and '..', if it is still inside ``root``; else None."""
    if not rel or "\x00" in rel or "\\" in rel or rel.startswith("/"):
        return None
    try:
        real_root = root.resolve(strict=True)
        target = (real_root / rel).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if target != real_root and real_root not in target.parents:
        return None
    return target if target.is_file() else None


def media_type(path: Path) -> str | None:
    return MEDIA_TYPES.get(path.suffix.lower())
