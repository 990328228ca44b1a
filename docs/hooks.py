"""MkDocs hooks (``mkdocs.yml``: ``hooks``): the reference pages are generated, at every build, from
the one home of each concept, so that they cannot drift from the code.

A page holds a marker ``<!-- generated: NAME -->`` where a generated part goes (``GENERATORS``):

* ``parameters`` -- every parameter of ``ReplayConfig``, ``EngineConfig``, ``LayoutConfig``,
  ``AccuracyRun``, ``TraceSpec`` and a sweep point's own keys (``simulator.config``), with its
  default, what it accepts (``common.params.accepts``) and its help;
* ``policies`` -- the registered masking policies, cache policies and allocation schemes with their
  parameters (``simulator.masking``, ``simulator.caches``, ``simulator.allocation``);
* ``metrics`` -- the metric table (``simulator.metrics``);
* ``cli`` -- ``dipsim --help`` and every verb's ``--help`` (the parser ``simulator.cli`` builds);
* ``profiles`` and ``profile-schema`` -- the shipped hardware profiles as ``dipsim profiles`` lists
  them, and every field a profile may hold (``simulator.hardware.schema``).

The hook also publishes ``hardware_profiles/SOURCES.md`` as ``reference/profile-sources.md``. An
unknown marker fails the build. ``tests/test_docs.py`` builds the site with ``--strict`` and checks
that every parameter and metric is in it. This file is tooling, not part of the package: it may import
the command line to print its help.
"""
from __future__ import annotations

import inspect
import os
import re
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
MARKER = re.compile(r"<!-- generated: ([\w-]+) -->")
CONFIG_CLASSES = ("ReplayConfig", "EngineConfig", "LayoutConfig", "AccuracyRun", "TraceSpec")
#: where each parameter class is written: (in an experiment, on the command line)
WHERE = {
    "ReplayConfig": ("keys of `base`, `grid` and `zip` (a point's keys)",
                     "`dipsim replay`, `eval`, `mrc`: `--NAME` (dashes for underscores)"),
    "EngineConfig": ("the point key `engine: {NAME: ...}`", "`dipsim replay --engine-NAME`"),
    "LayoutConfig": ("the point key `layout: {NAME: ...}`", "`dipsim replay --layout-NAME`, `dipsim disk`"),
    "AccuracyRun": ("the point keys `accuracy: true`, `accuracy_tokens`", "`dipsim eval --NAME`"),
    "TraceSpec": ("the point key `trace: {model: ..., NAME: ...}` (captured before the sweep)",
                  "`dipsim trace --NAME`"),
}


def _cell(v: Any) -> str:
    return " ".join(str(v).split()).replace("|", "\\|")


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _default(v: Any) -> str:
    if v is None or v == {}:
        return "-"
    return f"`{str(v).lower() if isinstance(v, bool) else v}`"


def _param_rows(cls: type) -> list[list[Any]]:
    from common.params import accepts, params_of

    rows = []
    for f in params_of(cls):
        m = f.metadata
        allowed = accepts(m["check"])
        if m.get("choices") is not None:
            allowed += ": " + ", ".join(f"`{c}`" for c in m["choices"]())
        note = "" if m.get("cli", True) else " (not a command-line option)"
        rows.append([f"`{f.name}`", _default(f.default), allowed, m["help"] + note])
    return rows


def parameters() -> str:
    """Every run parameter, class by class, then a sweep point's own keys."""
    from simulator import config

    out = []
    for name in CONFIG_CLASSES:
        cls = getattr(config, name)
        yaml_where, cli_where = WHERE[name]
        out += [f"## {name}", "", f"In an experiment: {yaml_where}. On the command line: {cli_where}.", "",
                _table(["parameter", "default", "accepts", "help"], _param_rows(cls)), ""]
    out += ["## PointConfig", "", "A sweep point: the replay parameters above, flat beside the masking policy's own "
            "parameters, and these keys of its own.", "",
            _table(["key", "help"], [[f"`{k}`", h] for k, h in config.POINT_HELP.items()]), ""]
    return "\n".join(out)


def _doc(cls: type) -> str:
    """The first paragraph of the class's own docstring, else of its module's (one module per policy)."""
    import sys

    text = cls.__dict__.get("__doc__") or ""
    if not text or text.startswith(cls.__name__ + "("):       # a dataclass's made-up signature
        text = sys.modules[cls.__module__].__doc__ or ""
    return " ".join(inspect.cleandoc(text).split("\n\n")[0].split())


