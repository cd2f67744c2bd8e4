"""Connection URLs in messages: passwords hidden, and a quick check that a server answers at all."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit, urlunsplit

#: seconds to wait for a tracking server's TCP handshake before calling it unreachable
CONNECT_TIMEOUT_S = 5.0
DEFAULT_PORTS = {"http": 80, "https": 443}


def hide_password(url: str) -> str:
    """``url`` with the password of its ``user:password@`` part replaced by ``***``."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    if not password:
        return url
    netloc = parts.netloc.replace(f":{password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def scrub(text: str, url: str) -> str:
    """``text`` (e.g. an error message) with ``url``'s password, wherever it appears, replaced by ``***``."""
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    return text.replace(url, hide_password(url)).replace(password, "***") if password else text


def unreachable(url: str, timeout: float = CONNECT_TIMEOUT_S) -> str | None:
    """Why the HTTP(S) server of ``url`` cannot be reached (no TCP connection within ``timeout`` seconds), or
    None when it answers or ``url`` is not an HTTP(S) URL."""
    try:
        parts = urlsplit(url)
        port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError as exc:
        return f"not a valid URL ({exc})"
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or port is None:
        return None
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        return f"no connection to {parts.hostname}:{port} within {timeout:g} s ({reason})"
