"""Input and output paths: checked before any work, outputs written atomically, never left
half-written; and where dipsim keeps derived data (``cache_root``).

Every file dipsim reads is checked first by :func:`input_file` (it exists, is a regular file -- not a
device, pipe, folder or symlink loop -- and is readable). Every command checks its outputs once,
before any work, with :func:`check_outputs` (each a writable file, not a directory nor a name ending
in a slash, an allowed suffix, none of the command's inputs; :func:`check_file` for one), checks the
room for large files with :func:`check_space`, and writes through :func:`atomic` (a hidden temporary
file beside the target, renamed over it when complete, removed on any failure or interruption).
"""
from __future__ import annotations

import os
import shutil
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import DipsimError


def _writable_folder(folder: Path, option: str, p: Path) -> None:
    """The folder exists and a file can be created in it, or it does not exist yet and its nearest
    existing ancestor is a writable folder (it is created when the output is written, so a run that
    fails leaves no empty folder behind)."""
    anc = folder
    try:
        while not anc.exists():
            if anc.parent == anc:
                break
            anc = anc.parent
        is_dir = anc.is_dir()
    except OSError as e:       # a name longer than the file system allows, a symlink loop
        raise DipsimError(f"{option} {p}: cannot write there ({e.strerror or e})") from None
    if not is_dir:
        raise DipsimError(f"{option} {p}: {anc} is not a folder")
    try:   # a real probe: os.access is fooled by /proc, read-only mounts and immutable folders
        fd, probe = tempfile.mkstemp(prefix=".dipsim-probe-", dir=anc)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise DipsimError(f"{option} {p}: cannot write in {anc} ({e.strerror or e})") from None


