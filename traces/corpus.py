"""Text to run models on, available offline.

* default: CPython's own documentation topics (``pydoc_data.topics``, ~465 k characters of
  English prose with some code), which every Python installation ships;
* ``--text FILE``: any UTF-8 text file;
* ``--dataset DIR``: a local dataset directory -- one written by ``datasets.save_to_disk`` (Arrow
  files, a DatasetDict's splits too), or a folder of ``.parquet``, ``.jsonl`` or ``.txt`` files --
  read with pyarrow, so the ``datasets`` package is not needed.

Every corpus carries a SHA-256 digest of the exact text used, recorded in traces and results.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from common.errors import DipsimError
from common.io import input_file


@dataclass(frozen=True)
class Corpus:
    name: str
    text: str

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.text.encode("utf-8")).hexdigest()


def default_corpus() -> Corpus:
    from pydoc_data.topics import topics

    return Corpus("pydoc-topics", "\n\n".join(topics[key] for key in sorted(topics)))


def load_corpus(text: str | Path | None = None, dataset: str | Path | None = None,
                text_column: str = "text", split: str | None = None) -> Corpus:
    """The default corpus, a text file, or a local dataset directory."""
    if text is not None and dataset is not None:
        raise DipsimError("give either --text or --dataset, not both")
    if text is not None:
        p = input_file(text, "text file")
        body = _read_text(p)
        if not body.strip():
            raise DipsimError(f"{p}: the text file is empty")
        return Corpus(f"file:{p.name}", body)
    if dataset is not None:
        return _load_dataset_dir(Path(dataset), text_column, split)
    return default_corpus()


def _read_text(p: Path) -> str:
    try:
        body = p.read_text(encoding="utf-8")
        if "\0" in body:          # valid UTF-8, but no text: a binary file, or one of NUL bytes
            raise DipsimError(f"{p}: holds NUL characters (the first at character {body.index(chr(0))}): a "
                              f"binary file, not text")
        return body
    except UnicodeDecodeError as e:
        raise DipsimError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise DipsimError(f"{p}: cannot read it ({e.strerror or e})") from None


def _load_dataset_dir(d: Path, column: str, split: str | None) -> Corpus:
    d = input_file(d, "dataset directory", folder=True)
    if (d / "dataset_dict.json").exists():
        try:
            splits = json.loads(_read_text(input_file(d / "dataset_dict.json", "dataset_dict.json")))["splits"]
            if not isinstance(splits, list) or not all(isinstance(x, str) for x in splits):
                raise TypeError
        except (ValueError, KeyError, TypeError, RecursionError):
            raise DipsimError(f"{d / 'dataset_dict.json'}: not a datasets.save_to_disk index (a 'splits' list)") from None
        chosen = split or ("test" if "test" in splits else "train" if "train" in splits else (splits or [None])[0])
        if chosen not in splits:
            raise DipsimError(f"{d}: split {chosen!r} not found; allowed: {', '.join(splits)}")
        return _load_dataset_dir(d / chosen, column, None)
    files = sorted(d.glob("*.arrow")) or sorted(d.glob("*.parquet")) or sorted(d.glob("*.jsonl")) \
        or sorted(d.glob("*.txt"))
    if not files:
        raise DipsimError(f"{d}: no .arrow, .parquet, .jsonl or .txt files (expected a datasets.save_to_disk "
                          f"directory or a folder of such files)")
    texts: list[str] = []
    for f in files:
        if f.suffix == ".txt":
            texts.append(_read_text(input_file(f, "text file")))
            continue
        table = _read_table(f)
        if column not in table.column_names:
            raise DipsimError(f"{f}: no column {column!r}; columns: {', '.join(table.column_names)} "
                              f"(choose one with --text-column)")
        texts.extend(str(v) for v in table.column(column).to_pylist() if v)
    body = "\n\n".join(t for t in texts if t.strip())
    if not body.strip():
        raise DipsimError(f"{d}: the dataset holds no text in column {column!r}")
    return Corpus(f"dataset:{d.name}", body)


def _read_table(f: Path):
    import pyarrow as pa

    try:
        if f.suffix == ".arrow":
            try:
                with pa.memory_map(str(f)) as src:
                    return pa.ipc.open_stream(src).read_all()
            except pa.ArrowInvalid:
                with pa.memory_map(str(f)) as src:
                    return pa.ipc.open_file(src).read_all()
        if f.suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(f)
        import pyarrow.json as pj

        return pj.read_json(f)
    except (pa.ArrowInvalid, OSError) as e:
        raise DipsimError(f"{f}: cannot read ({str(e).splitlines()[0]})") from None
