"""A local HTTP server for the download tests, run as a subprocess: ``python task_server.py ROOT``.

Binds 127.0.0.1 on a free port and prints the port as its first line. Routes:

- ``/files/REL``      ROOT/REL; ``Range: bytes=N-`` answered with 206 and the rest
- ``/cut/N/REL``      as /files, but the first N requests for the URL get the headers and half the body,
                      then the connection is closed (an interrupted download)
- ``/_log``           JSON list of [path, Range header] of the requests so far
- anything else       404
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(".")
LOG: list[list] = []
SEEN: dict[str, int] = {}
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        with LOCK:
            LOG.append([self.path, self.headers.get("Range")])
            seen = SEEN.get(self.path, 0)
            SEEN[self.path] = seen + 1
        parts = self.path.lstrip("/").split("/")
        if parts[0] == "_log":
            with LOCK:
                return self._send(200, json.dumps(LOG).encode())
        if parts[0] == "files":
            return self._file("/".join(parts[1:]), cut=False)
        if parts[0] == "cut" and len(parts) > 2:
            return self._file("/".join(parts[2:]), cut=seen < int(parts[1]))
        return self._send(404, b"not found\n")

    def _send(self, code: int, body: bytes, headers: dict | None = None) -> None:
        self.send_response(code)
        for key, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _file(self, rel: str, *, cut: bool) -> None:
        path = ROOT / rel
        if not path.is_file():
            return self._send(404, b"not found\n")
        data = path.read_bytes()
        start = 0
        rng = self.headers.get("Range", "")
        if rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[len("bytes="):-1])
        body = data[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body)))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if cut:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


def main() -> None:
    global ROOT
    ROOT = Path(sys.argv[1])
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
