"""Writing artifacts: atomic writes, file hashes and the "output exists / writable" checks.

A leaf module: it imports nothing from ``alisnet_export`` but :mod:`alisnet_export.errors` (itself a leaf),
so any module that writes a file can use it without pulling in checkpoint, model or exporter code
(``tests/test_layering.py`` keeps it that way). See docs/design.md, "Module contracts".
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

from .errors import OutputError

__all__ = ["sha256_file", "current_umask", "refuse_existing", "ensure_folder", "check_writable", "atomic_write",
           "replace_between_markers"]


def sha256_file(path: Path) -> str:
    """The file's SHA-256 as lowercase hex, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def current_umask() -> int:
    """The process's umask (read by setting and restoring it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def refuse_existing(paths: Iterable[Path], force: bool, *, verb: str = "overwrite it",
                    exists: Callable[[Path], bool] = lambda p: p.exists()) -> None:
    """Raise :class:`OutputError` naming every path that ``exists`` unless ``force``."""
    existing = [str(p) for p in paths if exists(Path(p))]
    if existing and not force:
        raise OutputError(f"{', '.join(existing)}: already exists; pass --force to {verb}, or choose another --output.")


def ensure_folder(folder: Path, *, for_path: Optional[Path] = None) -> None:
    """Create ``folder`` (with parents) and check that it can be written; :class:`OutputError` otherwise.
    ``for_path``: the file about to be written there, named first in the message."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if for_path is not None:
            raise OutputError(f"{for_path}: cannot create folder {folder}: {exc.strerror}") from None
        raise OutputError(f"cannot create output folder {folder}: {exc.strerror}") from None
    if not os.access(folder, os.W_OK):
        prefix = f"{for_path}: folder" if for_path is not None else "output folder"
        raise OutputError(f"{prefix} {folder} is not writable; choose another --output.")


def check_writable(paths: Iterable[Path], force: bool) -> None:
    """Fail before any work if an output exists (without ``force``) or its folder cannot be written."""
    paths = [Path(p) for p in paths]
    refuse_existing(paths, force)
    for folder in sorted({p.parent for p in paths}):
        ensure_folder(folder)


def atomic_write(path: Path, write: Any, *, force: bool = False) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``: never leaves a half-written file.

    Raises :class:`OutputError` if ``path`` exists and ``force`` is false, or it cannot be written.
    """
    path = Path(path)
    refuse_existing([path], force)
    parent = path.parent
    ensure_folder(parent, for_path=path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; give the file a normal file's permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def replace_between_markers(path: Path, begin: str, end: str, block: str) -> bool:
    """Replace what lies between the lines ``begin`` and ``end`` of a text file (e.g. a README table a
    command generates) with ``block``, atomically. Returns False, changing nothing, when a marker is missing."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if begin not in text or end not in text:
        return False
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    new = f"{head}{begin}\n{block.strip()}\n{end}{tail}"
    atomic_write(path, lambda p: p.write_text(new, encoding="utf-8"), force=True)
    return True


@contextlib.contextmanager
def private_workdir(prefix: str) -> Iterator[Path]:
    """A temporary folder that is also the working directory: for tools that leave files in the cwd
    (ONNX Runtime's quantization and conversion tools). Removed afterwards, whatever happens."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        with contextlib.chdir(folder):
            yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
