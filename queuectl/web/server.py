"""Running the app: the bind rules of ``queuectl serve``, then uvicorn until Ctrl-C or SIGTERM.

Safe by default: 127.0.0.1; a non-loopback address only once tokens exist (an open port would
let anyone who reaches it run commands as the worker's user, with enqueue). TLS is the job of a
reverse proxy in front (README: "Behind a reverse proxy").
"""

from __future__ import annotations

import ipaddress
import socket
import sys

from queuectl.core.errors import InvalidInput, QueuectlError
from queuectl.service import tokens
from queuectl.web.http import Settings


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: whatever it resolves to, treat it as reachable from outside


def check_bind(settings: Settings, host: str) -> int:
    """How many tokens exist; refuses a non-loopback ``host`` while there are none."""
    count = len(tokens.list_tokens(settings.store()))
    if not is_loopback(host) and count == 0:
        raise InvalidInput(
            f"refusing to listen on {host}: no API token exists, so nobody could use it safely; "
            "create one first (queuectl token create --scope read) or bind 127.0.0.1"
        )
    return count


def run(settings: Settings, host: str, port: int) -> None:
    """Serve until stopped; the port is bound before the first message, so a caller may connect."""
    import uvicorn

    from queuectl.web.app import create_app

    count = check_bind(settings, host)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP spelled out: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and
    # without it every keep-alive response waits ~40 ms for a delayed ACK (Nagle)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise QueuectlError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(1024)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    hint = "" if count else "; no token yet: queuectl token create --scope read,control"
    print(f"serving http://{shown}:{bound}/ (API under /api); Ctrl-C to stop{hint}", file=sys.stderr, flush=True)
    config = uvicorn.Config(
        create_app(settings),
        log_level="warning",
        access_log=False,
        proxy_headers=True,  # X-Forwarded-Proto from a proxy on 127.0.0.1: cookies get Secure
        timeout_graceful_shutdown=2,
        server_header=False,
    )
    uvicorn.Server(config).run(sockets=[sock])
    print("stopped serving", file=sys.stderr, flush=True)
