"""Command-line options generated from the run parameters of ``simulator.config`` (one spelling, one
default, one help text for every verb), and the small argument types the verbs share.

Options take the raw text and leave the checking to the parameter's own check, so that a bad value
fails with the same one-line message (naming the option) whatever the verb. An option not given
stays None and the configuration's default applies.
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
from typing import Any, Callable, Sequence

from common.errors import DipsimError
from common.params import boolean, boolean_or_device, max_workers, params_of

from .. import masking
from ..config import ReplayConfig, masking_parameter_names


def add_verb(sub, name: str, run: Callable[[argparse.Namespace], int], help: str, **kw: Any) -> argparse.ArgumentParser:
    """The parser of verb ``name``, which ``run`` runs: ``help`` is its line in ``dipsim --help`` and
    the docstring of ``run`` its description (unless ``kw`` gives one). Every verb takes ``--plugin``."""
    kw.setdefault("description", inspect.getdoc(run))
    s = sub.add_parser(name, help=help, **kw)
    s.set_defaults(run=run)
    add_plugin_option(s)
    return s


def add_plugin_option(parser: argparse.ArgumentParser) -> None:
    """``--plugin FILE|MODULE``: loaded (``simulator.plugins``) before the command line is parsed, so
    that a plugin's names and masking parameters are options and choices like the built-in ones."""
    parser.add_argument("--plugin", action="append", metavar="FILE|MODULE",
                        help="load masking/cache policies or allocation schemes from a Python file or an importable "
                             "module that registers them (repeatable; installed packages' dipsim.* entry points load "
                             "by themselves)")


def plugin_specs(argv: Sequence[str]) -> list[str]:
    """The ``--plugin`` values of a command line, read before the full parser exists."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    add_plugin_option(pre)
    try:
        return pre.parse_known_args(list(argv))[0].plugin or []
    except argparse.ArgumentError:     # --plugin without a value: the full parser says so
        return []


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _help(f: dataclasses.Field, default: Any) -> str:
    text = f.metadata["help"]
    choices = f.metadata.get("choices")
    if choices is not None:
        text += f"; one of: {', '.join(choices())}"
    if isinstance(default, bool):     # as the option takes it: true|false
        text += f" (default {str(default).lower()})"
    elif default not in (None, {}, ()):
        text += f" (default {list(default) if isinstance(default, tuple) else default})"
    return text


def _metavar(f: dataclasses.Field) -> str:
    """The value's form: the declared metavar, else the choices (``layer|token``), else VALUE."""
    if f.metadata.get("metavar"):
        return f.metadata["metavar"]
    choices = f.metadata.get("choices")
    return "|".join(choices()) if choices is not None and len(choices()) <= 4 else "VALUE"


def add_config_options(parser, cls, *, title: str, skip: Sequence[str] = (), repeat: Sequence[str] = (),
                       defaults: dict[str, Any] | None = None, prefix: str = "", only: Sequence[str] | None = None):
    """One option per parameter of the config dataclass ``cls`` (except ``skip`` and the ones not
    meant for a command line; ``only``: just these); ``repeat``: options that may be given several
    times (a product); ``prefix``: for a nested group (``engine``: ``--engine-mode``, read back as
    ``engine.mode``)."""
    g = parser.add_argument_group(title)
    for f in params_of(cls):
        if f.name in skip or not f.metadata.get("cli", True) or (only is not None and f.name not in only):
            continue
        default = (defaults or {}).get(f.name, f.default)
        name = f"{prefix}.{f.name}" if prefix else f.name
        kw: dict[str, Any] = {"dest": name, "default": None, "metavar": _metavar(f), "help": _help(f, default)}
        if f.metadata["check"] is boolean:
            kw["metavar"] = "true|false"
        elif f.metadata["check"] is boolean_or_device:
            kw["metavar"] = "true|false|device"
        if f.name.endswith("_params"):
            kw.update(action="append", type=_key_value, metavar="KEY=VALUE", help=kw["help"] + " (repeatable)")
        elif f.name in repeat:
            kw.update(action="append", help=kw["help"] + " (repeatable)")
        g.add_argument(flag(name.replace(".", "_")), **kw)
    return g


