"""Every run parameter, once: its name, default, range and help (``common.params``).

    ReplayConfig    what replay decides: masking and its parameters, keeps, cache, budget, ...
    EngineConfig    the device simulation's options
    LayoutConfig    where columns lie on flash
    AccuracyRun     a closed-loop run: tokens, prompt, prefix token, which loop, which task
    MmluTask        the MMLU task: questions file, questions per topic, shots, cache reset
    TraceSpec       a trace to capture (model, tokens, text, context, prefix token)
    PointConfig     one sweep point: a trace, a replay configuration, a device, engine and layout
                    options, and whether to measure accuracy

The command-line options of replay, mrc, validate, eval and sweep, the keys of experiment files and
the keyword arguments of ``simulator.replay`` all come from these classes, so they share one
spelling and one default. ``prefix_token``, a field of both AccuracyRun and TraceSpec, is declared
once in ``traces.prefix`` (capture resolves it too). A masking policy's own parameters (``gamma``,
``fixed_top_n``, ``seed``) are declared on the policy class (``simulator.masking``) and checked by
building it, so a parameter the policy does not take is refused; the same goes for
``cache_params`` and the cache.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from common.errors import DipsimError
from common.params import (ConfigBase, boolean, boolean_or_device, child, choice, fraction_or_list, mapping, name_in, number, param,
                           params_of, says, size, text)
from traces import models, prefix
from traces.format import SIZE_LIMITS

from . import allocation, caches, masking, schedules

WEIGHT_FORMATS = {"int4": 0.5, "int8": 1.0, "fp8": 1.0, "fp16": 2.0, "bf16": 2.0, "fp32": 4.0}
REORDERS = ("none", "frequency", "coactivation")
NEURON_LAYOUTS = ("bundled", "separate")
ENGINE_MODES = ("batch", "fine")
LOOPS = ("layer", "token")
TASKS = ("text", "mmlu")
#: the cache budget, as a fraction of the MLP weights, when a run gives neither a budget nor a device
DEFAULT_DRAM_FRACTION = 0.5


@says(f"source, {', '.join(WEIGHT_FORMATS)}, or bytes per weight as a number in (0, 8]")
def _weight_format(v: Any, where: str) -> Any:
    if v is None or v == "source":
        return "source"
    if isinstance(v, str) and v in WEIGHT_FORMATS:
        return v
    try:
        return number(0, 8, lo_open=True)(v, where)
    except DipsimError:
        raise DipsimError(f"{where}: unknown weight format {v!r}; allowed: source, {', '.join(WEIGHT_FORMATS)}, or "
                          f"bytes per weight as a number in (0, 8]") from None


def keep_value(v: Any, where: str) -> Any:
    """A keep: a fraction in (0, 1], one per layer (a list), or a schedule (``simulator.schedules``: a
    mapping, or its YAML/JSON text as a command line gives it)."""
    if isinstance(v, str) and v.strip().startswith("{"):
        import yaml

        try:
            v = yaml.safe_load(v)
        except yaml.YAMLError:
            raise DipsimError(f"{where}: a keep schedule as text is a YAML mapping, got {v!r}") from None
    if isinstance(v, dict):
        return schedules.check(v, where)
    return fraction_or_list(v, where)


def masking_parameter_names() -> list[str]:
    """Every parameter some masking policy takes (gamma, fixed_top_n, seed, ...)."""
    return sorted({p for name in masking.names() for p in masking.parameters(name)})


@dataclass(frozen=True)
class ReplayConfig(ConfigBase):
    masking: str = param("dip", name_in("masking policy", masking.names),
                         "masking policy: which columns each token uses", choices=masking.names, metavar="NAME")
    keep: Any = param(0.5, keep_value, "fraction of columns kept per token, in every group (a number in (0, 1], "
                                             "one per layer, or a schedule: {rule: ramp|owl|greedy, mean: F, ...})", metavar="F")
    keep_up: Any = param(None, keep_value, "keep of the up/gate group (default: keep)", metavar="F")
    keep_gate: Any = param(None, keep_value, "a separate keep for W_gate: up and gate then get their own "
                                                   "masks and caches", metavar="F")
    keep_down: Any = param(None, keep_value, "keep of the down group (default: keep)", metavar="F")
    cache: str = param("lru", name_in("cache policy", caches.names), "DRAM cache policy, one cache per layer and "
                                                                     "matrix group", choices=caches.names, metavar="NAME")
    cache_params: dict = param(None, mapping, "parameters of the cache policy, e.g. hot_fraction for pinned, "
                                              "step_model (set | sequential) for any", metavar="KEY=VALUE")
    dram_fraction: Any = param(None, number(0, 1, optional=True),
                               "DRAM cache budget as a fraction of the MLP weights (default: what the device "
                               f"leaves when one is named, else {DEFAULT_DRAM_FRACTION})", metavar="F")
    dram_bytes: Any = param(None, size(hi=1e15), "DRAM cache budget in bytes (a number, or with a unit: 512MB, "
                                                 "2GiB; at most 1000 TB)", metavar="BYTES")
    allocation: str = param("uniform", name_in("allocation", allocation.names),
                            "split of the budget over layers and groups: uniform (the paper's) or benefit",
                            choices=allocation.names, metavar="NAME")
    allocation_params: dict = param(None, mapping, "parameters of the allocation scheme (benefit: steps)",
                                    metavar="KEY=VALUE")
    weight_format: Any = param("source", _weight_format, "bytes per weight: source (the trace's), int4, int8, fp8, "
                                                         "fp16, bf16, fp32, or a number", metavar="FMT")
    warmup: int = param(16, number(0, None, integer=True), "tokens reported apart as warm-up", metavar="N")
    calib_tokens: int = param(64, number(1, None, integer=True),
                              "trace prefix for calibrated policies (threshold, static, pinned) and the benefit "
                              "allocation", metavar="N")
    tokens: Any = param(None, number(1, None, integer=True, optional=True), "replay only the first N tokens",
                        metavar="N")
    masking_params: dict = param(None, mapping, "the masking policy's own parameters", cli=False)

    def __post_init__(self):
        for name in ("cache_params", "allocation_params", "masking_params"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, {})

    @classmethod
    def from_flat(cls, data: Any, where: str = "config") -> "ReplayConfig":
        """From a flat mapping in which the masking policy's parameters sit beside the rest
        (``{"masking": "dip-ca", "gamma": 0.2, ...}``, as in experiment files and on the command line).
        Every value is checked; a parameter the chosen policy does not take is refused."""
        data = dict(data or {})
        mparams = {k: data.pop(k) for k in masking_parameter_names() if k in data}
        nested = mapping(data.pop("masking_params", None), child(where, "masking_params"))
        for k in nested:
            if k in mparams:
                raise DipsimError(f"{child(where, 'masking_params')}: {k!r} is also given beside it; give it once")
        mparams.update(nested)
        cfg = cls.from_mapping(data, where)
        return dataclasses.replace(cfg, masking_params=cfg.checked_masking_params(mparams, where))

    def checked_masking_params(self, mparams: dict[str, Any], where: str) -> dict[str, Any]:
        takes = masking.parameters(self.masking)
        for k in mparams:
            if k not in takes:
                raise DipsimError(f"{child(where, k)}: masking policy {self.masking!r} has no parameter {k!r}; "
                                  f"its parameters: {', '.join(takes) or 'none'}")
        try:
            return masking.make(self.masking, **mparams).params()
        except DipsimError as e:
            raise DipsimError(f"{where}: {e}") from None

    def check(self, where: str = "config") -> "ReplayConfig":
        """The checks that involve several fields; returns self."""
        if self.dram_fraction is not None and self.dram_bytes is not None:
            raise DipsimError(f"{where}: give the DRAM budget as dram_fraction or dram_bytes, not both")
        takes = [p for p in caches.policy_params(self.cache) if p != "future"]
        for k in self.cache_params:
            if k not in takes:
                raise DipsimError(f"{child(where, 'cache_params')}: cache policy {self.cache!r} has no parameter "
                                  f"{k!r}; its parameters: {', '.join(takes) or 'none'}")
        try:
            caches.make(self.cache, n_layers=1, n_columns=1, capacity=0, **self.cache_params)
        except DipsimError as e:
            raise DipsimError(f"{child(where, 'cache_params')}: {e}") from None
        except (ValueError, TypeError) as e:   # a policy that converts a value before it checks it
            raise DipsimError(f"{child(where, 'cache_params')}: {self.cache}: {e}") from None
        object.__setattr__(self, "allocation_params", allocation.checked_params(
            self.allocation, self.allocation_params, child(where, "allocation_params")))
        return self

    def unused_keeps(self) -> str | None:
        """Why a group's own keep cannot apply (the policy leaves that group dense), or None."""
        cls = masking.REGISTRY.get_class(self.masking)
        for k, group in (("keep_up", "upgate"), ("keep_gate", "upgate"), ("keep_down", "down")):
            if getattr(self, k) is None:
                continue
            if cls.neuron_bundle is not None:
                return f"{k}: masking policy {self.masking!r} selects neurons (one group, one keep), so {k} does not apply"
            if group not in cls.prunes:
                return f"{k}: masking policy {self.masking!r} leaves the {group} group dense, so {k} does not apply"
        return None

    def cache_mismatch(self) -> str | None:
        """Why the masking policy cannot run with this cache (it is defined with another), or None."""
        allowed = masking.REGISTRY.get_class(self.masking).cache_policies
        if allowed is not None and self.cache not in allowed:
            return f"masking {self.masking} is defined with the {' or '.join(allowed)} cache, not {self.cache}"
        return None

    def policy(self) -> masking.MaskingPolicy:
        return masking.make(self.masking, **self.masking_params)

    def flat(self) -> dict[str, Any]:
        """The flat mapping (policy parameters beside the rest) that ``from_flat`` reads back."""
        out = self.to_mapping()
        out.pop("masking_params")
        out.update(self.masking_params)
        return out

    @property
    def offline_cache(self) -> bool:
        return bool(caches.REGISTRY.get_class(self.cache).offline)


