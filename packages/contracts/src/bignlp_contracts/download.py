"""HTTP(S) downloads that survive flaky networks: resume, retry with backoff, verify, rename.

Shared by the stages that fetch inputs (``bignlp-dataprep`` corpora and tokenizers,
``bignlp-evaluate download`` task files); moved here from bignlp-dataprep.

A download streams into ``DEST.part``; an interrupted one (a cut connection, a
timeout, a killed process) is resumed with an HTTP ``Range`` request, from where
the ``.part`` file ends. Only a complete, verified file is renamed to ``DEST``,
so the presence of ``DEST`` means "downloaded". Standard library only (urllib); the progress bar
is tqdm's when tqdm is installed, else a line on stderr every few seconds.

Failures a later attempt may cure (connection reset, truncated body, timeout,
HTTP 5xx/429) are retried with exponential backoff and end in RetryableError
(exit 75, which the sbatch templates requeue); a 4xx answer is the URL's fault
and raises InputError at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import os
import re
import socket
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from .errors import InputError, RetryableError
from .manifest import sha256_file

_CHUNK = 1 << 20
_MAX_BACKOFF_S = 60.0
USER_AGENT = "bignlp"


class _Transient(Exception):
    """One attempt failed in a way the next attempt may not."""


def download(
    url: str,
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    size: int | None = None,
    retries: int = 5,
    backoff_s: float = 1.0,
    timeout_s: float = 60,
    progress: bool = True,
) -> Path:
    """Fetch ``url`` to ``dest`` (resuming ``dest.part``) and return ``dest``.

    An existing ``dest`` that matches ``size``/``sha256`` (or any existing ``dest``
    when neither is given) is kept without a request. ``retries`` is the number of
    attempts after the first; retry ``k`` (1, 2, ...) first waits ``backoff_s * 2**(k-1)``
    seconds (at most 60).
    """
    dest = Path(dest)
    if dest.is_file():
        if _matches(dest, size, sha256) is None:
            return dest
        dest.unlink()  # a stale or different file: fetch it again
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    last: BaseException | None = None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(min(backoff_s * 2 ** (attempt - 1), _MAX_BACKOFF_S))
        try:
            _attempt(url, part, size=size, timeout_s=timeout_s, progress=progress)
            break
        except _Transient as exc:
            last = exc.__cause__ or exc
    else:
        raise RetryableError(
            f"download of {url} failed after {retries + 1} attempts: {_describe(last)}",
            hint=f"run the same command again to resume from {part.name}",
        )
    problem = _matches(part, size, sha256)
    if problem:
        part.unlink()
        raise InputError(f"download of {url}: {problem}",
                         hint="check the URL and the checksum list; the partial file was removed")
    os.replace(part, dest)
    return dest


def _attempt(url: str, part: Path, *, size: int | None, timeout_s: float, progress: bool) -> None:
    offset = part.stat().st_size if part.is_file() else 0
    if size is not None and offset > size:
        offset = 0  # longer than the file can be: start over
    if size is not None and offset == size:
        return
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        with contextlib.closing(urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                                       timeout=timeout_s)) as resp:
            start = _start_of(resp, offset)
            length = resp.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            total = start + expected if expected is not None else size
            with open(part, "r+b" if start and part.exists() else "wb") as f:
                f.seek(start)
                f.truncate()
                received = 0
                with _progress_bar(total=total, initial=start, desc=part.name.removesuffix(".part"),
                                   enabled=progress) as bar:
                    for chunk in _read_chunks(resp):
                        f.write(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
                f.flush()
                os.fsync(f.fileno())
            if expected is not None and received < expected:
                raise _Transient(f"connection closed after {received} of {expected} bytes")
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # the .part is already whole (or the server disagrees): restart
            if size is None or offset != size:
                part.unlink()
                raise _Transient("HTTP 416 for a resumed download; starting over") from exc
            return
        if exc.code == 429 or exc.code >= 500:
            raise _Transient(f"HTTP {exc.code}") from exc
        raise InputError(f"download of {url} failed: HTTP {exc.code} {exc.reason}",
                         hint="check the URL") from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, (OSError, socket.timeout)):
            raise _Transient(str(exc.reason)) from exc
        raise InputError(f"download of {url} failed: {exc.reason}") from None
    except (ConnectionError, TimeoutError, ssl.SSLError, http.client.HTTPException) as exc:
        # resets, timeouts, IncompleteRead; local write errors (disk full) are not retried
        raise _Transient(str(exc) or exc.__class__.__name__) from exc


class _LineProgress:
    """tqdm's ``update`` without tqdm: one stderr line at most every 10 s (bytes so far, of the total if known)."""

    def __init__(self, total: int | None, initial: int, desc: str, enabled: bool) -> None:
        self.total, self.done, self.desc, self.enabled = total, initial, desc, enabled
        self.last = time.monotonic()

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and now - self.last >= 10:
            self.last = now
            of = f" of {self.total / 2**20:.1f}" if self.total else ""
            sys.stderr.write(f"{self.desc}: {self.done / 2**20:.1f}{of} MiB\n")