def add_masking_parameter_options(parser, *, repeat: Sequence[str] = ()) -> None:
    """``--gamma``, ``--fixed-top-n``, ``--seed``: every parameter some masking policy declares."""
    g = parser.add_argument_group("masking policy parameters (each refused by a policy that does not take it)")
    for name in masking_parameter_names():
        owners = [n for n in masking.names() if name in masking.parameters(n)]
        f = next(x for x in dataclasses.fields(masking.REGISTRY.get_class(owners[0])) if x.name == name)
        kw: dict[str, Any] = {"dest": name, "default": None, "metavar": _metavar(f), "help": _help(f, f.default)}
        if name in repeat:
            kw.update(action="append", help=kw["help"] + " (repeatable)")
        try:
            g.add_argument(flag(name), **kw)
        except argparse.ArgumentError:    # a plugin policy's parameter named like an option of the verb
            raise DipsimError(f"masking policy {owners[0]!r} has a parameter {name!r}, which is also an option of "
                              f"{parser.prog} ({flag(name)}); give the parameter another name") from None


def given(args: argparse.Namespace, cls, *, names: Sequence[str] | None = None, prefix: str = "") -> dict[str, Any]:
    """The options of ``cls`` given on the command line, as a mapping (``*_params`` joined into dicts)."""
    out = {}
    fields = [f.name for f in params_of(cls)] if names is None else list(names)
    for name in fields:
        v = getattr(args, f"{prefix}.{name}" if prefix else name, None)
        if v is None:
            continue
        out[name] = dict(v) if name.endswith("_params") else v
    return out


def replay_config(args: argparse.Namespace) -> ReplayConfig:
    """The replay configuration a command line asks for, every value checked."""
    flat = given(args, ReplayConfig)
    flat.update(given(args, ReplayConfig, names=masking_parameter_names()))
    cfg = ReplayConfig.from_flat(flat, "command line").check("command line")
    unused = cfg.unused_keeps()
    if unused:
        raise DipsimError(f"--{unused.replace('_', '-', 1)}")   # the option's spelling: --keep-gate
    if "keep" in flat and cfg.keep != 1.0 and not masking.REGISTRY.get_class(cfg.masking).prunes:   # given
        raise DipsimError(f"--keep: masking policy {cfg.masking!r} leaves every group dense, so --keep does not apply")
    return cfg


# ----------------------------------------------------------------------------------------- types
def arg_type(convert: Callable[[str], Any], ok: Callable[[Any], bool], expected: str) -> Callable[[str], Any]:
    """An argparse ``type``: ``convert`` the text, then check it with ``ok``; either failing is the
    one-line error ``expected <expected>, got '<text>'``."""
    def parse(text: str) -> Any:
        try:
            v = convert(text)
        except ValueError:
            v = None
        if v is None or not ok(v):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return v
    return parse


fraction = arg_type(float, lambda v: 0 < v <= 1, "a number in (0, 1]")
positive_int = arg_type(int, lambda v: v > 0, "a positive integer")
#: worker processes or threads: at most ``common.params.max_workers()`` (4 per CPU)
workers = arg_type(int, lambda v: 1 <= v <= max_workers(), f"a whole number in [1, {max_workers()}] (4 per CPU)")
#: a random seed: what numpy's generators and the configurations' ``seed`` fields take
seed = arg_type(int, lambda v: 0 <= v <= 1 << 31, "a whole number in [0, 2^31]")


def _key_value(text: str) -> tuple[str, Any]:
    from common import plainyaml

    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    try:
        val: Any = plainyaml.load(v, k.strip()) if v.strip() else v
    except DipsimError:
        val = v
    if isinstance(val, (dict, list)):
        raise argparse.ArgumentTypeError(f"{k.strip()}: expected a plain value, got {v!r}")
    return k.strip(), val


def add_corpus_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("corpus (default: CPython's pydoc topics, offline English text)")
    g.add_argument("--text", metavar="FILE", help="a UTF-8 text file to run the model on")
    g.add_argument("--dataset", metavar="DIR", help="a local dataset directory (datasets.save_to_disk, or "
                   ".parquet/.jsonl/.txt files)")
    g.add_argument("--text-column", help="column holding the text in --dataset (default: text)")


def corpus_options(a: argparse.Namespace) -> dict[str, Any]:
    """The corpus a command line names, as ``text``, ``dataset`` and ``text_column`` keyword
    arguments; a ``--text-column`` without ``--dataset`` (it would be ignored) is refused."""
    if a.text_column is not None and a.dataset is None:
        raise DipsimError("--text-column applies to --dataset only (the column of a dataset that holds the text)")
    return {"text": a.text, "dataset": a.dataset, "text_column": a.text_column or "text"}


def save_figure(fig, path, option: str = "--out") -> None:
    from common.io import FIGURE_SUFFIXES, atomic, check_file

    path = check_file(path, option, FIGURE_SUFFIXES)
    with atomic(path) as tmp:
        fig.savefig(tmp, dpi=130)

