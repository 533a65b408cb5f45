"""The loopback HTTP server the provider fakes share: 127.0.0.1, a free port, a daemon thread, quiet logs."""

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def serve_posts(handle_post: Callable[[BaseHTTPRequestHandler], None]) -> ThreadingHTTPServer:
    """Answer every POST with `handle_post(handler)` on a free loopback port until `stop_serving`."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            handle_post(self)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


def stop_serving(server: ThreadingHTTPServer | None) -> None:
    if server is not None:
        server.shutdown()
        server.server_close()
