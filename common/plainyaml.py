"""YAML as plain data: the one way dipsim reads YAML (experiment files, hardware profiles, ``eval
--config``, ``KEY=VALUE`` options).

Plain data is strings, numbers, true/false, null, lists and mappings. Refused, each in one line
naming the file and line: other tags (``!!binary``, ``!!set``, ``!!python/...``), a key given twice
in one mapping (PyYAML lets the last one win silently), aliases that refer to a list or mapping
containing them, aliases that expand to more than ``max_values`` values (an alias bomb: 9 levels of
10 aliases are 10^9 values in a file of a few hundred bytes), nesting deeper than ``max_depth``.
Dates stay text (``2001-12-14`` then fails the check of the field that gets it). The expansion is
measured on the composed node graph, where an alias is the node it names, before anything is built.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from .errors import DipsimError

MAX_DEPTH = 12            # a configuration nests mappings 3-5 deep; deeper is a mistake or an attack
MAX_VALUES = 100_000      # values after alias expansion; real files hold a few hundred


class PlainLoader(yaml.SafeLoader):
    """SafeLoader without timestamps, refusing non-plain tags and repeated keys."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:       # an unhashable key: SafeLoader's own error names it
                    continue
                line = key_node.start_mark.line + 1
                if first is not None:
                    raise DipsimError(f"line {line}: key {_short(key)} given twice in one mapping (first at line "
                                      f"{first}); give it once")
                seen[key] = line
        return super().construct_mapping(node, deep)


PlainLoader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:timestamp"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}


def _refuse(loader, node):
    raise DipsimError(f"line {node.start_mark.line + 1}: the YAML tag {node.tag} is not plain data; use strings, "
                      f"numbers, true/false, lists and mappings")


for _tag in ("binary", "set", "omap", "pairs", "timestamp"):
    PlainLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", _refuse)
PlainLoader.add_constructor(None, _refuse)


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _measure(node: Node, max_depth: int, max_values: int) -> None:
    """Refuse a node graph that is cyclic, deeper than ``max_depth`` or larger than ``max_values``
    once its aliases are expanded (each shared node counted once per reference, computed once)."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    open_: set[int] = set()
    # an explicit stack: a deeply nested document must not exhaust Python's own recursion
    stack: list[tuple[Node, bool]] = [(node, False)]
    while stack:
        n, done = stack.pop()
        key = id(n)
        children = _children(n)
        if not done:
            if key in size:
                continue
            if key in open_:
                raise DipsimError(f"line {n.start_mark.line + 1}: a YAML alias refers to a list or mapping that "
                                  f"contains it (recursive data)")
            open_.add(key)
            stack.append((n, True))
            stack.extend((c, False) for c in children)
            continue
        open_.discard(key)
        size[key] = 1 + sum(size[id(c)] for c in children)
        depth[key] = 1 + max((depth[id(c)] for c in children), default=0)
        if depth[key] > max_depth + 1:
            raise DipsimError(f"line {n.start_mark.line + 1}: nested deeper than the limit of {max_depth} levels")
        if size[key] > max_values:
            raise DipsimError(f"line {n.start_mark.line + 1}: its aliases expand to more than {max_values:,} values "
                              f"(an alias bomb?); write the values out or use fewer aliases")


def _children(n: Node) -> list[Node]:
    if isinstance(n, SequenceNode):
        return list(n.value)
    if isinstance(n, MappingNode):
        return [x for pair in n.value for x in pair]
    return []


def load(text: str, where: str, *, max_depth: int = MAX_DEPTH, max_values: int = MAX_VALUES) -> Any:
    """The plain data of ``text``, or a one-line DipsimError beginning with ``where``."""
    try:
        loader = PlainLoader(text)     # the reader refuses control characters (a NUL byte) already here
    except yaml.YAMLError as e:
        raise DipsimError(f"{where}: not valid YAML: {getattr(e, 'reason', None) or e}") from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _measure(node, max_depth, max_values)
        return loader.construct_document(node)
    except DipsimError as e:
        raise DipsimError(f"{where}: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or (str(e).splitlines() or [type(e).__name__])[0]
        raise DipsimError(f"{where}: not valid YAML{line}: {problem}") from None
    except RecursionError:
        raise DipsimError(f"{where}: nested deeper than the limit of {max_depth} levels") from None
    finally:
        loader.dispose()


def read(path: str | os.PathLike, what: str, *, max_bytes: int, where: str | None = None, **limits: Any) -> Any:
    """The plain data of the YAML file ``path`` (``what`` names it in errors: "experiment file";
    ``where``, how the file is shown, default its path): an existing regular file, at most
    ``max_bytes``, UTF-8."""
    from .io import input_file

    p = input_file(path, what)
    where = where or str(p)
    size = p.stat().st_size
    if size > max_bytes:
        raise DipsimError(f"{where}: {size} bytes; a {what} is a few kilobytes (limit {max_bytes})")
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise DipsimError(f"{where}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise DipsimError(f"{where}: cannot read it ({e.strerror or e})") from None
    return load(text, where, **limits)