@dataclass(frozen=True)
class EngineConfig(ConfigBase):
    mode: str = param("batch", choice(*ENGINE_MODES, kind="engine mode"), "flash time per request batch (a vectorized queue model) or "
                                                      "per request (one SimPy event each)", choices=lambda: ENGINE_MODES)
    overlap_io: bool = param(True, boolean, "cached columns are read while flash reads are in flight (else after them)")
    overlap_compute: bool = param(True, boolean, "compute overlaps its weights' memory time (roofline; else adds)")
    miss_via_dram: Any = param(None, boolean_or_device, "columns read from flash pass through DRAM to the compute "
                                                        "(unified memory, as on a phone); default: the device "
                                                        "profile's assumption (true unless it says otherwise)")
    prefetch: Any = param(None, boolean_or_device, "stages whose columns do not depend on the token are read "
                                                   "ahead; default: the device profile's assumption (true unless it "
                                                   "says otherwise)")
    compute_dtype: str = param("fp16", choice("fp16", "int8", kind="compute dtype"), "arithmetic the compute unit runs at",
                               choices=lambda: ("fp16", "int8"))


@dataclass(frozen=True)
class LayoutConfig(ConfigBase):
    reorder: str = param("none", choice(*REORDERS, kind="reordering"), "column placement on flash: index order, or reordered by miss "
                                                    "frequency or co-activation", choices=lambda: REORDERS)
    calib_tokens: int = param(64, number(1, None, integer=True), "tokens the reordering learns from", metavar="N")
    neurons: str = param("bundled", choice(*NEURON_LAYOUTS, kind="neuron layout"),
                         "placement of a neuron-level policy's neurons (cats, dejavu, powerinfer): bundled (gate|up|down "
                         "of a neuron contiguous: one read per missed neuron, as PowerInfer-2 and LLM in a Flash store "
                         "them) or separate (one region per matrix: a read per matrix)",
                         choices=lambda: NEURON_LAYOUTS)


