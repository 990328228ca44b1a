"""The ``search:`` section of an experiment file: what ``dipsim optimize`` may vary, what it optimizes,
under which constraints, with how many trials.

    name: search-smollm2
    trace: {model: smollm2-135m, tokens: 1024}
    base: {cache: lru, device: paper-a18, accuracy: true}     # every trial starts from this
    search:
      space:                                # point keys: a list is a choice, {low, high[, step, log]} a range
        masking: [dip, dip-ca, glu-prune]
        keep_up: {low: 0.2, high: 1.0}
        keep_down: {low: 0.2, high: 1.0}
        gamma: {low: 0.0, high: 1.0}        # sampled only for the policies that take it
        dram_fraction: {low: 0.1, high: 0.9}
      objectives: {tokens_per_s: max, perplexity: min}    # names of the metric table
      constraints: {max_perplexity_increase: 0.10, fits_in_dram: true}
      trials: 40
      sampler: tpe                          # or nsga2
      seed: 0

Every key of the space is a point key of ``simulator.config`` (the ones sweeps take), and every
value a trial can draw -- each choice, each end of a range -- is checked through the same
``PointConfig`` before any work, so spelling, defaults and errors are the sweeps'. A trial's values
join the base and become a sweep ``Point`` (``sweep.experiment.make_point``); a value the trial's
policy does not take (gamma for dip, keep_up for glu-prune) is not drawn at all.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import DipsimError
from common.params import boolean, number

from .. import masking, schedules
from ..config import PointConfig
from ..metrics import METRICS
from ..sweep.experiment import Experiment, Point, flatten, load_experiment, point_hash
from ..sweep.points import make_point

SEARCH_KEYS = ("space", "each", "share", "objectives", "constraints", "trials", "sampler", "seed")
SAMPLERS = ("tpe", "nsga2")
DIRECTIONS = {"max": "maximize", "min": "minimize", "maximize": "maximize", "minimize": "minimize"}
#: constraint -> (its check, what it needs in the base: "accuracy" or "device", its meaning)
CONSTRAINTS = {
    "max_perplexity_increase": (number(0, None), "accuracy", "perplexity <= dense_perplexity x (1 + value)"),
    "max_kl_to_dense": (number(0, None, lo_open=True), "accuracy", "kl_to_dense <= value"),
    "fits_in_dram": (boolean, "device", "the footprint fits the device's usable DRAM (fits_in_dram)"),
}
ACCURACY_METRICS = ("perplexity", "dense_perplexity", "kl_to_dense", "top1_agreement", "closed_loop_hit_rate",
                    "closed_loop_flash_bytes_per_token")
KEEPS = schedules.KEEPS
DEFAULT_TRIALS = 40


@dataclass(frozen=True)
class Dim:
    """One searched key: a choice among values, or a range (``integer``: whole numbers)."""

    name: str
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    integer: bool = False

    def describe(self) -> Any:
        if self.choices is not None:
            return list(self.choices)
        out = {"low": self.low, "high": self.high}
        out.update({k: v for k, v in (("step", self.step), ("log", self.log)) if v is not None and v is not False})
        return out


@dataclass(frozen=True)
class Objective:
    metric: str
    direction: str      # maximize | minimize

    @property
    def sign(self) -> float:
        """+1 when lower is better, -1 when higher is (values times sign are minimized)."""
        return 1.0 if self.direction == "minimize" else -1.0


@dataclass
class Search:
    """An experiment's search: its base point, the space, objectives, constraints and budget."""

    exp: Experiment
    base: dict[str, Any]
    dims: list[Dim]
    objectives: list[Objective]
    constraints: dict[str, Any]
    trials: int
    sampler: str
    seed: int

    @property
    def path(self) -> Path:
        return self.exp.path

    @property
    def digest(self) -> str:
        """What a study's trials mean: the base, the trace, the space, the objectives and constraints
        (not the trial budget, which a rerun may raise; nor the sampler)."""
        return point_hash({"base": self.base, "space": [dataclasses.asdict(d) for d in self.dims],
                           "objectives": [dataclasses.asdict(o) for o in self.objectives],
                           "constraints": self.constraints})

    def values_of(self, draw) -> dict[str, Any]:
        """A trial's values: ``draw(dim)`` for every dimension that applies to what was drawn before
        (masking and cache first, so that their parameters follow them)."""
        out: dict[str, Any] = {}
        for d in sorted(self.dims, key=lambda d: not (d.name in ("masking", "cache") or d.name.endswith(".rule"))):
            if applies(d.name, {**flatten(self.base), **out}, {x.name for x in self.dims}):
                out[d.name] = draw(d)
        return out

    def point(self, values: dict[str, Any]) -> Point:
        """The sweep point of a trial's values (the base with them set), checked."""
        return make_point(self.path, merged(self.base, values), list(values), check_traces=False)


