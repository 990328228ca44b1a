"""Plugins: policies from files and modules outside the package, found by path, module name or entry
point, checked at load, keyed by their source, and run by name everywhere a built-in name runs."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.errors import DipsimError
from simulator import caches, masking, plugins
from simulator.caches import PythonCache

from expected_replay import TRACE
from plugin_cases import BROKEN, POLICIES

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "plugins"


@pytest.fixture(autouse=True)
def clean_registries():
    """Every test starts and ends with the built-in names only."""
    plugins.unload()
    yield
    plugins.unload()
    for kind, reg in plugins.REGISTRIES.items():
        for n in [n for n in reg if n not in plugins.BUILTIN[kind]]:
            del reg[n]


def dipsim(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "simulator.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


# ----------------------------------------------------------------------------------------- PythonCache
class PyLRU(PythonCache):
    def __init__(self, n_layers, n_columns, capacity, step_model="set"):
        super().__init__(n_layers, n_columns, capacity, step_model)
        self.last = np.full((self.L, self.N), -1, dtype=np.int64)

    def on_access(self, layer, cols, hits, t):
        self.last[layer, cols] = t

    def evict_order(self, layer, cols, t):
        return cols[np.lexsort((cols, self.last[layer, cols]))]


class PyFIFO(PyLRU):
    def on_access(self, layer, cols, hits, t):
        self.last[layer, cols[~hits]] = t


@st.composite
def streams(draw):
    L, N, T = draw(st.integers(1, 3)), draw(st.integers(1, 10)), draw(st.integers(1, 40))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    pop = rng.random(N) ** 2
    masks = rng.random((T, L, N)) < draw(st.floats(0.0, 1.0)) * pop / max(pop.max(), 1e-9)
    cap = draw(st.one_of(st.integers(0, N + 1), st.lists(st.integers(0, N + 1), min_size=L, max_size=L)))
    return masks, cap


@pytest.mark.parametrize("py, name", [(PyLRU, "lru"), (PyFIFO, "fifo")])
@pytest.mark.parametrize("step_model", ["set", "sequential"])
@given(data=streams())
@settings(max_examples=80)
def test_python_cache_equals_the_compiled_policy(py, name, step_model, data):
    """A policy on PythonCache's two hooks follows the shared step semantics exactly: LRU and FIFO
    written in Python give the compiled policies' hits, evictions and contents, step by step, layer
    by layer (run_layer) and request by request (run)."""
    masks, cap = data
    T, L, N = masks.shape
    a = py(L, N, cap, step_model=step_model)
    b = caches.make(name, n_layers=L, n_columns=N, capacity=cap, step_model=step_model)
    for m in masks:
        assert np.array_equal(a.step(m), b.step(m))
        assert np.array_equal(a.resident, b.resident)
    assert a.counters() == b.counters()
    a, b = py(L, N, cap, step_model=step_model), caches.make(name, n_layers=L, n_columns=N, capacity=cap,
                                                             step_model=step_model)
    for layer in range(L):
        assert np.array_equal(a.run_layer(layer, masks[:, layer]), b.run_layer(layer, masks[:, layer]))
    ids = np.flatnonzero(masks[:, 0].ravel()) % N
    assert np.array_equal(a.run(ids, 0), b.run(ids, 0)) and a.counters() == b.counters()


# ----------------------------------------------------------------------------------------- loading
@pytest.mark.parametrize("fname, source, message", BROKEN, ids=[b[0] for b in BROKEN])
def test_a_broken_plugin_is_one_line_naming_the_file(tmp_path, fname, source, message):
    f = tmp_path / fname
    f.write_text(source)
    before = {k: set(r) for k, r in plugins.REGISTRIES.items()}
    with pytest.raises(DipsimError) as e:
        plugins.load([str(f)])
    text = str(e.value)
    assert text.startswith(f"plugin {f}: ") and message in text and "\n" not in text, text
    assert {k: set(r) for k, r in plugins.REGISTRIES.items()} == before     # nothing left registered
    assert f"dipsim_plugin_{f.stem}" not in " ".join(sys.modules)


def test_the_command_line_reports_a_broken_plugin_in_one_line(tmp_path):
    f = tmp_path / "int_mask.py"
    f.write_text(dict((b[0], b[1]) for b in BROKEN)["int_mask.py"])
    r = dipsim("replay", "--plugin", str(f), "--trace", str(TRACE))
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith(f"dipsim: error: plugin {f}: masking policy 'b-int' breaks the interface"), r.stderr
    r = dipsim("sweep", "--plugin", str(tmp_path / "none.py"), "x.yaml")
    assert r.returncode == 2 and r.stderr == f"dipsim: error: --plugin: plugin file not found: " \
                                             f"{tmp_path / 'none.py'}\n", r.stderr


def test_paths_module_names_and_their_errors(tmp_path, monkeypatch):
    for bad, msg in [("nope.py", "plugin file not found: nope.py"), ("a b", "is neither a plugin file"),
                     (str(tmp_path), "not a file"), ("no_such_module_dipsim_x", "No module named")]:
        with pytest.raises(DipsimError, match=msg):
            plugins.load([bad])
    with pytest.raises(DipsimError, match="expected a list of plugin files"):
        plugins.load("mass.py", where="exp.yaml: plugins")
    pkg = tmp_path / "site" / "mypolicies"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "mass.py").write_text((EXAMPLES / "mass.py").read_text())
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    p, = plugins.load(["mypolicies.mass"])
    assert p.names == (("masking", "dip-mass"),) and plugins.load(["mypolicies.mass"]) == [p]   # once
    assert plugins.source_key({"masking": "dip-mass", "cache": "lru"}) == {"masking:dip-mass": p.digest}
    assert plugins.source_key({"masking": "dip", "cache": "lru"}) == {}


def test_parameters_are_checked_like_the_built_ins(tmp_path):
    plugins.load([str(EXAMPLES / "mass.py"), str(EXAMPLES / "decay.py")])
    from simulator.config import ReplayConfig

    cfg = ReplayConfig.from_flat({"masking": "dip-mass", "mass": "0.7", "cache": "lfu-decay",
                                  "cache_params": {"half_life": 8}}).check()
    assert cfg.masking_params == {"mass": 0.7}
    for flat, msg in [({"masking": "dip-mass", "mass": 1.5}, "config: dip-mass mass: must be a number in (0, 1]"),
                      ({"masking": "dip-mass", "gamma": 0.2}, "masking policy 'dip-mass' has no parameter 'gamma'"),
                      ({"masking": "dip", "mass": 0.5}, "masking policy 'dip' has no parameter 'mass'"),
                      ({"cache": "lfu-decay", "cache_params": {"half_life": 0}}, "lfu-decay half_life: must be"),
                      ({"cache": "lfu-decay", "cache_params": {"size": 3}}, "cache policy 'lfu-decay' has no "
                                                                             "parameter 'size'")]:
        with pytest.raises(DipsimError, match=msg.replace("(", r"\(").replace(")", r"\)").replace("]", r"\]")):
            ReplayConfig.from_flat(flat).check()
    r = dipsim("replay", "--plugin", str(EXAMPLES / "mass.py"), "--trace", str(TRACE), "--masking", "dip-mass",
               "--mass", "2")
    assert r.returncode == 2 and r.stderr == "dipsim: error: command line: dip-mass mass: must be a number in (0, " \
                                             "1], got '2'\n", r.stderr


def test_an_edited_plugin_is_loaded_anew_and_keyed_anew(tmp_path):
    f = tmp_path / "mass.py"
    f.write_text((EXAMPLES / "mass.py").read_text())
    p1, = plugins.load([str(f)])
    assert plugins.loaded() == [(str(f), p1.digest)]
    f.write_text(f.read_text().replace("param(0.9,", "param(0.8,"))
    p2, = plugins.load([str(f)])
    assert p2.digest != p1.digest and masking.make("dip-mass").mass == 0.8
    with pytest.raises(DipsimError, match="changed since the run started"):
        plugins.load([(str(f), p1.digest)], where="worker")
    from simulator.sweep import load_experiment

    exp = tmp_path / "e.yaml"
    exp.write_text(f"plugins: [mass.py]\ntrace: {TRACE}\ngrid: {{masking: [dip, dip-mass]}}\nbase: {{warmup: 4}}\n")
    keys = [p.key for p in load_experiment(exp).points]
    f.write_text(f.read_text() + "\n# edited\n")
    again = [p.key for p in load_experiment(exp).points]
    assert keys[0] == again[0] and keys[1] != again[1]    # the built-in point keeps its key, the plugin's moves
    assert keys[1].split("#")[0] == again[1].split("#")[0] == "masking=dip-mass"


def test_an_allocation_scheme_from_a_plugin(tmp_path):
    f = tmp_path / "front.py"
    f.write_text('''
from dataclasses import dataclass
import numpy as np
from common.params import number, param
from simulator.allocation import Allocation, register_allocation

@register_allocation("front")
@dataclass(frozen=True)
class Front(Allocation):
    """the budget goes to the first layers first"""
    share: float = param(1.0, number(0, 1), "front: the share of a layer's columns a layer may take")

    def split(self, groups, L, budget, calib):
        out = {g.name: np.zeros(L, dtype=np.int64) for g in groups}
        for layer in range(L):
            for g in groups:
                c = min(int(self.share * g.n_columns), int(budget // g.bytes_per_column))
                out[g.name][layer], budget = c, budget - c * g.bytes_per_column
        return out
''')
    plugins.load([str(f)])
    import simulator
    import traces

    t = traces.load(TRACE)
    log = simulator.replay(t, "dip", "lru", "front", keep=0.5, dram_fraction=0.3, warmup=4)
    cap = log.groups["down"].capacity
    assert cap[0] == t.meta["d_ff"] and cap[-1] == 0           # the first layers hold everything, the last none
    with pytest.raises(DipsimError, match="allocation 'front' has no parameter 'steps'"):
        simulator.replay(t, "dip", "lru", "front", allocation_params={"steps": 3})


def test_entry_points_of_installed_distributions(tmp_path):
    """A distribution installed on the path with a dipsim.masking entry point: every process loads it
    (no --plugin), its names work, and a broken one fails in one line naming the entry point."""
    site = tmp_path / "site"
    (site / "eppkg").mkdir(parents=True)
    (site / "eppkg" / "__init__.py").write_text("")
    (site / "eppkg" / "mass.py").write_text((EXAMPLES / "mass.py").read_text())
    dist = site / "eppkg-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: eppkg\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[dipsim.masking]\nmass = eppkg.mass\n")
    env = {**__import__("os").environ, "PYTHONPATH": f"{site}:{ROOT}"}
    r = dipsim("replay", "--trace", str(TRACE), "--masking", "dip-mass", "--mass", "0.5", "--warmup", "4",
               "--format", "json", "-q", env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["config"]["masking"] == "dip-mass"
    (dist / "entry_points.txt").write_text("[dipsim.caches]\nbroken = eppkg.missing\n")
    r = dipsim("profiles", env=env)
    assert r.returncode == 2 and r.stderr.startswith("dipsim: error: plugin entry point broken = eppkg.missing "
                                                     "(dipsim.caches, distribution eppkg): cannot import it"), r.stderr


def test_results_of_plugin_classes_are_keyed_by_their_source(tmp_path):
    from simulator.accuracy import store
    from simulator.sweep.dense import baseline_key
    from simulator.config import PointConfig, ReplayConfig

    f = tmp_path / "policies.py"
    f.write_text(POLICIES)
    p, = plugins.load([str(f)])
    cfg = {"masking": "t-sticky", "cache": "t-mru", "allocation": "uniform"}
    assert store.result_key("m", "c", {}, cfg)["plugins"] == {"masking:t-sticky": p.digest, "cache:t-mru": p.digest}
    assert "plugins" not in store.result_key("m", "c", {}, {**cfg, "masking": "dip", "cache": "lru"})
    point = PointConfig(str(TRACE), ReplayConfig(masking="t-sticky", cache="t-mru"), "dev")
    before = baseline_key(point, TRACE)              # the dense baseline uses the plugin's cache
    f.write_text(POLICIES + "\n# edited\n")
    plugins.load([str(f)])
    assert baseline_key(point, TRACE) != before
    assert baseline_key(PointConfig(str(TRACE), ReplayConfig(masking="t-sticky"), "dev"), TRACE) == \
        baseline_key(PointConfig(str(TRACE), ReplayConfig(masking="dip"), "dev"), TRACE)


@pytest.fixture
def in_tree():
    """``POLICIES`` registered in this process the way a built-in policy module registers itself
    (imported as a module; no plugin loader, no source hash)."""
    import types

    mod = types.ModuleType("dipsim_in_tree_policies")
    sys.modules[mod.__name__] = mod
    exec(compile(POLICIES, "<in-tree>", "exec"), mod.__dict__)
    yield
    sys.modules.pop(mod.__name__, None)


def cli_json(capsys, *args: str):
    from simulator.cli import main

    capsys.readouterr()
    assert main(list(args)) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def without_timing(d):
    if isinstance(d, list):
        return [without_timing(x) for x in d]
    return {k: without_timing(v) if isinstance(v, (dict, list)) else v for k, v in d.items()
            if not k.endswith("seconds")} if isinstance(d, dict) else d


def sweep_rows(out: Path):
    import pandas as pd

    df = pd.read_parquet(out / "results.parquet")
    df["key"] = df["key"].str.split("#").str[0]     # the plugin's source hash is in the hash part
    return df[[c for c in df.columns if not c.endswith("seconds")]].sort_values("key").reset_index(drop=True)


@pytest.mark.slow
def test_a_plugin_runs_everywhere_a_built_in_name_runs(tmp_path, in_tree, capsys):
    """A plugin in a folder outside the repository defines a masking and a cache policy: replay, eval,
    a 2-worker sweep and a Dask sweep run them by name (subprocesses, --plugin and the experiment's
    plugins key) and give the same rows as the same classes registered in-tree (this process)."""
    import pandas as pd

    from test_engine import device

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    plugin = elsewhere / "policies.py"
    plugin.write_text(POLICIES)
    assert not plugin.resolve().is_relative_to(ROOT)
    run = ["--masking", "t-sticky", "--bonus", "0.7", "--keep", "0.5", "--cache", "t-mru", "--dram-fraction", "0.4",
           "--warmup", "4", "--format", "json", "-q"]
    replay = ["replay", "--trace", str(TRACE), "--profile", str(device(tmp_path)), *run]
    r = dipsim(*replay, "--plugin", str(plugin))
    assert r.returncode == 0, r.stderr
    assert without_timing(json.loads(r.stdout)) == without_timing(cli_json(capsys, *replay))

    evaluate = ["eval", "--tokens", "32", "--masking", "dip", "--no-reuse", *run]
    r = dipsim(*evaluate, "--plugin", str(plugin))
    assert r.returncode == 0, r.stderr
    got, want = without_timing(json.loads(r.stdout)), without_timing(cli_json(capsys, *evaluate))
    assert [x["label"] for x in got] == ["dip keep=0.5 t-mru dram=0.4", "t-sticky(bonus=0.7) keep=0.5 t-mru dram=0.4"]
    assert got == want

    body = {"name": "plug", "trace": str(TRACE), "base": {"keep": 0.5, "warmup": 4, "dram_fraction": 0.4,
                                                          "device": str(device(tmp_path))},
            "grid": {"masking": ["t-sticky", "dip"], "cache": ["t-mru", "lru"]}}
    (tmp_path / "exp").mkdir()
    import yaml

    (tmp_path / "exp" / "ref.yaml").write_text(yaml.safe_dump(body))
    (tmp_path / "exp" / "plug.yaml").write_text(yaml.safe_dump({"plugins": ["../elsewhere/policies.py"], **body}))
    from simulator.cli import main

    assert main(["sweep", str(tmp_path / "exp" / "ref.yaml"), "--out", str(tmp_path / "ref"), "-q"]) == 0
    want = sweep_rows(tmp_path / "ref")
    assert len(want) == 4 and (want["m.hit_rate"] > 0).all()
    for name, extra in (("pool", ["--jobs", "2"]), ("dask", ["--executor", "dask", "--jobs", "2"])):
        r = dipsim("sweep", "exp/plug.yaml", "--out", name, "-q", *extra, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        pd.testing.assert_frame_equal(sweep_rows(tmp_path / name), want)


def test_the_shipped_example_experiment_loads_its_plugins_from_beside_it(tmp_path, monkeypatch):
    from simulator.sweep import load_experiment

    monkeypatch.chdir(tmp_path)                      # anywhere: the plugins are found beside the file
    exp = load_experiment(EXAMPLES / "experiment.yaml", check_traces=False)
    assert {p.spec for p in plugins.plugins()} == {str(EXAMPLES / "mass.py"), str(EXAMPLES / "decay.py")}
    kinds = {(p.params["masking"], p.params.get("mass"), p.params["cache"]) for p in exp.points}
    assert len(exp.points) == 9 and ("dip", None, "lfu-decay") in kinds and ("dip-mass", 0.95, "lru") in kinds
