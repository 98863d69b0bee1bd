"""A minimal HTTP server on loopback that keeps the JSON bodies POSTed to it (a stand-in for
Slack's and Teams' incoming webhooks, which cannot be reached here). ``status`` sets the answer."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            payload = json.loads(body or b"null")
        except ValueError:
            payload = body.decode(errors="replace")
        self.server.posts.append({"path": self.path, "json": payload})
        self.send_response(self.server.status)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"ok" if self.server.status == 200 else b"refused")

    def log_message(self, *args) -> None:  # quiet
        pass


class HttpSink:
    """``with HttpSink() as sink:`` a server at ``sink.url``; ``sink.posts`` the bodies received."""

    def __init__(self, status: int = 200) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.posts = []
        self.server.status = status
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def posts(self) -> list[dict]:
        return self.server.posts

    def __enter__(self) -> HttpSink:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
