"""A local HTTP server for the download tests, run as a subprocess: ``python fixture_server.py ROOT``.

It prints its port (bound on 127.0.0.1, port 0) as the first line of stdout. Routes:

- ``/files/REL``            ROOT/REL, with ``Range: bytes=N-`` support (206)
- ``/norange/REL``          ROOT/REL, ignoring Range (always 200 with the whole file)
- ``/flaky/N/REL``          like /files, but the first N requests for this URL send the headers and
                            half of the body, then cut the connection
- ``/slow/MS/REL``          like /files, 16 KiB per write with MS milliseconds between writes
- ``/status/CODE/...``      always answers HTTP CODE
- ``HEAD /files/REL``       the headers of ROOT/REL (Content-Length), no body
- ``/_log``                 JSON list of [path, Range header] of every request so far
- anything else             404
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(".")
_COUNTS: dict[str, int] = {}
_LOG: list[list] = []
_LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:  # noqa: N802 (http.server's name)
        parts = self.path.lstrip("/").split("/")
        path = ROOT / "/".join(parts[1:])
        if parts[0] != "files" or not path.is_file():
            return self._send(404, b"")
        self.send_response(200)
        self.send_header("Content-Length", str(path.stat().st_size))
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        with _LOCK:
            _LOG.append([self.path, self.headers.get("Range")])
            seen = _COUNTS.get(self.path, 0)
            _COUNTS[self.path] = seen + 1
        parts = self.path.lstrip("/").split("/")
        route = parts[0]
        if route == "_log":
            with _LOCK:
                body = json.dumps(_LOG).encode()
            return self._send(200, body)
        if route == "status" and len(parts) > 1:
            return self._send(int(parts[1]), b"no\n")
        if route == "files":
            return self._file("/".join(parts[1:]), use_range=True)
        if route == "norange":
            return self._file("/".join(parts[1:]), use_range=False)
        if route == "flaky" and len(parts) > 2:
            return self._file("/".join(parts[2:]), use_range=True, cut=seen < int(parts[1]))
        if route == "slow" and len(parts) > 2:
            return self._file("/".join(parts[2:]), use_range=True, delay_s=int(parts[1]) / 1000)
        return self._send(404, b"not found\n")

    def _send(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _file(self, rel: str, *, use_range: bool, cut: bool = False, delay_s: float = 0.0) -> None:
        path = ROOT / rel
        if not path.is_file():
            return self._send(404, b"not found\n")
        data = path.read_bytes()
        start = 0
        header = self.headers.get("Range")
        if use_range and header and header.startswith("bytes="):
            start = int(header[len("bytes="):].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if cut:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        step = 16 << 10 if delay_s else len(body) or 1
        try:
            for i in range(0, len(body), step):
                self.wfile.write(body[i : i + step])
                if delay_s:
                    self.wfile.flush()
                    time.sleep(delay_s)
        except (BrokenPipeError, ConnectionResetError):  # the client went away (a killed test run)
            self.close_connection = True


def main() -> None:
    """Serve ``sys.argv[1]`` until killed."""
    global ROOT
    ROOT = Path(sys.argv[1])
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
