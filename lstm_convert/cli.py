"""The command line: argv in, a library call, one-line errors and exit codes out.

Exit status 0 on success, 1 when the library refuses or fails (one line on
stderr naming the file, layer or tensor), 2 for usage errors. ``--debug``
shows the traceback. This is the only module that prints.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence

from . import __version__
from .errors import LSTMConvertError


def main(argv: Sequence[str] | None = None) -> int:
    # TensorFlow's start-up chatter is not ours to show; the user's own settings win.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.run(args)
    except LSTMConvertError as exc:
        if args.debug:
            raise
        print(f"lstm-convert: error: {exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lstm-convert",
        description="Convert, inspect and archive the weights of recurrent layers, gate by gate.")
    parser.add_argument("--version", action="version", version=f"lstm-convert {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser("demo", help="the seed model LSTM(2) + Dense(5), gate by gate, converted and checked")
    demo.add_argument("--out", metavar="DIR", help="where to write the archive (default: a temporary directory)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.set_defaults(run=_demo)
    return parser


def _demo(args: argparse.Namespace) -> int:
    from . import demo

    if args.out:
        return _print_demo(demo.run(args.out, seed=args.seed), kept=True)
    with tempfile.TemporaryDirectory() as tmp:
        return _print_demo(demo.run(tmp, seed=args.seed), kept=False)


def _print_demo(r: dict, kept: bool) -> int:
    from .gates import layout, slice_text

    w = r["weights"]
    k, t = layout("keras", "lstm"), layout("torch", "lstm")
    p = r["keras_params"]
    print("Seed model: Input((18, 7)) -> LSTM(2) -> Dense(5), seeded random weights\n")
    print("Keras tensors of layer 'lstm' (4 gates x H=2 units side by side):")
    for name, shape in r["keras_tensors"].items():
        print(f"  {name:<17} {shape}")
    print(f"Parameters (Keras count_params): lstm {p['lstm']}, dense {p['dense']}, total {p['total']}")
    print(f"  lstm: 4 gates x (W_x 2x7 + W_h 2x2 + bias 2) = {r['canonical_params']['keras']}; "
          f"dense: 2x5 + 5 = {p['dense']}\n")
    print(f"Gate by gate (canonical form; H = {w.hidden_size}):")
    head = (f"  {'gate':<7} {'Keras kernel':<17} {'PyTorch weight_ih':<18} "
            f"{'W_x':<7} {'W_h':<7} {'b_x':<5} {'b_h':<5} params")
    print(head)
    for gate in w.gate_names:
        g = w.gate(gate)
        params = g.W_x.size + g.W_h.size + g.b_x.size
        print(f"  {gate:<7} {k.symbols[k.order.index(gate)] + ' ' + slice_text(k, gate):<17} "
              f"{t.symbols[t.order.index(gate)] + ' ' + slice_text(t, gate):<18} "
              f"{str(g.W_x.shape):<7} {str(g.W_h.shape):<7} {str(g.b_x.shape):<5} "
              f"{str(g.b_h.shape):<5} {params}")
    print("  (Keras' single bias is b_x; b_h is zero and counts only in PyTorch)\n")
    print(f"PyTorch: {r['torch_module']}, {r['canonical_params']['torch']} parameters (two biases)")
    for name, shape in r["torch_tensors"].items():
        print(f"  {name:<13} {shape}")
    where = r["archive"] if kept else "seed_lstm.safetensors (temporary; --out DIR keeps it)"
    print(f"\nArchive: {where}, {len(r['archive_tensors'])} tensors, one per gate and role:")
    for name, shape in r["archive_tensors"][:4]:
        print(f"  {name:<30} {shape}")
    print("  ...")
    print(f"\nAgreement on random input ({r['batch']} x 18 x 7) and random initial states, "
          "largest absolute difference:")
    print(f"  {'':<48} {'outputs':>9} {'final h':>9} {'final c':>9}")
    for label, d in r["agreement"].items():
        print(f"  {label:<48} {d['output']:9.2e} {d['h']:9.2e} {d['c']:9.2e}")
    print(f"  {'whole model, PyTorch LSTM + Linear vs Keras':<48} {r['model_agreement']:9.2e}")
    print(f"  archive reloaded bit for bit: {r['archive_identical']}; "
          f"PyTorch -> canonical -> PyTorch bit for bit: {r['torch_roundtrip_identical']}")
    worst = max(max(d.values()) for d in r["agreement"].values())
    ok = worst <= 1e-5 and r["model_agreement"] <= 1e-5 and r["archive_identical"]
    print("OK: within 1e-5" if ok else "MISMATCH: beyond 1e-5")
    return 0 if ok else 1
