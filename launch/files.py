"""Writing a file whole or not at all: the one atomic writer of the project (run directories,
conformance answers, the decoded-image cache)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any, Callable


def write_atomic(path: Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Write ``path`` whole or not at all: ``write(f)`` fills a new temporary file beside it
    (created exclusively under a random name, so never a file or symlink someone planted; the
    usual umask applies), which is then renamed over ``path``."""
    tmp = str(path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp"))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
