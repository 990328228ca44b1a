"""``dipsim trace`` and ``dipsim trace-info``: capture a real model's MLP activations; describe a trace."""
from __future__ import annotations

import argparse
import json

from common.errors import DipsimError
from common.tables import print_table

from ..config import TraceSpec
from .options import add_config_options, add_corpus_options, add_verb, corpus_options, fraction, given


def add_parser(sub) -> None:
    s = add_verb(sub, "trace", run_trace, "capture MLP activations of a real model into a trace file")
    add_config_options(s, TraceSpec, title="what to capture", skip=("text",))
    s.add_argument("--out", required=True, help="trace file to write (.safetensors)")
    s.add_argument("--dtype", default="float16", choices=["float16", "float32"], help="storage dtype (default float16)")
    s.add_argument("--no-h", action="store_true", help="record only x (no down-projection masking possible then)")
    s.add_argument("--no-g", action="store_true", help="leave out the gate activation act(W_gate x) (CATS's score; "
                                                       "the trace is then ~40%% smaller)")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_corpus_options(s)

    s = add_verb(sub, "trace-info", run_trace_info,
                 "print a trace's dimensions and per-layer activation statistics")
    s.add_argument("trace", help="trace file")
    s.add_argument("--top", type=fraction, default=0.5, help="fraction of columns for the top-set statistics (default 0.5)")
    s.add_argument("--format", choices=["table", "json"], default="table", help="output format (default table)")


def run_trace(a: argparse.Namespace) -> int:
    """Run a real model over a corpus and record, for every layer and token, the MLP input x,
    h = act(W_gate x) * (W_up x) and the gate activation g = act(W_gate x). Each window of --context
    positions starts with its attention sink, run densely and not recorded: the prefix token
    (--prefix-token, default the model's own convention), or without one the text token before the
    window's first recorded token."""
    from common.io import check_outputs
    from traces.capture import capture
    from traces.format import load

    spec = TraceSpec.from_mapping(given(a, TraceSpec), "command line")
    check_outputs([("--out", a.out, (".safetensors",))], [("--text", a.text), ("--dataset", a.dataset)])
    if spec.synthetic is not None:      # --model synth:NAME, as --help and experiments offer it
        return _synthetic(a, spec)
    # an interrupt raises CaptureInterrupted, a KeyboardInterrupt saying what was saved: the command
    # line prints it as its one line and exits 130 or 143
    path = capture(spec.model, a.out, tokens=spec.tokens, **corpus_options(a), context=spec.context, dtype=a.dtype,
                   with_h=not a.no_h, with_g=not a.no_g, prefix_token=spec.prefix_token, progress=not a.quiet)
    from traces.prefix import label

    t = load(path)
    print(f"wrote {path}: {t.n_layers} layers, d_model {t.d_model}, d_ff {t.d_ff}, {t.n_tokens} tokens "
          f"({t.meta['model']}, {t.meta['weight_dtype']}, prefix token {label(t.meta['prefix_token'])})")
    return 0


def _synthetic(a: argparse.Namespace, spec: TraceSpec) -> int:
    """``trace --model synth:NAME``: the synthetic trace ``dipsim synth --like NAME`` makes; the options
    of a capture (a corpus, windows, a prefix token, storage) do nothing for it and are refused."""
    from traces import synth
    from traces.synth.presets import PRESETS

    if spec.synthetic not in PRESETS:
        raise DipsimError(f"--model {spec.model!r}: unknown synthetic model; allowed: "
                          f"{', '.join('synth:' + p for p in PRESETS)}")
    capture_only = {"--text": a.text, "--dataset": a.dataset, "--text-column": a.text_column, "--context": a.context,
                    "--prefix-token": a.prefix_token, "--no-h": a.no_h or None,
                    "--no-g": a.no_g or None, "--dtype": None if a.dtype == "float16" else a.dtype}
    extra = [k for k, v in capture_only.items() if v is not None]
    if extra:
        raise DipsimError(f"{extra[0]} applies to a trace captured from a real model, not to {spec.model} "
                          f"(a synthetic trace: --tokens and --seed only)")
    path = synth.like(spec.synthetic, spec.tokens, a.out, seed=spec.seed, progress=not a.quiet)
    print(f"wrote {path}: synthetic {spec.synthetic}, {spec.tokens} tokens, seed {spec.seed}")
    return 0


def run_trace_info(a: argparse.Namespace) -> int:
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
