"""The ``dipsim`` command line.

Every subcommand turns bad input into one line ``dipsim: error: ...`` (exit status 2) naming the
file, field or option and the allowed values; Ctrl-C prints what was kept and exits with 130.
Heavy modules (torch, simpy, pandas) are imported only by the subcommands that need them.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

from traces.errors import DipsimError

COMMANDS: dict[str, Callable[[argparse.Namespace], int | None]] = {}


def command(name: str):
    def deco(fn):
        COMMANDS[name] = fn
        return fn
    return deco


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def print_table(rows: list[dict[str, Any]], file=None, floatfmt: str = "{:.4g}") -> None:
    """A plain aligned text table of dict rows."""
    file = file or sys.stdout
    if not rows:
        print("(no rows)", file=file)
        return
    cols = list(rows[0].keys())
    for r in rows[1:]:
        cols += [c for c in r if c not in cols]

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return floatfmt.format(v)
        return "" if v is None else str(v)

    cells = [[fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    print("  ".join(c.rjust(w) for c, w in zip(cols, widths)), file=file)
    for row in cells:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths)), file=file)


# --------------------------------------------------------------------------- trace
def _add_corpus_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("corpus (default: CPython's pydoc topics, offline English text)")
    g.add_argument("--text", metavar="FILE", help="a UTF-8 text file to run the model on")
    g.add_argument("--dataset", metavar="DIR", help="a local dataset directory (datasets.save_to_disk, or "
                   ".parquet/.jsonl/.txt files)")
    g.add_argument("--text-column", default="text", help="column holding the text in --dataset (default: text)")


@command("trace")
def cmd_trace(a: argparse.Namespace) -> int:
    from traces.capture import CaptureInterrupted, capture
    from traces.format import load

    try:
        path = capture(a.model, a.out, tokens=a.tokens, text=a.text, dataset=a.dataset, text_column=a.text_column,
                       context=a.context, dtype=a.dtype, with_h=not a.no_h, progress=not a.quiet)
    except CaptureInterrupted as e:
        print(f"dipsim: {e}", file=sys.stderr)
        return 130
    t = load(path)
    print(f"wrote {path}: {t.n_layers} layers, d_model {t.d_model}, d_ff {t.d_ff}, {t.n_tokens} tokens "
          f"({t.meta['model']}, {t.meta['weight_dtype']})")
    return 0


@command("trace-info")
def cmd_trace_info(a: argparse.Namespace) -> int:
    from traces.format import load
    from traces.stats import layer_stats

    t = load(a.trace)
    rows = layer_stats(t, frac=a.top)
    if a.format == "json":
        print(json.dumps({"summary": t.summary(), "layers": rows}, indent=2))
        return 0
    for k, v in t.summary().items():
        print(f"{k:>16}: {v}")
    print(f"\nper layer: mean |a|, share of |a| mass in the top {a.top:.0%} columns, and mean overlap of "
          f"consecutive tokens' top-{a.top:.0%} sets")
    print_table(rows)
    return 0


# --------------------------------------------------------------------------- demo
@command("demo")
def cmd_demo(a: argparse.Namespace) -> int:
    from traces.format import load
    from traces.stats import layer_stats

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    trace_path = out / f"{a.model}-{a.tokens}.safetensors"
    if trace_path.exists() and not a.fresh:
        print(f"[1] trace: reusing {trace_path} (--fresh to capture again)")
    else:
        from traces.capture import capture

        print(f"[1] trace: capturing {a.tokens} tokens of {a.model} on the default corpus")
        capture(a.model, trace_path, tokens=a.tokens)
    t = load(trace_path)
    for k, v in t.summary().items():
        print(f"{k:>16}: {v}")
    print_table(layer_stats(t))
    print(f"\noutputs:\n  trace: {trace_path}")
    return 0


# --------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dipsim",
        description="Memory-hierarchy simulator for on-device LLM inference with dynamic activation sparsity: "
                    "capture activation traces from real models, replay masking (DIP, DIP-CA, baselines) and "
                    "DRAM cache policies over them, and turn the flash/DRAM traffic into time on modelled devices.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("trace", help="capture MLP activations of a real model into a trace file",
                       description="Run a real model over a corpus and record, for every layer and token, the MLP "
                                   "input x and h = act(W_gate x) * (W_up x).")
    s.add_argument("--model", default="smollm2-135m",
                   help="smollm2-135m (default), gemma3-270m, a local Hugging Face model directory, or a .gguf file")
    s.add_argument("--tokens", type=_positive_int, default=512, help="number of tokens to record (default 512)")
    s.add_argument("--out", required=True, help="trace file to write (.safetensors)")
    s.add_argument("--context", type=_positive_int, default=512,
                   help="context window: the corpus is processed in windows of this many positions (default 512)")
    s.add_argument("--dtype", default="float16", choices=["float16", "float32"], help="storage dtype (default float16)")
    s.add_argument("--no-h", action="store_true", help="record only x (no down-projection masking possible then)")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_corpus_args(s)

    s = sub.add_parser("trace-info", help="print a trace's dimensions and per-layer activation statistics")
    s.add_argument("trace", help="trace file")
    s.add_argument("--top", type=float, default=0.5, help="fraction of columns for the top-set statistics (default 0.5)")
    s.add_argument("--format", choices=["table", "json"], default="table")

    s = sub.add_parser("demo", help="the main job on the embedded default model: trace, sweep, plot",
                       description="Capture a trace of the default model on the default corpus and print its summary.")
    s.add_argument("--model", default="smollm2-135m", help="model to trace (default smollm2-135m)")
    s.add_argument("--tokens", type=_positive_int, default=512, help="tokens to capture (default 512)")
    s.add_argument("--out", default="out/demo", help="output directory (default out/demo)")
    s.add_argument("--fresh", action="store_true", help="capture again even if the trace exists")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    if not a.command:
        parser.print_help()
        return 0
    try:
        rc = COMMANDS[a.command](a)
    except DipsimError as e:
        print(f"dipsim: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dipsim: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