def check_space(path: str | os.PathLike, nbytes: float, option: str) -> None:
    """Refuse, before writing, a file of ``nbytes`` that the file system under ``path`` has no room
    for, or that exceeds this process's file size limit (``ulimit -f``): a run that would fail with
    "No space left" or "File too large" after minutes of writing fails at once instead."""
    def fmt(b: float) -> str:
        unit, f = next(((u, f) for u, f in (("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3))
                        if b >= f), ("B", 1))
        return f"{b / f:.3g} {unit}"

    try:
        anc = Path(path).parent
        while not anc.exists() and anc.parent != anc:
            anc = anc.parent
        free = shutil.disk_usage(anc).free
    except OSError:         # a path the output check refuses anyway
        return
    if nbytes > free:
        raise DipsimError(f"{option} {path}: needs {fmt(nbytes)}, and the file system has "
                          f"{fmt(free)} free")
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    except (ImportError, OSError, ValueError):
        return
    if limit != resource.RLIM_INFINITY and nbytes > limit:
        raise DipsimError(f"{option} {path}: needs {fmt(nbytes)}, more than this process may "
                          f"write to one file ({fmt(limit)}; see ulimit -f)")


def check_file(path: str | os.PathLike, option: str, suffixes: tuple[str, ...] | None = None) -> Path:
    """``path`` as a Path, after checking that a file can be written there (``option`` names the
    command-line option or field in the error). Nothing is created."""
    text = os.fspath(path)
    if not str(text).strip():
        raise DipsimError(f"{option}: empty file name")
    if str(text).endswith(("/", os.sep)):      # Path() would drop the slash and write the file anyway
        raise DipsimError(f"{option} {text}: ends with a slash, which names a folder; give a file name")
    p = Path(text)
    try:
        if p.is_dir():
            raise DipsimError(f"{option} {p}: is a directory; give a file name")
        if p.exists() and not p.is_file():
            raise DipsimError(f"{option} {p}: exists and is not a regular file")
    except OSError as e:       # a name longer than the file system allows, a symlink loop
        raise DipsimError(f"{option} {p}: cannot write there ({e.strerror or e})") from None
    if suffixes is not None and p.suffix.lower() not in suffixes:
        raise DipsimError(f"{option} {p}: unsupported file type {p.suffix or '(none)'!r}; allowed: "
                          f"{', '.join(suffixes)}")
    _writable_folder(p.parent if str(p.parent) else Path("."), option, p)
    return p


def input_file(path: str | os.PathLike, what: str, *, folder: bool = False) -> Path:
    """``path`` as a Path, after checking that it is an existing regular file (``folder``: a folder)
    this process can read; ``what`` names it in the one-line errors ("trace file not found: X",
    "X: not a regular file (a device, a pipe or a socket)", a symlink loop, a name too long, ...)."""
    text = os.fspath(path)
    if not str(text).strip():
        raise DipsimError(f"{what}: empty path")
    p = Path(text)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise DipsimError(f"{what} not found: {p}") from None
    except NotADirectoryError:
        raise DipsimError(f"{what} not found: {p} (a part of the path is a file, not a folder)") from None
    except OSError as e:        # ELOOP, ENAMETOOLONG, EACCES on a folder on the way
        raise DipsimError(f"{what} {p}: {e.strerror or e}") from None
    if folder:
        if not stat.S_ISDIR(st.st_mode):
            raise DipsimError(f"{p}: not a {what}")
    elif stat.S_ISDIR(st.st_mode):
        raise DipsimError(f"{p}: is a folder; give the {what}")
    elif not stat.S_ISREG(st.st_mode):
        raise DipsimError(f"{p}: not a regular file (a device, a pipe or a socket cannot be a {what})")
    if not os.access(p, os.R_OK | (os.X_OK if folder else 0)):
        raise DipsimError(f"{what} {p}: permission denied")
    return p


def make_folder(path: str | os.PathLike) -> Path:
    """``mkdir -p`` without recursion (``Path.mkdir(parents=True)`` recurses once per level and fails
    on a path a thousand folders deep, which the file system allows)."""
    p = Path(path)
    todo = []
    while not p.exists() and p.parent != p:
        todo.append(p)
        p = p.parent
    for q in reversed(todo):
        try:
            q.mkdir()
        except FileExistsError:      # made meanwhile by another process
            pass
    return Path(path)


def check_folder(path: str | os.PathLike, option: str, *, create: bool = True) -> Path:
    """``path`` as a Path, after checking that it is (or can become) a writable folder; created
    unless ``create`` is False."""
    p = Path(path)
    try:
        if p.exists() and not p.is_dir():
            raise DipsimError(f"{option} {p}: exists and is not a folder")
    except OSError as e:
        raise DipsimError(f"{option} {p}: cannot write there ({e.strerror or e})") from None
    _writable_folder(p, option, p)
    if create:
        try:
            make_folder(p)
        except OSError as e:
            raise DipsimError(f"{option} {p}: cannot create the folder: {e.strerror or e}") from None
    return p


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Remove the hidden temporary files that writers of ``path`` left beside it when they were killed
    (``.<name>.part-<pid>...`` whose process is gone); the ones of live processes stay. Returns the
    files removed."""
    removed = []
    try:
        # .<stem>.part-<pid><suffix> (temp_beside), and .<name>.part-<pid> that earlier trace writers used
        candidates = list(path.parent.glob(f".{path.stem}.part-*")) + list(path.parent.glob(f".{path.name}.part-*"))
    except OSError:
        return removed
    for f in candidates:
        pid = f.name.rsplit(".part-", 1)[1].split(".", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
            continue          # still running: maybe writing it right now
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        try:
            f.unlink()
            removed.append(f)
        except OSError:
            pass
    return removed


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
    remove_stale_temporaries(path)
    try:
        make_folder(path.parent)
        yield tmp
        os.replace(tmp, path)
    except BaseException as e:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        if isinstance(e, OSError) and not isinstance(e, (BrokenPipeError, InterruptedError)):
            raise DipsimError(f"{path}: cannot write ({e.strerror or e})") from None
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


def check_outputs(outputs: list[tuple], inputs: list[tuple[str, str | os.PathLike | None]]) -> list[Path | None]:
    """The one check of a command's output paths: each ``(option, path[, suffixes])`` must be a
    writable file (:func:`check_file`, with the allowed suffixes) that is none of the ``inputs``
    ``(option, path)`` and no other output -- ``synth --fit F --out F`` would overwrite its own fit.
    Names are compared after resolving links, and by file identity where both exist. Returns the
    outputs as Paths (None where not given)."""
    def same(a: Path, b: Path) -> bool:
        try:
            if a.exists() and b.exists():
                return os.path.samefile(a, b)
            return a.resolve() == b.resolve()
        except (OSError, RuntimeError):      # a symlink loop: the input's own check names it
            return False

    seen: list[tuple[str, Path]] = [(opt, Path(p)) for opt, p in inputs if p is not None and str(p)]
    checked: list[Path | None] = []
    for opt, p, *suffixes in outputs:
        if p is None:
            checked.append(None)
            continue
        for other, q in seen:       # first: "the same file as --trace" says more than a wrong suffix
            if same(Path(p), q):
                raise DipsimError(f"{opt} {p}: is the same file as {other}; choose another output path")
        path = check_file(p, opt, suffixes[0] if suffixes else None)
        seen.append((opt, path))
        checked.append(path)
    return checked
