"""The ``dipsim`` command line: one module per verb, each adding its parser (``add_parser``) and the
function that runs it; options that set run parameters are generated from ``simulator.config``
(``options``). Nothing outside this package imports it.

Every verb turns bad input into one line ``dipsim: error: ...`` (exit status 2) naming the file,
field or option and the allowed values; Ctrl-C prints what was kept and exits with 130, SIGTERM
with 143. Heavy modules (torch, simpy, pandas) are imported only by the verbs that need them.
"""
from __future__ import annotations

import argparse
import os
import sys

from common.errors import DipsimError, one_line
from common.interrupts import exit_status
from common.progress import close_all

from . import demo, disk, eval, mrc, optimize, profiles, replay, report, sweep, synth, trace

VERBS = (trace, synth, replay, mrc, sweep, optimize, report, profiles, disk, eval, demo)


class Parser(argparse.ArgumentParser):
    """argparse, with its errors in dipsim's one-line form (``dipsim: error: ...``, exit 2) rather
    than a usage block and a second line."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)   # --gam for --gamma would break when an option is added
        super().__init__(*args, **kwargs)

    def parse_args(self, args=None, namespace=None):
        a, extra = self.parse_known_args(args, namespace)
        cmd = getattr(a, "command", None)
        if extra:    # name the verb whose options they are not, and point to its help
            self.exit(2, f"dipsim: error: {cmd + ': ' if cmd else ''}unrecognized arguments: {one_line(' '.join(extra))} "
                         f"(see dipsim {cmd + ' ' if cmd else ''}--help)\n")
        empty = [k for k, v in vars(a).items() if (v == "" or isinstance(v, list) and "" in v) and k != "command"]
        if empty:    # --profile= would otherwise read as "no profile" and be silently ignored
            self.exit(2, f"dipsim: error: {cmd + ': ' if cmd else ''}{self._spelling(empty[0])}: an empty value "
                         f"(see dipsim {cmd + ' ' if cmd else ''}--help)\n")
        return a

    def _spelling(self, dest: str) -> str:
        """How the option with ``dest`` is spelled on the command line (``--profile``)."""
        todo = [self]
        while todo:
            p = todo.pop()
            for act in p._actions:
                if act.dest == dest and act.option_strings:
                    return max(act.option_strings, key=len)
                if act.dest == dest:
                    return act.metavar or dest
                todo.extend(getattr(act, "choices", None).values() if isinstance(act, argparse._SubParsersAction)
                            else [])
        return dest

    def error(self, message: str):
        cmd = self.prog.split(" ", 1)[1] + ": " if " " in self.prog else ""
        self.exit(2, f"dipsim: error: {cmd}{one_line(message)} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from traces import __version__

    p = Parser(
        prog="dipsim",
        description="Memory-hierarchy simulator for on-device LLM inference with dynamic activation sparsity: "
                    "capture activation traces from real models, replay masking (DIP, DIP-CA, baselines) and "
                    "DRAM cache policies over them, turn the flash/DRAM traffic into time on modelled devices, "
                    "and measure accuracy with the policies in the loop.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"dipsim {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for verb in VERBS:
        verb.add_parser(sub)
    p.verbs = list(sub.choices)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run ``dipsim argv`` (default: this process's command line) and return the exit status.

    Run as the process's own command line (``argv`` None: the ``dipsim`` script, ``python -m``), an
    interrupted command exits at once once it has cleaned up (the atomic writers have removed their
    temporary files while the interrupt unwound): without waiting for threads still finishing a
    layer, or for exit handlers, so that Ctrl-C or SIGTERM ends any verb within moments."""
    import threading

    from common.interrupts import as_exceptions, end_quiet_start

    if threading.current_thread() is not threading.main_thread():
        return _main(argv)
    end_quiet_start()          # from here Ctrl-C is a KeyboardInterrupt that cleans up
    stdout = sys.stdout
    if argv is None and stdout is not None:
        sys.stdout = _Output(stdout)
    try:
        try:
            with as_exceptions():
                rc = _main(argv)
        except KeyboardInterrupt as e:     # one delivered again (common.interrupts) as the command ended
            print("dipsim: interrupted", file=sys.stderr)
            rc = exit_status(e)
        if argv is None and rc == 0:
            rc = _flush_stdout()
    finally:
        sys.stdout = stdout
    if argv is None and rc in (130, 143):
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(rc)
    return rc


class _Output:
    """The process's standard output, with a failed write (``> /dev/full``, a full disk) raised as
    the one-line error it is rather than an internal error; a reader that went away
    (``dipsim ... | head``) stays a BrokenPipeError, which is no error."""

    def __init__(self, stream):
        self._stream = stream

    def _do(self, what, *args):
        try:
            return getattr(self._stream, what)(*args)
        except BrokenPipeError:
            raise
        except OSError as e:
            raise DipsimError(f"cannot write the output to standard output: {e.strerror or e}") from None

    def write(self, text):
        return self._do("write", text)

    def flush(self):
        return self._do("flush")

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _flush_stdout() -> int:
    """Flush the output of a finished command: 0, or 2 after saying in one line that it could not be
    written. Standard output then points at /dev/null, so that Python's flush at exit stays quiet."""
    if sys.stdout is None:       # started with standard output closed (>&-): Python drops what is printed
        return 0
    try:
        sys.stdout.flush()
        return 0
    except BrokenPipeError:
        rc = 0
    except DipsimError as e:
        print(f"dipsim: error: {e}", file=sys.stderr)
        rc = 2
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    return rc


def _main(argv: list[str] | None) -> int:
    from .. import plugins
    from .options import plugin_specs

    try:        # plugins first: their names and parameters become choices and options
        plugins.load(plugin_specs(sys.argv[1:] if argv is None else argv))
        parser = build_parser()
        try:
            a = parser.parse_args(argv)
        except SystemExit as e:      # --help, --version, or a bad option already reported in one line
            return int(e.code or 0)
        a.argv = list(sys.argv[1:] if argv is None else argv)    # the command, for what a run records of itself
        if not a.command:    # nothing to do: a usage error, in one line
            print(f"dipsim: error: give a command: {', '.join(parser.verbs)} (see dipsim --help)", file=sys.stderr)
            return 2
        rc = a.run(a)
    except DipsimError as e:
        close_all()       # a bar the error or interrupt left open would take the message's line
        print(f"dipsim: error: {one_line(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        close_all()
        print(f"dipsim: {e}" if str(e) else "dipsim: interrupted", file=sys.stderr)
        return exit_status(e)
    except BrokenPipeError:
        return 0
    except Exception as e:   # a bug, not bad input: still one line, with the way to the traceback
        if os.environ.get("DIPSIM_DEBUG"):
            raise
        close_all()
        print(f"dipsim: internal error: {type(e).__name__}: {one_line(str(e))[:300]} (a bug in dipsim; "
              f"rerun with DIPSIM_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
