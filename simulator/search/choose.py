"""Choosing among a study's finished trials under another budget, running none: ``dipsim optimize EXP
--out DIR --max-perplexity-increase 0.05`` (one option per constraint of ``space.CONSTRAINTS``, named
after it) rewrites ``best.yaml``, ``trials.parquet``'s feasibility and the printed answer from the
trials the study holds. A constraint given replaces the file's of the same name, the file's others
stay (``--fits-in-dram false`` drops that one). The study is the one the file's search ran: a folder
without it, or with a study of another search, is refused in one line."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable

from common.errors import DipsimError

from .space import CONSTRAINTS, Search, needs
from .study import JOURNAL, META, journal_storage, lock


def option(constraint: str) -> str:
    """The command-line option of a constraint: ``max_perplexity_increase`` -> ``--max-perplexity-increase``."""
    return "--" + constraint.replace("_", "-")


def with_budget(search: Search, given: dict[str, Any], where: Callable[[str], str] = option) -> Search:
    """The search with the constraints ``given`` (name -> value as typed) in place of the file's of the
    same names, each checked as the file's are (errors name ``where(name)``); a false one is dropped."""
    cons = dict(search.constraints)
    for k, v in given.items():
        if k not in CONSTRAINTS:
            raise DipsimError(f"unknown constraint {k!r}; allowed: {', '.join(CONSTRAINTS)}")
        check, need, _ = CONSTRAINTS[k]
        cons[k] = check(v, where(k))
        needs(where(k), "perplexity" if need == "accuracy" else "fits_in_dram", search.base)
    return dataclasses.replace(search, constraints={k: v for k, v in cons.items() if v is not False})


def finished_study(search: Search, out: Path, name: str):
    """The study ``name`` of ``search`` in ``out`` as it stands (nothing run, nothing queued), for
    choosing among its finished trials; held under the folder's lock while the caller writes."""
    import optuna

    where = f"{out}: no study {name!r} to choose from; run dipsim optimize {search.path} --out {out}"
    try:
        known = json.loads((out / META).read_text())["studies"].get(name) if out.is_dir() else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        known = None
    if not known or not (out / JOURNAL).exists():
        raise DipsimError(f"{where} first (without a budget option)")
    if known.get("digest") != search.digest:
        raise DipsimError(f"{out}: study {name!r} was run with another search (base, space, objectives or "
                          f"constraints changed); choose from it with the file it ran, or give --study")
    held = lock(out)
    try:
        return optuna.load_study(study_name=name, storage=journal_storage(out)), held
    except BaseException:
        held.close()
        raise