@contextlib.contextmanager
def _progress_bar(*, total: int | None, initial: int, desc: str, enabled: bool) -> Iterator:
    try:
        from tqdm import tqdm
    except ImportError:  # contracts needs nothing but pyyaml
        yield _LineProgress(total, initial, desc, enabled)
        return
    with tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
              file=sys.stderr, leave=False, disable=None if enabled else True, dynamic_ncols=True) as bar:
        yield bar


def _start_of(resp, offset: int) -> int:
    """Where the body starts in the file: ``offset`` for a 206, 0 when the server ignored Range."""
    if resp.status != 206:
        return 0
    m = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range", ""))
    if not m or int(m.group(1)) != offset:
        raise _Transient(f"server answered Range {offset}- with Content-Range {resp.headers.get('Content-Range')!r}")
    return offset


def _read_chunks(resp) -> Iterator[bytes]:
    while True:
        try:
            chunk = resp.read1(_CHUNK)  # what has arrived: progress, and kept bytes on a cut
        except http.client.IncompleteRead as exc:  # keep what arrived; the next attempt resumes after it
            if exc.partial:
                yield exc.partial
            raise
        if not chunk:
            return
        yield chunk


def _matches(path: Path, size: int | None, sha256: str | None) -> str | None:
    """None if ``path`` has the expected size and hash, else what is wrong."""
    actual = path.stat().st_size
    if size is not None and actual != size:
        return f"got {actual} bytes, expected {size}"
    if sha256 is not None:
        digest = sha256_file(path)
        if digest != sha256.lower():
            return f"sha256 mismatch: got {digest}, expected {sha256.lower()}"
    return None


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    return " ".join((str(exc) or exc.__class__.__name__).split())


def parse_sha256sums(text: str, source: str = "sha256sums") -> dict[str, str]:
    """``<hex>  <name>`` lines (the output of ``sha256sum``) → {name: hex}; ``*name`` (binary mode) too."""
    sums = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = re.fullmatch(r"\s*([0-9a-fA-F]{64})\s+\*?(.+?)\s*", line)
        if not m:
            raise InputError(f"{source}:{lineno}: expected '<sha256 hex>  <file name>'")
        sums[Path(m.group(2)).name] = m.group(1).lower()
    return sums


def fetch_sha256sums(url_or_path: str, dest_dir: Path, **kw) -> dict[str, str]:
    """Read a checksum list from a local path or URL (downloaded once into ``dest_dir``)."""
    if is_url(url_or_path):
        path = dest_dir / "sha256sums.txt"
        with file_lock(path):
            download(url_or_path, path, **kw)
    else:
        path = Path(url_or_path)
        if not path.is_file():
            raise InputError(f"checksum list {path} does not exist")
    return parse_sha256sums(path.read_text(encoding="utf-8"), str(url_or_path))


def is_url(text: str) -> bool:
    """True for http:// and https:// addresses."""
    return text.startswith(("http://", "https://"))


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path.lock``, so array tasks sharing a file download it once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def content_length(url: str, *, timeout_s: float = 60, retries: int = 5, backoff_s: float = 1.0) -> int:
    """The size of ``url`` from an HTTP HEAD's Content-Length (retried as downloads are)."""
    last: BaseException | None = None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(min(backoff_s * 2 ** (attempt - 1), _MAX_BACKOFF_S))
        request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": USER_AGENT,
                                                                       "Accept-Encoding": "identity"})
        try:
            with contextlib.closing(urllib.request.urlopen(request, timeout=timeout_s)) as resp:
                length = resp.headers.get("Content-Length")
            if not length or not length.isdigit():
                raise InputError(f"HEAD {url}: no Content-Length", hint="give the sizes in a sizes_file")
            return int(length)
        except urllib.error.HTTPError as exc:
            if exc.code != 429 and exc.code < 500:
                raise InputError(f"HEAD {url} failed: HTTP {exc.code} {exc.reason}") from None
            last = exc
        except (urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException) as exc:
            last = exc
    raise RetryableError(f"HEAD {url} failed after {retries + 1} attempts: {_describe(last)}")
