"""Output paths: checked before any work, written atomically, never left half-written; and where
dipsim keeps derived data (``cache_root``).

Every command that writes a file checks its path first (:func:`check_file`: not a directory, the
folder exists or can be made and is writable, an allowed suffix) so that a bad path fails in one
line before minutes of work, and writes through :func:`atomic` (a hidden temporary file beside the
target, renamed over it when complete, removed on any failure or interruption).
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import DipsimError


def check_file(path: str | os.PathLike, option: str, suffixes: tuple[str, ...] | None = None) -> Path:
    """``path`` as a Path, after checking that a file can be written there (``option`` names the
    command-line option or field in the error)."""
    p = Path(path)
    if p.is_dir():
        raise DipsimError(f"{option} {p}: is a directory; give a file name")
    if suffixes is not None and p.suffix.lower() not in suffixes:
        raise DipsimError(f"{option} {p}: unsupported file type {p.suffix or '(none)'!r}; allowed: "
                          f"{', '.join(suffixes)}")
    folder = p.parent if str(p.parent) else Path(".")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DipsimError(f"{option} {p}: cannot create the folder {folder}: {e.strerror or e}") from None
    if not folder.is_dir():
        raise DipsimError(f"{option} {p}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DipsimError(f"{option} {p}: the folder {folder} is not writable")
    return p


def check_folder(path: str | os.PathLike, option: str) -> Path:
    """``path`` as a Path, after checking that it is (or can become) a writable folder."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise DipsimError(f"{option} {p}: exists and is not a folder")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DipsimError(f"{option} {p}: cannot create the folder: {e.strerror or e}") from None
    if not os.access(p, os.W_OK | os.X_OK):
        raise DipsimError(f"{option} {p}: the folder is not writable")
    return p


def temp_beside(path: Path) -> Path:
    """A hidden temporary name beside ``path`` with the same suffix (so writers that go by the
    suffix, e.g. matplotlib, still see it)."""
    return path.with_name(f".{path.stem}.part-{os.getpid()}{path.suffix}")


@contextmanager
def atomic(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``, on any failure or
    interruption (including KeyboardInterrupt) it is removed."""
    path = Path(path)
    tmp = temp_beside(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise


def atomic_write(path: str | os.PathLike, data: bytes, *, sync: bool = True) -> None:
    """Write ``data`` to ``path`` through :func:`atomic`; ``sync`` flushes it to the disk before the
    rename, so that a machine crash cannot leave an empty file under the final name."""
    with atomic(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        if sync:
            f.flush()
            os.fsync(f.fileno())


def cache_root() -> Path:
    """Where dipsim keeps dequantized models, captured traces, accuracy results and compiled
    kernels: ``$DIPSIM_CACHE_DIR``, else ``$XDG_CACHE_HOME/dipsim``, else ``~/.cache/dipsim``."""
    env = os.environ.get("DIPSIM_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "dipsim"


FIGURE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg", ".webp", ".eps", ".ps", ".tif", ".tiff")


def check_outputs(outputs: list[tuple[str, str | os.PathLike | None]],
                  inputs: list[tuple[str, str | os.PathLike | None]]) -> None:
    """Refuse an output path that is one of the command's inputs (or another of its outputs): a
    replay's ``--save-log`` naming its own trace would overwrite it. Names are compared after
    resolving links, and by file identity where both exist."""
    def same(a: Path, b: Path) -> bool:
        try:
            if a.exists() and b.exists():
                return os.path.samefile(a, b)
        except OSError:
            pass
        return a.resolve() == b.resolve()

    seen: list[tuple[str, Path]] = [(opt, Path(p)) for opt, p in inputs if p is not None]
    for opt, p in outputs:
        if p is None:
            continue
        for other, q in seen:
            if same(Path(p), q):
                raise DipsimError(f"{opt} {p}: is the same file as {other}; choose another output path")
        seen.append((opt, Path(p)))
