"""``dipsim optimize``: search the design space of an experiment's ``search:`` section with Optuna.

``space`` reads and checks the section (through the sweeps' config classes); ``study`` runs an Optuna
study kept in the output folder, each trial a real sweep point (``sweep.run_point``), resumable after
a kill; ``front`` computes the Pareto front; ``outputs`` writes ``trials.parquet``, ``pareto.png`` and
``best.yaml``; ``choose`` picks among a study's finished trials under a budget given afterwards;
``each`` splits a search into one study per variant (``search.each``) and ``fronts`` writes their
fronts side by side.
"""
from .choose import finished_study, option, with_budget
from .each import Variant, load_searches
from .front import nondominated
from .fronts import run_variants, write_fronts
from .outputs import OUTPUT_HOOKS, front_rows, trials_table, write_outputs
from .space import Dim, Objective, Search, load_search, violations
from .study import DEFAULT_STUDY, open_study, run_search, study_folder

__all__ = ["DEFAULT_STUDY", "Dim", "OUTPUT_HOOKS", "Objective", "Search", "Variant", "finished_study", "front_rows",
           "load_search", "load_searches", "nondominated", "open_study", "option", "run_search", "run_variants",
           "study_folder", "trials_table", "violations", "with_budget", "write_fronts", "write_outputs"]
