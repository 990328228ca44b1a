"""What identifies a model's weights, for caches of results and measurements made from it (the
accuracy store, keep-schedule curves): one key, so that a changed model invalidates them all."""
from __future__ import annotations

import hashlib
from pathlib import Path

from .models import file_key


def model_key(source) -> str:
    """A model source's name and, for a file, ``file_key`` (size and leading and trailing bytes); for a
    directory, the names, sizes and dates of its model files."""
    p = Path(source.path)
    if p.is_file():
        return f"{source.name}|{file_key(p)}"
    h = hashlib.sha256()
    for f in sorted(p.iterdir()):
        if f.is_file() and (f.suffix in (".json", ".safetensors", ".bin", ".model", ".gguf")):
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{int(st.st_mtime)}".encode())
    return f"{source.name}|{h.hexdigest()[:16]}"