@dataclass(frozen=True)
class AccuracyRun(ConfigBase):
    tokens: int = param(1024, number(2, None, integer=True), "text tokens to run", metavar="N")
    prefill: int = param(0, number(0, None, integer=True),
                         "leading text tokens run densely as a prompt and left out of every metric", metavar="N")
    loop: str = param("layer", choice(*LOOPS, kind="loop"), "layer: one parallel forward per configuration, policies and caches "
                                               "stepped through the tokens layer by layer (exact, at prefill "
                                               "speed); token: the token-by-token reference", choices=lambda: LOOPS)
    batch_invariant: bool = param(True, boolean, "token loop: linear layers row by row, so that a configuration's "
                                                 "figures do not depend on the batch", cli=False)
    prefix_token: Any = prefix.param()
    task: str = param("text", choice(*TASKS, kind="task"), "text: perplexity, KL and top-1 on a text; mmlu: "
                                                           "multiple-choice accuracy on MMLU questions (the options "
                                                           "of the mmlu task)", choices=lambda: TASKS)


@dataclass(frozen=True)
class MmluTask(ConfigBase):
    """The MMLU task's options (``accuracy.evaluate_mmlu``): eval's and a sweep's ``accuracy: {task: mmlu}``."""

    questions: Any = param(None, text(), "a questions file in the MMLU jsonl format (question, answer_a..d, "
                                         "correct_answer, topic; default: the installed MMLU test set, python3 "
                                         "tasks.py data mmlu)", metavar="FILE")
    questions_per_topic: int = param(10, number(0, None, integer=True), "questions drawn per topic (stratified, "
                                                                          "fixed seed); 0: every question", metavar="N")
    shots: int = param(0, number(0, 20, integer=True), "worked examples per prompt, other questions of the same "
                                                        "topic (lm-eval's k-shot)", metavar="K")
    question_seed: int = param(0, number(0, None, integer=True), "seed of the question draw and of the worked "
                                                                  "examples", metavar="S")
    reset_cache: bool = param(False, boolean, "start every question from a fresh cache (false: the cache state "
                                              "carries over from one question to the next, as on a device)")
    dtype: str = param("float32", choice(*models.DTYPES, kind="model dtype"), "the dtype the model computes in: bfloat16 runs "
                       "~4x faster with AMX, ~40x slower with AVX2 only (a warning says so), near-tied answers may flip", choices=lambda: models.DTYPES)

    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``evaluate_mmlu``."""
        return {**self.to_mapping(), "questions_per_topic": self.questions_per_topic or None}


@dataclass(frozen=True)
class TraceSpec(ConfigBase):
    model: str = param("smollm2-135m", text(optional=False),
                       "smollm2-135m, gemma3-270m, qwen2.5-0.5b, qwen2.5-coder-1.5b (optional: python3 tasks.py "
                       "model NAME), a local Hugging Face model directory, a .gguf file, or synth:NAME for a "
                       "synthetic trace of a 7B-14B geometry (dipsim synth; e.g. synth:phi3-medium)", metavar="MODEL")
    tokens: int = param(1024, number(1, SIZE_LIMITS["n_tokens"], integer=True), "tokens to record", metavar="N")
    text: Any = param(None, text(), "a UTF-8 text file to run the model on (default: the offline default corpus)",
                      metavar="FILE")
    context: int = param(512, number(2, SIZE_LIMITS["context"], integer=True),
                         "context window: the corpus runs in windows of this many positions", metavar="N")
    seed: int = param(0, number(0, None, integer=True), "seed of a synthetic (synth:NAME) trace", metavar="S")
    prefix_token: Any = prefix.param()

    @property
    def synthetic(self) -> str | None:
        """The preset of a synth:NAME trace (None for a captured one)."""
        return self.model.split(":", 1)[1] if self.model.startswith("synth:") else None

    @classmethod
    def from_mapping(cls, data: Any, where: str = "config", *, extra=()) -> "TraceSpec":
        """As every configuration, and a seed only where it does something: for a synthetic trace."""
        spec = super().from_mapping(data, where, extra=extra)
        if isinstance(data, dict) and "seed" in data and spec.synthetic is None:
            raise DipsimError(f"{child(where, 'seed')}: seeds a synthetic trace (model synth:NAME); "
                              f"{spec.model} is captured from the real model, which has no seed")
        return spec


# ----------------------------------------------------------------------------------------- a sweep point
#: a point's own keys beside the replay parameters (``PointConfig``), with their help
POINT_HELP: dict[str, str] = {
    "trace": "a trace file, or a mapping of TraceSpec keys (model, tokens, text, context, seed, prefix_token) "
             "that the sweep captures first",
    "device": "a device profile (name or .yaml path) to run the engine on; none: replay figures only",
    "engine": "a mapping of EngineConfig keys (mode, overlap_io, ...)",
    "layout": "a mapping of LayoutConfig keys (reorder, calib_tokens, neurons)",
    "accuracy": "true or {task: text|mmlu, ...}: also run the real model with the point's masking policy and "
                "cache in the loop (real: only where the trace's model is real)",
    "accuracy_tokens": "text tokens of the accuracy run (default: the trace's)",
    "variant": "a pruned variant of the weights (simulator.methods); its bytes per weight become the weight format",
    "adapter": "a LoRA adapter file (simulator.methods); its fp16 bytes stay in DRAM beside the static weights"}
POINT_KEYS = tuple(POINT_HELP)


def point_keys() -> list[str]:
    """Every key a sweep point (an experiment's ``base``, ``grid`` or ``zip``) may hold."""
    replay = [f.name for f in params_of(ReplayConfig) if f.name != "masking_params"]
    return list(POINT_KEYS) + replay + masking_parameter_names()


def _trace(v: Any, where: str) -> Any:
    if isinstance(v, dict):
        spec = TraceSpec.from_mapping(v, where)
        if spec.synthetic is not None:
            from traces.synth.presets import PRESETS

            if spec.synthetic not in PRESETS:
                raise DipsimError(f"{child(where, 'model')}: unknown synthetic model {spec.synthetic!r}; allowed: "
                                  f"{', '.join('synth:' + p for p in PRESETS)}")
        return spec
    if isinstance(v, str) and v.strip():
        return v
    raise DipsimError(f"{where}: expected a trace file path or a mapping {{model, tokens[, text, context]}}, got {v!r}")


def _accuracy(v: Any, trace: Any, where: str) -> Any:
    """A point's ``accuracy``: true/false (the text task over the trace's text), ``real`` (the text task
    where the trace comes from a real model: a synthetic ``synth:NAME`` trace then has no accuracy
    columns, as it has no model to run), or a mapping ``{task: text}`` / ``{task: mmlu,
    questions_per_topic: N, ...}`` (an ``MmluTask``)."""
    if v == "real":
        return not (isinstance(trace, TraceSpec) and trace.synthetic is not None)
    if not isinstance(v, dict):
        try:
            return boolean(v, where)
        except DipsimError:
            raise DipsimError(f"{where}: expected true, false or real (measured where the trace's model is real), "
                              f"or a mapping {{task: ...}}, got {v!r}") from None
    rest = dict(v)
    task = choice(*TASKS, kind="task")(rest.pop("task", "text"), child(where, "task"))
    if task == "text":
        if rest:
            raise DipsimError(f"{child(where, next(iter(rest)))}: the text task takes no options here (its tokens: "
                              f"accuracy_tokens)")
        return True
    return MmluTask.from_mapping(rest, where)


@dataclass(frozen=True)
class PointConfig:
    """One sweep point: a trace (a path, or a ``TraceSpec`` to capture), what replay does, and what
    the point adds (``POINT_HELP``: a device, engine and layout options, accuracy in the loop, a
    pruned ``variant`` and a LoRA ``adapter``)."""

    trace: Any
    replay: ReplayConfig
    device: str | None = None
    engine: EngineConfig = EngineConfig()
    layout: LayoutConfig = LayoutConfig()
    accuracy: Any = False            # False, True (the text task) or an MmluTask
    accuracy_tokens: int | None = None
    variant: str | None = None
    adapter: str | None = None

    @classmethod
    def from_flat(cls, params: dict[str, Any], where: str) -> "PointConfig":
        p = dict(params)
        if "trace" not in p:
            raise DipsimError(f"{where}: a point has no trace; give 'trace: PATH' or 'trace: {{model: smollm2-135m, "
                              f"tokens: 1024}}'")
        trace = _trace(p.pop("trace"), child(where, "trace"))
        device = text()(p.pop("device", None), child(where, "device"))
        engine = EngineConfig.from_mapping(p.pop("engine", None), child(where, "engine"))
        layout = LayoutConfig.from_mapping(p.pop("layout", None), child(where, "layout"))
        accuracy = _accuracy(p.pop("accuracy", False), trace, child(where, "accuracy"))
        acc_tokens = number(2, None, integer=True, optional=True)(p.pop("accuracy_tokens", None),
                                                                  child(where, "accuracy_tokens"))
        variant = text()(p.pop("variant", None), child(where, "variant"))
        adapter = text()(p.pop("adapter", None), child(where, "adapter"))
        replay = ReplayConfig.from_flat(p, where).check(where)
        if accuracy and isinstance(trace, TraceSpec) and trace.synthetic is not None:
            raise DipsimError(f"{child(where, 'accuracy')}: a synthetic trace ({trace.model}) has no model to run "
                              f"in the loop; accuracy needs a captured trace (accuracy: real measures it where "
                              f"the trace's model is real)")
        return cls(trace, replay, device, engine, layout, accuracy, acc_tokens, variant, adapter)

    def drop_reason(self) -> str | None:
        """Why the point cannot run although every value is valid (None: it can)."""
        if self.replay.offline_cache and masking.REGISTRY.get_class(self.replay.masking).cache_aware:
            return f"{self.replay.cache} is an offline oracle and {self.replay.masking} is cache-aware"
        unused = self.replay.unused_keeps() or self.replay.cache_mismatch()
        if unused:
            return unused
        if self.replay.offline_cache and self.accuracy:
            return f"{self.replay.cache} needs the future and cannot run in the closed loop (accuracy: true)"
        if self.accuracy and self.replay.policy().loop_refusal():
            return f"{self.replay.policy().loop_refusal()} (accuracy: true)"
        return None