def merged(base: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """The base with flat values set (``engine.mode``, ``keep.slope`` inside their mappings; a
    nested key replaces a plain value of its head, as a schedule's parameter replaces a number keep)."""
    out = json.loads(json.dumps(base))
    for k, v in values.items():
        head, _, rest = k.partition(".")
        if rest:
            sub = out.get(head)
            out[head] = {**(sub if isinstance(sub, dict) else {}), rest: v}
        else:
            out[k] = v
    return out


def applies(name: str, current: dict[str, Any], searched: set[str]) -> bool:
    """Whether key ``name`` means anything for a point with ``current`` values: a masking policy's
    own parameter only for the policies that take it, a keep only where the policy prunes its group
    (``keep`` not where every pruned group has its own searched keep), a cache parameter only for
    the caches that take it."""
    from .. import caches

    m = current.get("masking", "dip")
    cls = masking.REGISTRY.get_class(m)
    policy_params = {p for n in masking.names() for p in masking.parameters(n)}
    searched = {n.split(".")[0] for n in searched}
    head, _, rest = name.partition(".")
    if head in KEEPS and rest:      # a schedule's parameter: where the keep applies and its rule takes it
        rule = current.get(f"{head}.rule")
        return applies(head, current, searched) and (rest in ("rule", "mean") or rest in schedules.RULES.get(rule, {}))
    if name in policy_params:
        return name in masking.parameters(m)
    if name in KEEPS:
        groups = {"keep": set(cls.prunes), "keep_up": {"upgate"} & set(cls.prunes),
                  "keep_gate": {"upgate"} & set(cls.prunes), "keep_down": {"down"} & set(cls.prunes)}[name]
        if name == "keep":
            own = {"upgate"} if "keep_up" in searched else set()
            own |= {"down"} if "keep_down" in searched else set()
            groups -= own
        return bool(groups)
    if name.startswith("cache_params."):
        return name.split(".", 1)[1] in caches.policy_params(current.get("cache", "lru"))
    return True


# ----------------------------------------------------------------------------------------- reading
def load_search(path: str | Path) -> Search:
    """Read an experiment file with a ``search:`` section; every key and value checked (one line
    naming the file and key on any error) before any work. A section with ``each:`` is read by
    ``load_searches`` (one search per variant)."""
    exp, raw = read_section(path)
    if "each" in raw:
        raise DipsimError(f"{exp.path}: search.each: this file holds one search per variant; read it with "
                          f"load_searches (dipsim optimize does)")
    traces = exp.raw.get("traces")
    if isinstance(traces, list) and len(traces) > 1:
        raise DipsimError(f"{exp.path}: a search runs on one trace; give 'trace:' (this file lists {len(traces)} "
                          f"traces, or give search.each to search each of them)")
    trace = traces[0] if isinstance(traces, list) else exp.raw.get("trace", (exp.raw.get("base") or {}).get("trace"))
    return build_search(exp, raw, trace, {})


def read_section(path: str | Path) -> tuple[Experiment, dict[str, Any]]:
    exp = load_experiment(path, check_traces=True, allow_search=True)
    p = exp.path
    raw = exp.raw.get("search")
    if raw is None:
        raise DipsimError(f"{p}: no 'search:' section; dipsim optimize needs one (see experiments/search.yaml), "
                          f"dipsim sweep runs a grid")
    if not isinstance(raw, dict):
        raise DipsimError(f"{p}: search: expected a mapping of {', '.join(SEARCH_KEYS)}")
    unknown = [k for k in raw if k not in SEARCH_KEYS]
    if unknown:
        raise DipsimError(f"{p}: search: unknown key {unknown[0]!r}; allowed: {', '.join(SEARCH_KEYS)}")
    return exp, raw


def build_search(exp: Experiment, raw: dict[str, Any], trace: Any, fixed: dict[str, Any],
                 keep: Any = None) -> Search:
    """The search of ``raw`` (the section) on ``trace``, its base with the ``fixed`` values set;
    ``keep(name, base)``, when given, says which dimensions of the space it searches (the others do
    not apply to this variant), and a variant where none applies runs one trial."""
    p = exp.path
    base_point = make_point(p, merged({**(exp.raw.get("base") or {}), "trace": trace}, fixed), [],
                            check_traces=True)
    base = base_point.params      # the grid and zip, if any, are the sweep's: a search starts from the base
    dims = _space(p, raw.get("space"), base, keep)
    objectives = _objectives(p, raw.get("objectives"), base)
    constraints = _constraints(p, raw.get("constraints"), base)
    trials = number(1, 100_000, integer=True)(raw.get("trials", DEFAULT_TRIALS), f"{p}: search.trials")
    sampler = raw.get("sampler", "tpe")
    if sampler not in SAMPLERS:
        raise DipsimError(f"{p}: search.sampler: unknown sampler {sampler!r}; allowed: {', '.join(SAMPLERS)}")
    seed = number(0, None, integer=True)(raw.get("seed", 0), f"{p}: search.seed")
    return Search(exp, base, dims, objectives, constraints, trials if dims else 1, sampler, seed)


def _space(p: Path, raw: Any, base: dict[str, Any], keep: Any = None) -> list[Dim]:
    from ..config import point_keys

    where = f"{p}: search.space"
    if not isinstance(raw, dict) or not raw:
        raise DipsimError(f"{where}: expected a non-empty mapping of point keys to a list of choices or "
                          f"{{low, high}}")
    keys = point_keys()
    dims = []
    for k, v in raw.items():
        if not isinstance(k, str) or k.split(".", 1)[0] not in keys or k.split(".", 1)[0] in ("trace", "accuracy"):
            raise DipsimError(f"{where}: unknown key {k!r}; allowed: "
                              f"{', '.join(x for x in keys if x not in ('trace', 'accuracy'))}")
        dims.append(_dim(f"{where}.{k}", k, v))
    if keep is not None:     # a key is kept if it means something for the base or for a searched masking policy
        masks = next((d.choices for d in dims if d.name == "masking"), ())
        dims = [d for d in dims if any(keep(d.name, b) for b in [{**base, "masking": m} for m in masks] or [base])]
    for d in dims:
        _check_values(p, f"{where}.{d.name}", d, base, dims)
    return dims


def _dim(where: str, name: str, v: Any) -> Dim:
    if isinstance(v, list):
        if not v:
            raise DipsimError(f"{where}: an empty list of choices")
        if len({json.dumps(x, sort_keys=True, default=str) for x in v}) != len(v):
            raise DipsimError(f"{where}: a choice is listed twice")
        return Dim(name, choices=tuple(v))
    if isinstance(v, dict):
        extra = [k for k in v if k not in ("low", "high", "step", "log")]
        if extra or "low" not in v or "high" not in v:
            raise DipsimError(f"{where}: a range is {{low, high[, step, log]}}" +
                              (f"; unknown key {extra[0]!r}" if extra else ""))
        lo, hi = number()(v["low"], f"{where}.low"), number()(v["high"], f"{where}.high")
        if not lo < hi:
            raise DipsimError(f"{where}: an {'empty' if lo == hi else 'inverted'} range: low {lo:g} must be below "
                              f"high {hi:g}")
        step = number(0, hi - lo, lo_open=True, optional=True)(v.get("step"), f"{where}.step")
        log = boolean(v.get("log", False), f"{where}.log")
        if log and (lo <= 0 or step is not None):
            raise DipsimError(f"{where}.log: a log range needs low > 0 and no step")
        return Dim(name, low=lo, high=hi, step=step, log=log)
    raise DipsimError(f"{where}: expected a list of choices or a range {{low, high[, step, log]}}, got {v!r}")


def _check_values(p: Path, where: str, d: Dim, base: dict[str, Any], dims: list[Dim]) -> None:
    """Every value ``d`` can take, set on the base (with a masking policy that takes it), checked by
    ``PointConfig``; a range's ends, and whether the key takes whole numbers only."""
    masks = next((x.choices for x in dims if x.name == "masking" and x.choices), None) or (base.get("masking", "dip"),)
    names = {x.name for x in dims}
    hosts = [m for m in masks if isinstance(m, str) and m in masking.names()
             and applies(d.name, {**flatten(base), "masking": m, **_first_cache(dims, d),
                                  **_schedule_host(dims, d, base)}, names)]
    head, _, rest = d.name.partition(".")
    if head in KEEPS and rest not in ("", "rule", "mean") and not _schedule_host(dims, d, base):
        raise DipsimError(f"{where}: no keep schedule rule searched or in the base takes {rest!r}; rules and their "
                          f"parameters: {'; '.join(f'{r}: mean, {chr(44).join(ps)}' for r, ps in schedules.RULES.items())}")
    if d.name != "masking" and not hosts and d.name not in ("cache",):
        raise DipsimError(f"{where}: none of the masking policies searched ({', '.join(map(str, masks))}) takes it")
    host = {"masking": hosts[0]} if hosts and d.name != "masking" else {}
    host.update(_first_cache(dims, d))
    host.update(_schedule_host(dims, d, base))

    def check(v: Any) -> None:
        params = merged(base, {**host, d.name: v})
        try:
            PointConfig.from_flat(params, f"{p}: search.space")
        except DipsimError as e:
            msg = str(e)
            raise DipsimError(msg if d.name.split(".")[0] in msg else f"{where}: {msg.split(': ', 1)[-1]}") from None

    if d.choices is not None:
        for v in d.choices:
            check(v)
        return
    check(d.low)
    check(d.high)
    if d.low + 0.5 <= d.high:     # a key that refuses a half takes whole numbers: drawn as integers
        try:
            check(d.low + 0.5)
        except DipsimError:
            if d.low != int(d.low) or d.high != int(d.high):
                raise DipsimError(f"{where}: takes whole numbers; give whole low and high") from None
            object.__setattr__(d, "integer", True)


def _schedule_host(dims: list[Dim], d: Dim, base: dict[str, Any]) -> dict[str, Any]:
    """For a searched schedule parameter (``keep.lam``): a searched or base rule that takes it."""
    head, _, rest = d.name.partition(".")
    if head not in KEEPS or rest in ("", "rule", "mean"):
        return {}
    rules = next((x.choices for x in dims if x.name == f"{head}.rule" and x.choices), None)
    if rules is None:
        b = base.get(head)
        rules = (b.get("rule"),) if isinstance(b, dict) else ()
    for r in rules:
        if r in schedules.RULES and rest in schedules.RULES[r]:
            return {f"{head}.rule": r}
    return {}


def _first_cache(dims: list[Dim], d: Dim) -> dict[str, Any]:
    """For a searched cache parameter: the first searched cache that takes it."""
    from .. import caches

    if not d.name.startswith("cache_params."):
        return {}
    cache = next((x for x in dims if x.name == "cache"), None)
    for c in (cache.choices if cache and cache.choices else ()):
        if d.name.split(".", 1)[1] in caches.policy_params(c):
            return {"cache": c}
    return {}


def _objectives(p: Path, raw: Any, base: dict[str, Any]) -> list[Objective]:
    where = f"{p}: search.objectives"
    if raw is None:
        raw = {"tokens_per_s": "max", "perplexity": "min"} if base.get("accuracy") else {"tokens_per_s": "max"}
    if isinstance(raw, list) and all(isinstance(x, dict) and len(x) == 1 for x in raw):
        raw = {k: v for x in raw for k, v in x.items()}
    if not isinstance(raw, dict) or not raw:
        raise DipsimError(f"{where}: expected a mapping of metric names to max or min, e.g. "
                          f"{{tokens_per_s: max, perplexity: min}}")
    out = []
    for k, v in raw.items():
        if k not in METRICS or METRICS[k][0] in ("text", "bool"):
            numeric = [m for m, (u, _) in METRICS.items() if u not in ("text", "bool")]
            raise DipsimError(f"{where}: unknown objective {k!r}; allowed: the metric table's numeric names "
                              f"({', '.join(numeric[:12])}, ...; see README 'Metrics')")
        if v not in DIRECTIONS:
            raise DipsimError(f"{where}.{k}: expected max or min, got {v!r}")
        needs(f"{where}.{k}", k, base)
        out.append(Objective(k, DIRECTIONS[v]))
    return out


def needs(where: str, metric: str, base: dict[str, Any]) -> None:
    """Refuse (naming ``where``) a metric that the base does not measure (accuracy or a device)."""
    if metric in ACCURACY_METRICS and not base.get("accuracy"):
        raise DipsimError(f"{where}: {metric} is measured in the loop on the real model; set 'accuracy: true' in "
                          f"base")
    engine = ("tokens_per_s", "speedup_vs_dense", "dram_footprint_bytes", "latency_ms_mean", "fits_in_dram")
    if (metric in engine or metric.startswith(("latency_", "dense_"))) and metric != "dense_perplexity" \
            and not base.get("device"):
        raise DipsimError(f"{where}: {metric} comes from the device model; give 'device:' in base")


def _constraints(p: Path, raw: Any, base: dict[str, Any]) -> dict[str, Any]:
    where = f"{p}: search.constraints"
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise DipsimError(f"{where}: expected a mapping, e.g. {{max_perplexity_increase: 0.10, fits_in_dram: true}}")
    out = {}
    for k, v in raw.items():
        if k not in CONSTRAINTS:
            raise DipsimError(f"{where}: unknown constraint {k!r}; allowed: {', '.join(CONSTRAINTS)}")
        check, need, _ = CONSTRAINTS[k]
        out[k] = check(v, f"{where}.{k}")
        needs(f"{where}.{k}", "perplexity" if need == "accuracy" else "fits_in_dram", base)
    return {k: v for k, v in out.items() if v is not False}


def violations(constraints: dict[str, Any], metrics: dict[str, Any]) -> list[float]:
    """Optuna's constraint values of a trial's metrics (``m.<name>``): each <= 0 when met, its size
    how far it is from being met (relative for perplexity and KL)."""
    out = []
    for k, v in constraints.items():
        if k == "max_perplexity_increase":
            ppl, dense = float(metrics["m.perplexity"]), float(metrics["m.dense_perplexity"])
            out.append(ppl / dense - 1.0 - float(v))
        elif k == "max_kl_to_dense":
            out.append(float(metrics["m.kl_to_dense"]) / float(v) - 1.0)
        elif k == "fits_in_dram":
            out.append(0.0 if bool(metrics.get("m.fits_in_dram", True)) else 1.0)
    return out
