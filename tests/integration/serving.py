"""A real ``queuectl serve`` process on a test's private queue, and an HTTP client for it."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from typing import Any, Iterator

import httpx

from queuectl.service import tokens

from .conftest import Queue


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """``queuectl serve`` on 127.0.0.1 at a free port, with one token per scope set."""

    def __init__(self, queue: Queue, *args: str) -> None:
        self.queue = queue
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = queue.root / f"serve-{self.port}.log"
        queue.add_log(self.log)
        self.tokens: dict[str, str] = {}
        for name, scopes in {
            "read": ("read",),
            "control": ("read", "control"),
            "enqueue": ("enqueue",),
            "all": ("read", "control", "enqueue"),
        }.items():
            self.tokens[name] = tokens.create_token(queue.store, scopes, name)[1]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "queuectl", "serve", "--port", str(self.port), *args],
                env=queue.env,
                cwd=queue.root,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        queue.extra_groups.append(self.proc.pid)
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"serve did not start\n{self.log.read_text()}")
            time.sleep(0.1)

    def client(self, token: str | None = "all", **headers: str) -> httpx.Client:
        """A keep-alive client sending the named token (None: no token)."""
        if token is not None:
            headers["Authorization"] = f"Bearer {self.tokens.get(token, token)}"
        return httpx.Client(base_url=self.base, headers=headers, timeout=20)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def serving(queue: Queue, *args: str) -> Iterator[Server]:
    """A server for a fixture: started, yielded, stopped."""
    running = Server(queue, *args)
    try:
        yield running
    finally:
        running.stop()


def json_of(response: httpx.Response) -> Any:
    assert response.headers["content-type"].startswith("application/json"), response.text
    return response.json()
