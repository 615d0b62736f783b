"""Where a conversion may write, and writing there so a crash leaves nothing that looks complete.

Every output is an artifact directory: files first, ``manifest.json`` last, the whole built under a
temporary name and renamed into place (``bignlp_contracts.atomic_directory``). An output path that
already holds something is refused before any work starts: a conversion never overwrites an
artifact or mixes its files with others.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from bignlp_contracts import MANIFEST_NAME, ConfigError, atomic_directory, read_manifest


def check_output_dir(path: str | os.PathLike, *, option: str = "--output") -> Path:
    """``path`` as an absolute Path, if it is absent or an empty directory; a ConfigError (exit 2) otherwise."""
    path = Path(path).absolute()
    if not path.exists():
        return path
    if not path.is_dir():
        raise ConfigError(f"{option} {path} exists and is not a directory", hint="choose another output path")
    if (path / MANIFEST_NAME).exists():
        try:
            kind = read_manifest(path, verify="none").kind
        except Exception:  # a damaged manifest still means "an artifact lives here"
            kind = "an"
        raise ConfigError(f"{option} {path} already holds {'a ' + kind if kind != 'an' else 'an'} artifact",
                          hint="choose another output path, or delete that artifact first")
    if any(path.iterdir()):
        raise ConfigError(f"{option} {path} is not empty", hint="choose a new or empty directory")
    return path


@contextlib.contextmanager
def output_directory(path: str | os.PathLike, *, option: str = "--output") -> Iterator[Path]:
    """Check ``path`` (``check_output_dir``), then yield a temporary directory renamed to it on success.

    Write the manifest last, inside the block. On an exception the temporary directory is removed
    and ``path`` is left as it was.
    """
    final = check_output_dir(path, option=option)
    with atomic_directory(final) as tmp:
        yield tmp
