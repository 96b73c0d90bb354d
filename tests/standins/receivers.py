"""Real notification receivers on 127.0.0.1 for Apprise: an HTTP endpoint (json://) and an SMTP server."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_string
from email.message import Message
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult


@dataclass
class HttpReceiver:
    port: int = 0
    received: list[dict[str, Any]] = field(default_factory=list)
    fail_next: int = 0  # answer 503 to this many requests first


@contextmanager
def http_receiver() -> Iterator[HttpReceiver]:
    state = HttpReceiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers["content-length"]))
            if state.fail_next > 0:
                state.fail_next -= 1
                self.send_response(503)
            else:
                state.received.append({"path": self.path, **json.loads(body)})
                self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_port
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()


@dataclass
class SmtpReceiver:
    port: int
    user: str
    password: str
    messages: list[Message] = field(default_factory=list)


@contextmanager
def smtp_receiver(user: str = "alerts", password: str = "s3cret-smtp-pass") -> Iterator[SmtpReceiver]:
    with socket.socket() as sock:  # aiosmtpd needs a concrete port
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    state = SmtpReceiver(port, user, password)

    class Handler:
        async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:  # noqa: N802
            state.messages.append(message_from_string(envelope.content.decode()))
            return "250 OK"

    def authenticate(
        server: object, session: object, envelope: object, mechanism: str, data: Any
    ) -> AuthResult:
        return AuthResult(success=data.login == user.encode() and data.password == password.encode())

    controller = Controller(
        Handler(), hostname="127.0.0.1", port=port, authenticator=authenticate, auth_require_tls=False
    )  # loopback relay: no TLS
    controller.start()
    try:
        yield state
    finally:
        controller.stop()
