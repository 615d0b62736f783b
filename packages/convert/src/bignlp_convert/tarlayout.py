"""An uncompressed tar laid out before its large members are written, so they are written in place.

``tarfile`` copies a member from a finished file: a ``.nemo`` built that way writes every rank file
twice (once on its own, once into the archive). A tar member is a 512-byte header (which holds its
size), the bytes, and padding to 512; when each large member's size is known in advance
(``torchzip.torch_save_size``), every offset in the archive is known too. ``TarLayout`` takes the
members in order, writes the headers and the small members, and hands out a ``Region`` per large
member: a file-like that writes its bytes at their place (``os.pwrite``), several regions at once.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from pathlib import Path

BLOCK = 512


def _padded(n: int) -> int:
    return -(-n // BLOCK) * BLOCK


class Region:
    """The bytes of one reserved member, written in order at their offset in the archive."""

    def __init__(self, fd: int, name: str, offset: int, size: int) -> None:
        self._fd, self.name, self._offset, self.size = fd, name, offset, size
        self.written = 0

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        if self.written + len(view) > self.size:
            raise RuntimeError(f"tar member {self.name}: more than the {self.size} bytes reserved")
        done = 0
        while done < len(view):
            done += os.pwrite(self._fd, view[done:], self._offset + self.written + done)
        self.written += len(view)
        return len(view)

    def flush(self) -> None:
        pass

    def check(self) -> None:
        if self.written != self.size:
            raise RuntimeError(f"tar member {self.name}: {self.written} bytes written of the {self.size} reserved")


class TarLayout:
    """Members in archive order: small ones with their bytes, large ones reserved by size."""

    def __init__(self) -> None:
        self._members: list[tuple[tarfile.TarInfo, bytes | Path | None]] = []

    def add_bytes(self, name: str, data: bytes) -> None:
        self._members.append((self._info(name, len(data)), data))

    def add_file(self, name: str, path: Path) -> None:
        self._members.append((self._info(name, path.stat().st_size), path))

    def add_dir(self, name: str) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        self._members.append((info, None))

    def reserve(self, name: str, size: int) -> None:
        self._members.append((self._info(name, size), None))

    @staticmethod
    def _info(name: str, size: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.size, info.mode = size, 0o644
        return info

    def write(self, path: Path) -> tuple[int, dict[str, Region]]:
        """Create ``path`` with every header and small member; the open fd and the reserved members' regions.

        Close the fd (``os.close``) once the regions are written.
        """
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        regions: dict[str, Region] = {}
        offset = 0
        try:
            for info, content in self._members:
                header = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
                os.pwrite(fd, header, offset)
                offset += len(header)
                if info.isdir():
                    continue
                if content is None:
                    regions[info.name] = Region(fd, info.name, offset, info.size)
                else:
                    data = content if isinstance(content, bytes) else content.read_bytes()
                    os.pwrite(fd, data, offset)
                offset += _padded(info.size)
                if info.size % BLOCK:  # the padding of a reserved member, written now
                    os.pwrite(fd, b"\0" * (BLOCK - info.size % BLOCK), offset - BLOCK + info.size % BLOCK)
            end = offset + 2 * BLOCK  # two zero blocks close the archive; tarfile pads to whole records
            end = -(-end // tarfile.RECORDSIZE) * tarfile.RECORDSIZE
            os.ftruncate(fd, end)
        except BaseException:
            os.close(fd)
            raise
        return fd, regions


def sha256_of(path: Path, chunk: int = 16 << 20) -> str:
    digest = hashlib.sha256()
    buf = memoryview(bytearray(chunk))
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            digest.update(buf[:n])
    return digest.hexdigest()