def policies() -> str:
    """The registered masking policies, cache policies and allocation schemes."""
    from common.params import params_of
    from simulator import allocation, caches, masking

    out = ["## Masking policies", "", "Each policy's parameters sit beside the replay parameters (`gamma: 0.2`, "
           "`--gamma 0.2`); a policy refuses parameters it does not take.", ""]
    for name in masking.names():
        cls = masking.REGISTRY.get_class(name)
        out += [f"### `{name}`", "", _doc(cls) or "-", ""]
        rows = _param_rows(cls)
        out += [_table(["parameter", "default", "accepts", "help"], rows), ""] if rows else []
    out += ["## Cache policies", "", "Parameters go in `cache_params` (`--cache-params KEY=VALUE`).", ""]
    for name in caches.names():
        cls = caches.REGISTRY.get_class(name)
        sig = inspect.signature(cls.__init__).parameters
        given = [(p, sig[p].default) for p in caches.policy_params(name)]
        out += [f"### `{name}`", "", _doc(cls) or "-", ""]
        if given:
            out += ["Parameters: " + ", ".join(
                f"`{p}`" + ("" if d is inspect.Parameter.empty else f" (default `{d}`)") for p, d in given), ""]
    out += ["## Allocation schemes", "", "Parameters go in `allocation_params`.", ""]
    for name in allocation.names():
        cls = allocation.REGISTRY.get_class(name)
        out += [f"### `{name}`", "", _doc(cls) or "-", ""]
        rows = _param_rows(cls) if params_of(cls) else []
        out += [_table(["parameter", "default", "accepts", "help"], rows), ""] if rows else []
    return "\n".join(out)


def metrics() -> str:
    """The metric table, as ``python -m simulator.metrics`` prints it."""
    from simulator.metrics import markdown

    return markdown()


def cli() -> str:
    """``dipsim --help`` and each verb's."""
    from simulator.cli import build_parser

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"        # argparse wraps at the terminal's width: fix it
    try:
        parser = build_parser()
        sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
        out = ["## `dipsim`", "", "```text", parser.format_help().rstrip(), "```", ""]
        for verb, p in sub.choices.items():
            out += [f"## `dipsim {verb}`", "", "```text", p.format_help().rstrip(), "```", ""]
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old
    return "\n".join(out)


def profiles() -> str:
    """The shipped profiles as ``dipsim profiles`` lists them."""
    from simulator.hardware.listing import profiles_table

    return "```text\n" + profiles_table() + "\n```"


def profile_schema() -> str:
    """Every field a profile may hold, by kind."""
    from simulator.hardware import schema

    out = []
    for kind, fields in [("device", schema.DEVICE_VALUE_FIELDS), *schema.NUMERIC_FIELDS.items()]:
        rows = []
        for name, f in fields.items():
            rng = "" if (f.lo, f.hi) == (0.0, float("inf")) else f"{f.lo:g} .. {f.hi:g}"
            rows.append([f"`{name}`", f.kind, "yes" if f.required and f.default is None else "no",
                         _default(f.default), rng, f.help])
        out += [f"### {kind}", "", _table(["field", "kind", "required", "default", "plausible range (base units)",
                                           "help"], rows), ""]
    out += [f"A device also names its parts and capacity: {', '.join(f'`{k}`' for k in schema.DEVICE_FIELDS)}; "
            f"a numeric field is a value or a mapping of {', '.join(f'`{k}`' for k in schema.VALUE_KEYS)}.", ""]
    return "\n".join(out)


GENERATORS: dict[str, Callable[[], str]] = {
    "parameters": parameters, "policies": policies, "metrics": metrics, "cli": cli, "profiles": profiles,
    "profile-schema": profile_schema,
}


def render(markdown: str, where: str = "page") -> str:
    """``markdown`` with every marker replaced by its generated text (an unknown one is an error)."""
    def sub(m: re.Match) -> str:
        if m.group(1) not in GENERATORS:
            raise ValueError(f"{where}: unknown generated part {m.group(1)!r}; known: {', '.join(GENERATORS)}")
        return GENERATORS[m.group(1)]()
    return MARKER.sub(sub, markdown)


# ----------------------------------------------------------------------------------------- MkDocs' hooks
def on_files(files, config):
    from mkdocs.structure.files import File

    sources = (ROOT / "hardware_profiles" / "SOURCES.md").read_text(encoding="utf-8")
    files.append(File.generated(config, "reference/profile-sources.md", content=sources))
    return files


def on_page_markdown(markdown, page, config, files):
    from mkdocs.exceptions import PluginError

    try:
        return render(markdown, page.file.src_uri)
    except ValueError as e:
        raise PluginError(str(e)) from None

