"""Files written whole or not at all: write beside the target under a temporary name, then rename it over the
target (``os.replace`` is atomic on POSIX and Windows), so a reader never sees a half-written file.

The temporary name is unique to the writing process and thread: two processes writing the same file at once (two
sweep workers that finish together both write ``study.json``) each rename a complete file of their own, and the
last one wins. A name shared by both would let one rename the other's file away and fail on its own rename.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Union

__all__ = ["temporary_beside", "write_text_atomic"]


def temporary_beside(path: Union[str, os.PathLike]) -> Path:
    """A temporary file name in ``path``'s folder (created if missing), unique to this process and thread."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")


def write_text_atomic(path: Union[str, os.PathLike], text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` whole (see the module docstring); returns ``path``."""
    tmp = temporary_beside(path)
    tmp.write_text(text, encoding=encoding)
    os.replace(tmp, path)
    return Path(path)
