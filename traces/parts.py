"""Optional named models: one GGUF file cut into pieces shipped as separate PyPI packages.

The table of these models (packages, pinned versions, size and SHA-256 of the joined file) lives in
``models.toml`` beside this module, the one place it is written down; ``tasks.py`` reads the same
file to install them. This module only finds the pieces and joins them, with the standard library:

* pieces are located with ``importlib.util.find_spec``, which reads no package code -- some of
  these packages' own dependencies (llama-cpp builds) are deliberately not installed;
* the join writes a hidden temporary file, checks its size and SHA-256 and only then renames it
  into place, so a join that fails or is killed never leaves a file that a later run takes as
  complete (its leftover temporary is removed by the next join).
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from common.errors import DipsimError

TABLE = Path(__file__).with_name("models.toml")
INSTALL = "python3 tasks.py model {name}"  # the command that installs a model (see tasks.py)
_CHUNK = 8 << 20


@dataclass(frozen=True)
class OptionalModel:
    name: str
    description: str
    file: str                        # name of the joined GGUF in the cache
    size: int                        # bytes of the joined file
    sha256: str                      # of the joined file ("" -> checked by size alone)
    part: str                        # each package's piece, relative to its package directory
    packages: tuple[tuple[str, str], ...]  # (distribution name, pinned version), in join order

    @property
    def install_command(self) -> str:
        return INSTALL.format(name=self.name)

    def modules(self) -> list[str]:
        return [dist.replace("-", "_") for dist, _ in self.packages]


@lru_cache(maxsize=None)
def optional_models(table: Path = TABLE) -> dict[str, OptionalModel]:
    """The optional named models, by name, from ``models.toml``."""
    try:
        data = tomllib.loads(table.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise DipsimError(f"{table}: cannot read the table of optional models ({e})") from None
    out = {}
    for name, row in data.items():
        try:
            pkgs = tuple(tuple(p.split("==")) for p in row["packages"])
            if not pkgs or any(len(p) != 2 for p in pkgs):
                raise ValueError("packages must be a non-empty list of 'name==version'")
            out[name] = OptionalModel(name, str(row["description"]), str(row["file"]), int(row["size"]),
                                      str(row.get("sha256", "")), str(row["part"]), pkgs)
        except (KeyError, TypeError, ValueError) as e:
            raise DipsimError(f"{table}: model {name!r} is malformed ({e})") from None
    return out


def package_dir(module: str) -> Path | None:
    """The directory of an installed top-level package, found without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def part_paths(m: OptionalModel) -> list[Path]:
    """The model's pieces in join order; DipsimError naming the install command if any is missing."""
    paths, missing = [], []
    for i, ((dist, version), module) in enumerate(zip(m.packages, m.modules()), start=1):
        d = package_dir(module)
        p = d / m.part.format(index=i) if d is not None else None
        if p is None or not p.is_file():
            missing.append(f"{dist}=={version}")
        else:
            paths.append(p)
    if missing:
        shown = ", ".join(missing[:2]) + (f" and {len(missing) - 2} more" if len(missing) > 2 else "")
        raise DipsimError(f"model {m.name!r} is not installed (missing {len(missing)} of {len(m.packages)} "
                          f"packages: {shown}); install it with: {m.install_command}")
    return paths


def join_parts(parts: list[Path], target: Path, *, size: int, sha256: str = "", what: str = "model",
               hint: str = "") -> Path:
    """Concatenate ``parts`` into ``target`` once, atomically, checked against ``size`` and ``sha256``.

    An existing ``target`` of the expected size is returned as is: only a checked join is ever
    renamed to that name. ``hint`` ends every error message (how to reinstall the pieces).
    """
    if target.is_file() and target.stat().st_size == size:
        return target
    tail = f"; {hint}" if hint else ""
    have = sum(p.stat().st_size for p in parts)
    if have != size:  # wrong or damaged pieces: refuse before writing anything
        raise DipsimError(f"{what}: its {len(parts)} pieces hold {have} bytes, expected {size}{tail}")
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(target)
    free = shutil.disk_usage(target.parent).free
    if free < size:
        raise DipsimError(f"{what}: joining needs {size / 1e9:.2f} GB in {target.parent}, "
                          f"only {free / 1e9:.2f} GB free")
    tmp = target.with_name(f".{target.name}.{os.getpid()}.joining")
    h = hashlib.sha256()
    try:
        with open(tmp, "wb") as out:
            for p in parts:
                with open(p, "rb") as f:
                    while buf := f.read(_CHUNK):
                        out.write(buf)
                        h.update(buf)
            out.flush()
            os.fsync(out.fileno())  # the rename below must never publish a file still in the page cache only
        written = tmp.stat().st_size
        if written != size:
            raise DipsimError(f"{what}: joined {written} bytes, expected {size}{tail}")
        if sha256 and h.hexdigest() != sha256.lower():
            raise DipsimError(f"{what}: the joined file's SHA-256 is {h.hexdigest()}, expected {sha256}{tail}")
        os.replace(tmp, target)
    except OSError as e:
        raise DipsimError(f"{what}: cannot join its pieces into {target}: {e}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _remove_stale_temporaries(target: Path) -> None:
    """Delete temporaries of joins whose process is gone (killed mid-join): they are never used."""
    for tmp in target.parent.glob(f".{target.name}.*.joining"):
        try:
            pid = int(tmp.name.rsplit(".", 2)[-2])
            if pid != os.getpid():
                os.kill(pid, 0)
                continue  # that join is still running
        except ProcessLookupError:
            pass
        except (ValueError, PermissionError):
            continue
        tmp.unlink(missing_ok=True)


def joined_file(m: OptionalModel, cache_dir: Path) -> Path:
    """The model's GGUF in ``cache_dir``, joined from its installed pieces on first use."""
    target = cache_dir / m.file
    return join_parts(part_paths(m), target, size=m.size, sha256=m.sha256, what=f"model {m.name!r}",
                      hint=f"reinstall it with: {m.install_command}")
