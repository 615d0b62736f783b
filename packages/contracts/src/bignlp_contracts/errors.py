"""One error hierarchy for every stage, with the exit codes sbatch templates act on.

Library code raises these; each CLI turns them into one line on stderr and the
exit code below (``exit_on_error``). Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator


class BigNLPError(Exception):
    """Base class: an expected failure with a message a user can act on."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        """The message and its hint as the single line a CLI prints."""
        text = " ".join(self.message.split())
        if self.hint:
            text += f" (fix: {' '.join(self.hint.split())})"
        return text

    def __str__(self) -> str:
        return self.one_line()


class ConfigError(BigNLPError):
    """A config file, key, value or override is wrong. Exit code 2."""

    exit_code = 2


class ArtifactError(BigNLPError):
    """An artifact directory is missing, incomplete, of the wrong kind or corrupt. Exit code 3."""

    exit_code = 3


class InputError(BigNLPError):
    """User-supplied input data (a corpus file, a tokenizer file) is missing or malformed. Exit code 4."""

    exit_code = 4


class RetryableError(BigNLPError):
    """A transient failure (network, preemption): running the same command again may succeed.

    Exit code 75 (EX_TEMPFAIL), which the sbatch templates turn into a requeue.
    """

    exit_code = 75


EXIT_CODES = {
    "config": ConfigError.exit_code,
    "artifact": ArtifactError.exit_code,
    "input": InputError.exit_code,
    "retryable": RetryableError.exit_code,
}


@contextlib.contextmanager
def exit_on_error(prog: str) -> Iterator[None]:
    """Translate BigNLPError into ``prog: error: <one line>`` and its exit code.

    Used by every ``cli.py`` around the library call, so a user never sees a
    traceback for a failure we anticipated.
    """
    try:
        yield
    except BigNLPError as exc:
        sys.stderr.write(f"{prog}: error: {exc.one_line()}\n")
        sys.stderr.flush()
        raise SystemExit(exc.exit_code) from None
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted\n")
        raise SystemExit(130) from None
