"""Interrupting a long verb the way a user does, for ``test_interrupts.py`` (and any verb added later:
give its command line, what it prints once it is busy, and how to check its output).

``interrupt(argv, ...)`` starts ``python -m simulator.cli argv`` in its own session, waits until its
stderr matches the regular expression ``when`` (or ``when`` seconds have passed), sends the signal -- SIGINT to the whole
process group, as a terminal's Ctrl-C does, SIGTERM to the process alone, as ``kill`` does -- and
returns the exit status, the seconds from the signal to the exit, stderr, and the processes of the
session still alive afterwards (workers that outlived the command). ``check_stopped`` asserts the
contract of issue 22: exit 130 (SIGINT) or 143 (SIGTERM) within ``LIMIT`` seconds, one message, no
traceback, no hidden temporary file or scratch folder, no process left behind.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from badinput import leftovers

LIMIT = 2.0          # seconds from the signal to the exit


@dataclass
class Stopped:
    rc: int | None
    seconds: float           # from the signal to the exit
    stderr: str
    alive: list[int]         # processes of the command's session still running after it exited


def _session(sid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                stat = (p / "stat").read_text()
                fields = stat[stat.rindex(")") + 2:].split()
                if int(fields[3]) == sid and fields[0] != "Z":
                    out.append(int(p.name))
            except (OSError, ValueError, IndexError):
                continue
    return out


def interrupt(argv: list[str], *, cwd: Path, when: str | float, sig: int = signal.SIGINT,
              wait: float = 300.0, env: dict[str, str] | None = None) -> Stopped:
    proc = subprocess.Popen([sys.executable, "-m", "simulator.cli", *map(str, argv)], cwd=cwd, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
                            env={**os.environ, **(env or {})})
    err = b""
    t_end = time.monotonic() + wait
    os.set_blocking(proc.stderr.fileno(), False)
    while proc.poll() is None and time.monotonic() < t_end:
        chunk = proc.stderr.read()
        err += chunk or b""
        if isinstance(when, str) and re.search(when, err.decode(errors="replace")):
            break
        if not isinstance(when, str) and time.monotonic() - (t_end - wait) >= when:
            break
        time.sleep(0.02)
    assert proc.poll() is None, f"{argv[0]} ended before the interrupt: {err.decode()[-500:]}"
    t0 = time.monotonic()
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    os.set_blocking(proc.stderr.fileno(), True)
    try:
        _, rest = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, rest = proc.communicate()
    seconds = time.monotonic() - t0
    time.sleep(0.3)
    alive = _session(proc.pid)
    for pid in alive:
        os.kill(pid, signal.SIGKILL)
    return Stopped(proc.returncode, seconds, (err + rest).decode(errors="replace"), alive)


def check_stopped(s: Stopped, sig: int, folder: Path) -> None:
    assert s.rc == (130 if sig == signal.SIGINT else 143), s.stderr[-800:]
    assert s.seconds < LIMIT, f"{s.seconds:.2f} s from the signal to the exit"
    assert "Traceback" not in s.stderr and "internal error" not in s.stderr, s.stderr[-800:]
    lines = [ln for ln in s.stderr.replace("\r", "\n").splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("dipsim: "), s.stderr[-800:]     # dipsim's line is the last word
    assert "leaked semaphore" not in s.stderr, s.stderr[-800:]
    assert leftovers(folder) == [], leftovers(folder)
    assert s.alive == [], f"{len(s.alive)} processes outlived the command"
