"""Every bad input gets one line and touches nothing (issues #13 and #22), checked on inputs generated
from valid ones (hypothesis): experiments (values, YAML structure: alias bombs, repeated keys, deep
nesting, grids too large), hardware profiles, traces (required and optional metadata, bytes), method
files (variant, adapter, predictor metadata and tensors), command-line options of every verb, and
input and output paths (special files, names too long, trailing slashes, an output that is an input).

Each case runs the real command in-process (``badinput.run_cli``): exit status 0 (the mutation
happened to be valid) or 2 with exactly one line ``dipsim: error: ...``; never an internal error or a
traceback, never a file created or changed beside the inputs, never a temporary file left behind.
The normal suite draws a few dozen cases per family; ``DIPSIM_FUZZ=2000 pytest tests/test_bad_input.py``
draws thousands (each case also runs under a 60 s alarm, so a hang fails instead of blocking).
The named cases of each family are in ``test_bad_yaml.py``, ``test_bad_files.py`` and
``test_bad_outputs.py``.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from badinput import BAD_VALUES, PROFILES, method_files, rewrite_meta, run_cli, scratch
from expected_replay import TRACE

EXAMPLES = int(os.environ.get("DIPSIM_FUZZ", "25"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
KEYS = ["masking", "keep", "keep_up", "keep_down", "cache", "warmup", "gamma", "dram_fraction", "dram_bytes",
        "allocation", "allocation_params", "weight_format", "calib_tokens", "tokens", "device", "accuracy",
        "accuracy_tokens", "cache_params", "engine", "layout", "fixed_top_n", "seed", "trace", "variant", "adapter",
        "predictor_file"]


# ----------------------------------------------------------------------------------------- experiments
def valid_experiment(trace: str) -> dict:
    return {"name": "fuzz", "trace": trace,
            "base": {"masking": "dip-ca", "keep": 0.5, "cache": "lru", "warmup": 4, "gamma": 0.2,
                     "engine": {"mode": "batch"}, "layout": {"reorder": "none"}},
            "grid": {"dram_fraction": [0.25, 0.5]}}


def alias_bomb(levels: int, fan: int, where: str) -> str:
    lines = ["x0: &a0 [x, y]"] + [f"x{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * fan) + "]" for i in range(1, levels)]
    return "\n".join(lines) + f"\n{where}: *a{levels - 1}\n"


@st.composite
def yaml_structures(draw, text: str) -> str:
    """``text`` with its YAML structure broken: an alias bomb, a recursive alias, a repeated key, deep
    nesting, a grid of too many points, binary or non-plain tags."""
    how = draw(st.sampled_from(["bomb", "recursive", "repeat", "nest", "grid", "tag", "cut"]))
    if how == "bomb":
        return text + alias_bomb(draw(st.integers(2, 12)), draw(st.integers(2, 12)),
                                 draw(st.sampled_from(["description", "zz", "name"])))
    if how == "recursive":
        return text + "zz: &r [1, *r]\n"
    if how == "repeat":
        lines = text.splitlines()
        i = draw(st.integers(0, len(lines) - 1))
        return "\n".join(lines[: i + 1] + [lines[i]] + lines[i + 1:]) + "\n"
    if how == "nest":
        n = draw(st.sampled_from([13, 40, 999, 5000]))
        return text + "description: " + "[" * n + "]" * n + "\n"
    if how == "grid":
        sizes = draw(st.lists(st.integers(150, 400), min_size=2, max_size=4))   # beyond the cap of 20,000 points
        axes = dict(zip(["dram_fraction", "keep", "gamma", "warmup"], sizes))
        grid = {k: [round(0.01 + i * 0.98 / n, 6) if k != "warmup" else i for i in range(n)] for k, n in axes.items()}
        data = yaml.safe_load(text)
        data["grid"] = grid
        return yaml.safe_dump(data)
    if how == "tag":
        return text + draw(st.sampled_from(["zz: !!binary aGVsbG8=\n", "zz: !!set {a, b}\n",
                                            "zz: !!python/object:os.system ls\n", "zz: 2001-12-14\n"]))
    return text[: draw(st.integers(0, len(text)))]


@st.composite
def bad_experiments(draw):
    """A valid experiment with one thing broken, as the YAML text to write."""
    exp = valid_experiment(str(TRACE))
    how = draw(st.sampled_from(["base_value", "grid_value", "delete", "extra", "top", "nested", "overridden",
                                "yaml"]))
    if how == "base_value":
        exp["base"][draw(st.sampled_from(KEYS))] = draw(BAD_VALUES)
    elif how == "grid_value":
        exp["grid"][draw(st.sampled_from(KEYS + ["engine.overlap_io", "layout.reorder", "cache_params.x"]))] = \
            [0.5, draw(BAD_VALUES)]
    elif how == "delete":
        del exp[draw(st.sampled_from(["trace", "grid", "base"]))]
    elif how == "extra":
        exp[draw(st.sampled_from(["base", "grid"]))][draw(st.sampled_from(["gama", "keeep", "engine.turbo"]))] = [1]
    elif how == "top":
        exp[draw(st.sampled_from(["name", "trace", "grid", "zip", "traces", "extra"]))] = draw(BAD_VALUES)
    elif how == "nested":
        exp["base"][draw(st.sampled_from(["engine", "layout", "cache_params"]))] = {
            draw(st.sampled_from(["mode", "reorder", "turbo", "step_model", "hot_fraction"])): draw(BAD_VALUES)}
    elif how == "overridden":          # a base value every point overrides is still checked
        key = draw(st.sampled_from(["gamma", "keep", "cache", "warmup", "device"]))
        exp["base"][key] = draw(BAD_VALUES)
        exp["grid"][key] = {"gamma": [0.2, 0.5], "keep": [0.25, 0.5], "cache": ["lru", "fifo"], "warmup": [2, 4],
                            "device": ["paper-a18"]}[key]
    text = yaml.safe_dump(exp, sort_keys=False, allow_unicode=True)
    if how == "yaml":
        text = draw(yaml_structures(text))
    return text.encode() if draw(st.booleans()) or how != "yaml" else b"\xff\xfe" + text.encode()


@FUZZ
@given(body=bad_experiments())
def test_bad_experiments_get_one_line_and_touch_nothing(capsys, body):
    with scratch() as d:
        p = d / "exp.yaml"
        p.write_bytes(body)
        run_cli(capsys, ["sweep", str(p), "--out", str(d / "out"), "-q"], d)


# ----------------------------------------------------------------------------------------- method files
METHOD_KEYS = {"variant": ["id", "model", "n_layers", "d_model", "d_ff", "bytes", "sparsity", "method", "matrices",
                           "kind"],
               "adapter": ["id", "model", "n_layers", "rank", "alpha", "fp16_bytes", "params", "targets", "kind"],
               "predictor": ["id", "model", "n_layers", "d_model", "d_ff", "heads", "rank", "kind"]}


@st.composite
def bad_method_files(draw):
    kind = draw(st.sampled_from(sorted(METHOD_KEYS)))
    how = draw(st.sampled_from(["value", "delete", "tensor", "bytes"]))
    return kind, how, draw(st.sampled_from(METHOD_KEYS[kind])), draw(BAD_VALUES), draw(st.integers(0, 3000))


@FUZZ
@given(case=bad_method_files())
def test_bad_method_files_get_one_line(capsys, case):
    kind, how, key, value, cut = case
    with scratch() as d:
        src = method_files(d)[kind]
        p = d / "m.safetensors"
        if how == "value":
            rewrite_meta(src, p, lambda m, h: m.__setitem__(key, value), "dipsim_method")
        elif how == "delete":
            rewrite_meta(src, p, lambda m, h: m.pop(key, None), "dipsim_method")
        elif how == "tensor":
            rewrite_meta(src, p, lambda m, h: h.pop(sorted(k for k in h if k != "__metadata__")[cut % (len(h) - 1)]),
                         "dipsim_method")
        else:
            p.write_bytes(src.read_bytes()[:cut])
        key_of = {"variant": "variant", "adapter": "adapter", "predictor": "predictor_file"}[kind]
        exp = {"name": "m", "trace": str(TRACE), "base": {"masking": "predictor" if kind == "predictor" else "dense",
                                                          "warmup": 4, "device": "phone-12gb-ufs40", key_of: str(p)}}
        (d / "exp.yaml").write_text(yaml.safe_dump(exp))
        run_cli(capsys, ["sweep", str(d / "exp.yaml"), "--out", str(d / "out"), "-q"], d)


# ----------------------------------------------------------------------------------------- profiles
FLASH_KEYS = ["latency", "unit_bandwidth", "units", "queue_depth", "link_bandwidth", "page_bytes",
              "max_request_bytes", "random_penalty", "host_overhead", "read_energy_per_byte", "name", "kind", "cited"]


@st.composite
def bad_profiles(draw):
    kind = draw(st.sampled_from(["flash", "device"]))
    if kind == "flash":
        data = yaml.safe_load((PROFILES / "flash" / "ufs-4.0.yaml").read_text())
        key = draw(st.sampled_from(FLASH_KEYS))
    else:
        data = yaml.safe_load((PROFILES / "devices" / "phone-12gb-ufs40.yaml").read_text())
        key = draw(st.sampled_from(["flash", "dram", "compute", "dram_capacity", "usable_dram_fraction", "overrides",
                                    "kind", "name", "runtime_reserve"]))
    if draw(st.booleans()) or key not in data:
        data[key] = draw(BAD_VALUES)
    else:
        del data[key]
    text = yaml.safe_dump(data, allow_unicode=True)
    return draw(yaml_structures(text)) if draw(st.integers(0, 3)) == 0 else text


@FUZZ
@given(text=bad_profiles())
def test_bad_profiles_get_one_line(capsys, text):
    with scratch() as d:
        p = d / "part.yaml"
        p.write_text(text)
        run_cli(capsys, ["profiles", str(p)], d)


# ----------------------------------------------------------------------------------------- traces
META_KEYS = ["n_layers", "d_model", "d_ff", "n_tokens", "bytes_per_weight", "n_heads", "n_kv_heads", "head_dim",
             "vocab_size", "attn_params_per_layer", "embed_params", "lm_head_params", "context", "has_h", "model",
             "static_bytes_per_weight", "tied_lm_head", "adapter_bytes", "synth", "corpus", "bos", "mlp_kind",
             "trace_dtype", "weight_dtype"]
SYNTH = st.one_of(BAD_VALUES, st.fixed_dictionaries({"validation": BAD_VALUES}),
                  st.fixed_dictionaries({"validation": st.fixed_dictionaries(
                      {"hit_rate_abs_error_max": BAD_VALUES, "by_config": st.one_of(BAD_VALUES, st.lists(BAD_VALUES))})}))


@st.composite
def bad_traces(draw):
    how = draw(st.sampled_from(["meta", "truncate", "offsets", "bytes"]))
    key = draw(st.sampled_from(META_KEYS))
    value = draw(SYNTH if key == "synth" else BAD_VALUES)
    cut = draw(st.integers(0, 4000))
    verb = draw(st.sampled_from(["replay", "mrc", "trace-info", "sweep"]))
    return how, key, value, cut, verb


@FUZZ
@given(case=bad_traces())
def test_bad_traces_get_one_line(capsys, case):
    how, key, value, cut, verb = case
    with scratch() as d:
        p = d / "t.safetensors"
        if how == "meta":
            rewrite_meta(Path(TRACE), p, lambda m, h: m.__setitem__(key, value))
        elif how == "offsets":
            def overlap(m, h):
                h["x.1"]["data_offsets"] = h["x.0"]["data_offsets"]
            rewrite_meta(Path(TRACE), p, overlap)
        elif how == "truncate":
            p.write_bytes(Path(TRACE).read_bytes()[:cut])
        else:
            raw = bytearray(Path(TRACE).read_bytes())
            raw[8 + cut % 200] ^= 0xFF
            p.write_bytes(bytes(raw))
        (d / "exp.yaml").write_text(yaml.safe_dump({"trace": str(p), "base": {"warmup": 2, "device": "paper-a18"}}))
        argv = {"replay": ["replay", "--trace", str(p), "--warmup", "2", "--profile", "phone-12gb-ufs40", "-q",
                           "--format", "json"],
                "mrc": ["mrc", "--trace", str(p), "--warmup", "2", "--points", "3", "--out", str(d / "m.csv"), "-q"],
                "trace-info": ["trace-info", str(p)],
                "sweep": ["sweep", str(d / "exp.yaml"), "--out", str(d / "out"), "-q"]}[verb]
        run_cli(capsys, argv, d)


# ----------------------------------------------------------------------------------------- options
OPTIONS = ["--keep", "--keep-up", "--keep-down", "--gamma", "--cache", "--dram-fraction", "--dram-bytes",
           "--warmup", "--tokens", "--calib-tokens", "--weight-format", "--masking", "--allocation",
           "--allocation-params", "--cache-params", "--engine-mode", "--engine-overlap-io", "--layout-reorder",
           "--threads", "--seed", "--profile", "--format"]
OTHER_VERBS = {
    "mrc": (["mrc", "--trace", "{t}", "--out", "{d}/m.csv", "-q", "--points", "3"], ["--points", "--keep", "--masking",
                                                                                       "--cache", "--out", "--plot"]),
    "synth": (["synth", "--like", "phi3-mini", "--tokens", "4", "--out", "{d}/s.safetensors", "-q"],
              ["--like", "--tokens", "--seed", "--weight-format", "--threads", "--out", "--fit"]),
    "sweep": (["sweep", "{d}/exp.yaml", "--out", "{d}/out", "-q"], ["--jobs", "--executor", "--scheduler", "--out"]),
    "trace-info": (["trace-info", "{t}"], ["--top", "--format"]),
    "plot": (["plot", "{d}/out"], ["--kind", "--out"]),
    "profiles": (["profiles"], ["--format"]),
}


@FUZZ
@given(opt=st.sampled_from(OPTIONS), value=BAD_VALUES.map(str))
def test_bad_options_get_one_line(capsys, opt, value):
    with scratch() as d:
        t = d / "t.safetensors"
        shutil.copy(TRACE, t)
        argv = ["replay", "--trace", str(t), "--warmup", "2", "-q", "--format", "json", opt, value]
        if opt.startswith(("--engine", "--layout")):
            argv += ["--profile", "phone-12gb-ufs40"]
        if opt in ("--gamma",):
            argv += ["--masking", "dip-ca"]
        run_cli(capsys, argv, d)


@FUZZ
@given(verb=st.sampled_from(sorted(OTHER_VERBS)), pick=st.integers(0, 20), value=BAD_VALUES.map(str))
def test_bad_options_of_every_verb_get_one_line(capsys, monkeypatch, verb, pick, value):
    with scratch() as d:
        monkeypatch.chdir(d)                  # a relative output path that happens to be valid lands here
        t = d / "t.safetensors"
        shutil.copy(TRACE, t)
        (d / "exp.yaml").write_text(yaml.safe_dump(valid_experiment(str(t))))
        base, options = OTHER_VERBS[verb]
        argv = [a.replace("{t}", str(t)).replace("{d}", str(d)) for a in base] + [options[pick % len(options)], value]
        run_cli(capsys, argv, d)


# ----------------------------------------------------------------------------------------- paths
INPUTS = ["/dev/zero", "/dev/null", "/proc/self/status", "/sys/kernel/mm/transparent_hugepage/enabled", "{d}",
          "{d}/loop", "{d}/fifo", "{d}/missing", "{d}/" + "n" * 300, "{d}/" + "n" * 3000, "{d}/t.safetensors/x",
          "{d}/t.safetensors"]
OUTPUTS = ["{d}/o/", "{d}/" + "n" * 300 + ".x", "{d}/" + "d/" * 2100 + "o.x", "{d}/t.safetensors", "{d}/exp.yaml",
           "/proc/o.x", "{d}", "{d}/o.x", "/dev/null"]
USES = {  # verb: (argv with {in} and/or {out}, suffix an output gets)
    "replay-in": (["replay", "--trace", "{in}", "-q"], ""), "replay-out": (["replay", "--trace", "{t}", "-q",
                                                                        "--save-log", "{out}"], ".npz"),
    "mrc-out": (["mrc", "--trace", "{t}", "--points", "3", "--out", "{out}", "-q"], ".csv"),
    "mrc-plot": (["mrc", "--trace", "{t}", "--points", "3", "--out", "{d}/m.csv", "--plot", "{out}", "-q"], ".png"),
    "trace-info": (["trace-info", "{in}"], ""), "profiles": (["profiles", "{in}"], ""),
    "sweep-in": (["sweep", "{in}", "--out", "{d}/res", "-q"], ""), "sweep-out": (["sweep", "{d}/exp.yaml", "--out",
                                                                                 "{out}", "-q"], ""),
    "synth-out": (["synth", "--like", "phi3-mini", "--tokens", "4", "--out", "{out}", "-q"], ".safetensors"),
    "synth-fit": (["synth", "--like", "phi3-mini", "--tokens", "4", "--out", "{d}/s.safetensors", "--fit", "{in}",
                   "-q"], ""),
    "fit-in": (["synth", "fit", "--traces", "{in}", "--out", "{d}/f.json", "--no-validate", "-q"], ""),
    "fit-out": (["synth", "fit", "--traces", "{t}", "--out", "{out}", "--no-validate", "-q"], ".json"),
    "plot-in": (["plot", "{in}"], ""), "eval-config": (["eval", "--config", "{in}", "--tokens", "16"], ""),
    "calibrate-in": (["calibrate", "--file", "{in}", "--out", "{d}/p.yaml", "--size", "1GiB", "--sizes", "4KiB",
                      "-q"], ""),
    "calibrate-out": (["calibrate", "--file", "{d}/data.bin", "--out", "{out}", "--size", "1GiB", "--sizes", "4KiB",
                       "-q"], ".yaml"),
}


@FUZZ
@given(use=st.sampled_from(sorted(USES)), pick=st.integers(0, 100), suffix=st.booleans())
def test_bad_paths_get_one_line_and_touch_nothing(capsys, monkeypatch, use, pick, suffix):
    """Special files, names too long for the file system, loops, pipes, a path through a file, a
    trailing slash, an output that is one of the inputs: one line each, before any work (the
    calibrate cases ask for one request size, which calibration refuses, so a valid path stops too)."""
    with scratch() as d:
        monkeypatch.chdir(d)
        t = d / "t.safetensors"
        shutil.copy(TRACE, t)
        (d / "exp.yaml").write_text(yaml.safe_dump(valid_experiment(str(t))))
        os.symlink(d / "loop", d / "loop")
        os.mkfifo(d / "fifo")
        argv, ext = USES[use]
        out = OUTPUTS[pick % len(OUTPUTS)]
        out = out.replace(".x", ext) if suffix else out
        argv = [a.replace("{in}", INPUTS[pick % len(INPUTS)]).replace("{out}", out).replace("{t}", str(t))
                .replace("{d}", str(d)) for a in argv]
        run_cli(capsys, argv, d)
