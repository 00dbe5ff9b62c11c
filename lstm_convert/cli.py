"""The command line: argv in, a library call, one-line errors and exit codes out.

Exit status 0 on success, 1 when the library refuses or fails (one line on
stderr naming the file, layer or tensor), 2 for usage errors, 3 for an internal
error (a bug: anything that is not the library's own error, which asks for a
report). ``--debug`` shows the traceback. This is the only module that prints.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path
from collections.abc import Sequence

from . import __version__, formats
from .errors import FormatError, LSTMConvertError, SettingError, shown


def main(argv: Sequence[str] | None = None) -> int:
    # TensorFlow's start-up chatter is not ours to show; the user's own settings win.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    # Ctrl-C and SIGTERM end the command by an exception, so that a file being written is removed; the
    # status is 128 + the signal's number, as a shell reports a process the signal ended.
    handlers = {}
    _RECEIVED.clear()
    _LAST.clear()
    if threading.current_thread() is threading.main_thread():
        handlers = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    debug = False
    words = list(sys.argv[1:] if argv is None else argv)
    out = _Output(json="--json" in words)  # known before the line is parsed, so that usage errors are JSON too
    _LAST.append(out)
    args = None
    try:
        parser = _parser()
        args, unknown = parser.parse_known_args(words)
        debug, out.json = args.debug, getattr(args, "json", False)
        if unknown:  # said by the subcommand, with its usage
            commands = parser._subcommands  # type: ignore[attr-defined]
            (commands[args.command] if args.command in commands else parser).error(
                f"unrecognized arguments: {' '.join(unknown)}")
        if args.command is None:
            parser.print_help()
            return 2
        reporter = _reporter(args, out.json)
        if reporter is None:
            status = args.run(args)
        else:
            from ._progress import reporting

            with reporting(reporter):
                status = args.run(args)
        if _RECEIVED:  # the interrupt was swallowed by the code it stopped, which went on to the end
            return _interrupted(_RECEIVED[-1], out)
        return status
    except _UsageError as exc:
        if out.json:
            return out.error("UsageError", exc.message, None, 2)
        exc.parser.print_usage(sys.stderr)
        print(f"{exc.parser.prog}: error: {exc.message}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (| head): nothing more to say
        return 1
    except LSTMConvertError as exc:
        if _RECEIVED:  # the interrupt, turned into an error by the code it stopped
            return _interrupted(_RECEIVED[-1], out)
        if debug:
            raise
        return out.error(type(exc).__name__, exc.cli_text(), _path_of(exc.cli_text(), args), 1)
    except KeyboardInterrupt as exc:
        return _interrupted(getattr(exc, "signum", signal.SIGINT), out)
    except Exception as exc:  # noqa: BLE001 - not a refusal of the library: a bug, reported as one
        if _RECEIVED:  # the interrupt, re-raised as another exception by the code it stopped (an import, say)
            return _interrupted(_RECEIVED[-1], out)
        if debug:
            raise
        text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        return out.error("InternalError", f"internal error ({type(exc).__name__}{': ' + text if text else ''}); "
                         "this is a bug in lstm-convert: please report it with the output of the same command run "
                         "with --debug", None, 3, prefix="lstm-convert: ")
    finally:
        for sig, previous in handlers.items():
            signal.signal(sig, previous)
        for timer in _LAST[1:]:
            timer.cancel()
        _LAST.clear()


class _UsageError(Exception):
    def __init__(self, parser: argparse.ArgumentParser, message: str):
        super().__init__(message)
        self.parser, self.message = parser, message


class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose usage errors the caller reports (as text or as JSON)."""

    def error(self, message: str):  # type: ignore[override]
        raise _UsageError(self, message)


class _Output:
    """Where a command's result and errors go: text (errors on stderr) or one JSON object on stdout."""

    def __init__(self, json: bool):
        self.json = json

    def error(self, kind: str, message: str, path: str | None, status: int, prefix: str = "lstm-convert: error: ") -> int:
        if self.json:
            print(json.dumps({"error": {"type": kind, "message": message, "path": path}}, indent=2))
        else:
            print(f"{prefix}{shown(message)}", file=sys.stderr)
        return status


def _note(args: argparse.Namespace, text: str) -> None:
    """A note under a command's output, unless --quiet."""
    if not args.quiet:
        print(f"note: {text}")


def _reporter(args: argparse.Namespace, as_json: bool):
    """What shows progress: a bar on stderr only when it is a terminal, timings with --verbose; nothing with
    --quiet or --json."""
    if args.quiet or as_json or args.command is None:
        return None
    from . import _progress

    bar = _progress.Bar(delay=_delay()) if sys.stderr.isatty() else None
    return _progress.Timings(bar) if args.verbose else bar


def _delay() -> float:
    """Seconds of work before progress is drawn: LSTM_CONVERT_PROGRESS_DELAY, else half a second."""
    try:
        return max(0.0, float(os.environ.get("LSTM_CONVERT_PROGRESS_DELAY", "0.5")))
    except ValueError:
        return 0.5


def _path_of(message: str, args: argparse.Namespace | None) -> str | None:
    """The file an error is about: the one of the command's files that its message starts with."""
    for key in ("file", "src", "dst", "a", "b", "module", "out", "out_dir"):
        value = getattr(args, key, None)
        if isinstance(value, str) and message.startswith(f"{value}: "):
            return value
    return None


def _interrupted(signum: int, out: _Output | None = None) -> int:
    if out is not None and out.json:
        return out.error("Interrupted", "interrupted; no partial file is left", None, 128 + signum)
    print("lstm-convert: interrupted; no partial file is left", file=sys.stderr)
    return 128 + signum


class _Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM, raised where the program is so that whatever it was writing is removed."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


_RECEIVED: list[int] = []  # the signals received while the command runs
_LAST: list = []  # the command's output, then the timer of the interrupt's last resort
_LAST_RESORT = 10.0  # seconds an interrupt may take to unwind before the process is ended from outside it


def _interrupt(signum: int, frame: object) -> None:
    """Ctrl-C or SIGTERM: an exception where the program is, which removes the file being written as it
    unwinds. Code on the way may swallow it (a bare ``except:``, an import's lock callback) or be stuck
    where it cannot arrive: ten seconds later, or at a second signal, :func:`_end_now` ends the process."""
    _RECEIVED.append(signum)
    if len(_RECEIVED) > 1:
        _end_now(signum)
    if len(_LAST) == 1:
        timer = threading.Timer(_LAST_RESORT, _end_now, (signum,))
        timer.daemon = True
        timer.start()
        _LAST.append(timer)
    raise _Interrupted(signum)


def _end_now(signum: int) -> None:
    """The interrupt's last resort: stop the workers of a batch, remove this process's temporary files,
    say so, and end at once with 128 + the signal's number."""
    from . import _atomic

    batch = sys.modules.get("lstm_convert.batch")
    for stop in list(getattr(batch, "_STOPPING", ())):
        try:
            stop()
        except Exception:  # noqa: BLE001 - ending regardless
            pass
    _atomic.remove_unfinished()
    if _LAST and _LAST[0].json:
        text = json.dumps({"error": {"type": "Interrupted", "message": "interrupted; no partial file is left",
                                     "path": None}}, indent=2) + "\n"
        os.write(1, text.encode())
    else:
        os.write(2, b"lstm-convert: interrupted; no partial file is left\n")
    os._exit(128 + signum)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="lstm-convert",
        description="Convert, inspect and archive the weights of recurrent layers, gate by gate.")
    parser.add_argument("--version", action="version", version=f"lstm-convert {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    # --debug is taken after the subcommand too; there it leaves the top level's value alone unless given.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    common.add_argument("--json", action="store_true", help="print one JSON object on stdout, errors included")
    loud = common.add_mutually_exclusive_group()
    loud.add_argument("-q", "--quiet", action="store_true", help="no notes and no progress: the result and errors only")
    loud.add_argument("-v", "--verbose", action="store_true", help="also say how long each step took (on stderr)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    ins = sub.add_parser("inspect", parents=[common], help="what a file holds: layers, sizes, parameters, gate by gate")
    ins.add_argument("file", help="the file to describe (any format lstm-convert reads)")
    _source_options(ins, "the file's")
    _only_option(ins, "list")
    ins.add_argument("--scan", action="store_true",
                     help="read every value of a PyTorch-layout safetensors file to look for NaN and infinity "
                          "(other formats are read whole anyway; an archive records them)")
    ins.add_argument("--stats", action="store_true",
                     help="per gate and role: mean, standard deviation, min, max, L2 norm, zeros, NaN and infinity; "
                          "per gate the bias it applies and the spectral norm of W_h (reads every value)")
    ins.set_defaults(run=_inspect)

    conv = sub.add_parser("convert", parents=[common],
                          help="convert SRC to DST, refusing before writing if it cannot be exact",
                          usage="%(prog)s [options] SRC DST\n       %(prog)s [options] SRC... --out-dir DIR --to FORMAT")
    conv.add_argument("paths", nargs="+", metavar="SRC DST",
                      help="the file to read and the file to write (its extension, or --to, says the format); with "
                           "--out-dir, the files and folders to read")
    conv.add_argument("--out-dir", metavar="DIR",
                      help="convert every SRC (a folder: each file of it that lstm-convert reads) into DIR, under "
                           "its own name with the extension of --to")
    conv.add_argument("--recursive", action="store_true", help="with --out-dir, search folders' subfolders too")
    conv.add_argument("--jobs", type=_positive, metavar="N",
                      help="with --out-dir, convert N files at a time in worker processes (default: one per core)")
    _source_options(conv, "SRC's")
    _only_option(conv, "convert")
    writable = formats.writable()
    conv.add_argument("--to", dest="dst_format", choices=[f.name for f in writable],
                      help="DST's format (default: by extension: " + ", ".join(
                          f"{'/'.join(f.suffixes)} {f.name}" for f in writable) + "; where two share an extension, the first")
    conv.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    conv.add_argument("--strict", action="store_true", help="refuse weights that hold NaN or infinity")
    conv.add_argument("--check", action="store_true",
                      help="only report whether the conversion is exact, and what it drops; write nothing")
    conv.add_argument("--module", metavar="FILE.py",
                      help="with a PyTorch DST, also write a Python module whose Model computes the source model")
    conv.add_argument("--set", dest="settings", action="append", default=[], type=_setting,
                      metavar="LAYER.SETTING=VALUE",
                      help="state what the source cannot say, e.g. lstm.return_sequences=false (repeatable)")
    conv.set_defaults(run=_convert, usage_parser=conv)

    ver = sub.add_parser("verify", parents=[common],
                         help="run two files on the same random input and compare each layer's output")
    ver.add_argument("a", help="the first file (an archive alone: its digests are checked)")
    ver.add_argument("b", nargs="?", help="the second file; without B, archive A is checked against the SHA-256 of "
                     "its tensors")
    _kind_option(ver)
    _config_option(ver, "A's")
    _forget_bias_option(ver, "A's")
    _only_option(ver, "compare")
    ver.add_argument("--atol", type=float, help="absolute tolerance (default 1e-5 for float32)")
    ver.add_argument("--rtol", type=float, default=0.0, help="relative tolerance (default 0)")
    ver.add_argument("--batch", type=_positive, default=3, help="batch size (default 3)")
    ver.add_argument("--steps", type=_positive, default=5, help="time steps (default 5)")
    ver.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    ver.set_defaults(run=_verify)

    dif = sub.add_parser("diff", parents=[common],
                         help="compare two files' weights gate by gate and role by role, whatever their formats")
    dif.add_argument("a", help="the first file")
    dif.add_argument("b", help="the second file")
    _kind_option(dif)
    _config_option(dif, "A's")
    _only_option(dif, "compare")
    dif.add_argument("--atol", type=float, default=0.0,
                     help="largest absolute difference still called identical (default 0: the same values)")
    dif.add_argument("--plot", metavar="OUT", help="also draw the difference B - A gate by gate as OUT (.png, .svg "
                     "or .pdf; needs the plot extra)")
    dif.add_argument("--overwrite", action="store_true", help="replace the picture if it exists")
    dif.set_defaults(run=_diff)

    pic = sub.add_parser("plot", parents=[common],
                         help="draw each recurrent layer's weights gate by gate: heatmaps, biases, histograms")
    pic.add_argument("file", help="the file to draw (any format lstm-convert reads)")
    pic.add_argument("-o", "--out", required=True, metavar="OUT", help="the picture: .png, .svg or .pdf")
    _source_options(pic, "the file's")
    _only_option(pic, "draw")
    pic.add_argument("--title", help="the picture's title (default: the file's name)")
    pic.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    pic.set_defaults(run=_plot)

    demo = sub.add_parser("demo", parents=[common], help="the seed model LSTM(2) + Dense(5), gate by gate, converted and checked")
    demo.add_argument("--out", metavar="DIR", help="where to write the archive (default: a temporary directory)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.set_defaults(run=_demo)
    parser._subcommands = {"inspect": ins, "convert": conv, "verify": ver, "diff": dif, "plot": pic, "demo": demo}  # type: ignore[attr-defined]
    return parser


def _source_options(parser: argparse.ArgumentParser, whose: str) -> None:
    parser.add_argument("--from", dest="src_format", choices=formats.NAMES,
                        help=f"{whose} format (default: by content and extension)")
    _kind_option(parser)
    _config_option(parser, whose)
    _forget_bias_option(parser, whose)


def _forget_bias_option(parser: argparse.ArgumentParser, whose: str) -> None:
    parser.add_argument("--forget-bias", type=float, metavar="X",
                        help=f"what the LSTM cells of {whose} TensorFlow checkpoint added to their forget gates at "
                        "run time, folded into the bias (default: the class's own, 1.0 for LSTMCell)")


def _config_option(parser: argparse.ArgumentParser, whose: str) -> None:
    parser.add_argument("--config", metavar="MODEL", help=f"the architecture of {whose} weights when it holds only "
                        "weights (a Keras save_weights .h5): the model's .keras, or its .json (model.to_json())")


def _only_option(parser: argparse.ArgumentParser, verb: str) -> None:
    parser.add_argument("--only", action="append", default=[], metavar="PATTERN",
                        help=f"{verb} just the layers this shell-style pattern selects: Keras layer names, state-dict "
                        "module prefixes, ONNX node or output names (repeatable; 'inspect' lists them)")


def _kind_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kind", action="append", default=[], metavar="PREFIX=KIND", type=_kind,
                        help="what a PyTorch state dict cannot say: a lone 'weight' is embedding or linear, an "
                        "nn.RNN is rnn_tanh or rnn_relu (repeatable)")


def _kind(text: str) -> tuple[str, str]:
    prefix, sep, kind = text.rpartition("=")
    if not sep or kind not in _KINDS:
        raise argparse.ArgumentTypeError(f"expected PREFIX=KIND with KIND one of {', '.join(_KINDS)}, got {text!r}")
    return prefix, kind


_KINDS = formats.KINDS


def _setting(text: str) -> tuple[str, str, object]:
    target, sep, raw = text.partition("=")
    layer, dot, key = target.rpartition(".")
    if not sep or not dot or not layer or not key:
        raise argparse.ArgumentTypeError(f"expected LAYER.SETTING=VALUE, got {text!r}")
    lowered = raw.strip().lower()
    if lowered in ("true", "false"):
        return layer, key, lowered == "true"
    if lowered in ("none", "null"):  # a setting removed: cell_clip=none
        return layer, key, None
    for kind in (int, float):
        try:
            return layer, key, kind(raw)
        except ValueError:
            pass
    return layer, key, raw


def _settings(pairs: list) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for layer, key, value in pairs:
        out.setdefault(layer, {})[key] = value
    return out


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _inspect(args: argparse.Namespace) -> int:
    from . import files
    from .describe import describe

    fmt = files.detect(args.file, args.src_format)
    model = files.read(args.file, fmt, kinds=dict(args.kind), header_only=not (args.scan or args.stats), check=False,
                       only=args.only, inventory=True, config=args.config, forget_bias=args.forget_bias)
    info = describe(model, fmt, str(args.file))
    info["non_finite"] = files.non_finite_of(args.file, fmt, model)
    recorded = formats.get(fmt).recorded(Path(args.file))
    if recorded:
        info["recorded"] = recorded
    if args.stats:
        from .stats import model_stats

        info["stats"] = model_stats(model)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    info = _displayable(info)
    source = info["source"]
    origin = " ".join(v for v in (source.get("framework"), source.get("framework_version")) if v)
    print(f"{info['file']}: {info['format']} file" + (f", weights from {origin}" if origin else ""))
    provenance = {**{k: v for k, v in source.items() if k not in ("framework", "framework_version", "params")},
                  **info.get("recorded", {})}
    if provenance:
        print("provenance: " + ", ".join(f"{k} {v}" for k, v in sorted(provenance.items())))
    print(f"parameters counted as {_FRAMEWORK_TITLE[info['counted_as']]} counts them\n")
    w = _name_width([layer["name"] for layer in info["layers"]] + [e["name"] for e in info["unconverted"]])
    t = max([10, *(len(e["type"]) for e in [*info["layers"], *info["unconverted"]])])
    print(f"{'layer':<{w}} {'type':<{t}} {'sizes':<44} {'params':>8}")
    for layer in info["layers"]:
        sizes = ", ".join(f"{k} {v}" for k, v in layer["sizes"].items()
                          if not (k in ("num_layers", "directions") and v == 1))
        extra = [f"activation {layer['activation']}"] if layer.get("activation") not in (None, "linear", "tanh") else []
        if layer.get("recurrent_activation") not in (None, "sigmoid"):
            extra.append(f"recurrent_activation {layer['recurrent_activation']}")
        if layer.get("bias") is False:
            extra.append("no bias")
        extra += layer.get("cell_features", [])
        sizes = "; ".join([sizes, *extra])
        print(f"{layer['name']:<{w}} {layer['type']:<{t}} {sizes:<44} {layer['params']:>8}")
        if "layout" in layer:
            print(f"    stored as {layer['layout']}")
        for key in ("folded", "summed"):
            if key in layer:
                print(f"    {key}: {shown(layer[key])}")
        if "gates" in layer:
            _print_gates(layer["gates"])
    for entry in info["unconverted"]:
        shapes = ", ".join(f"{k} {tuple(v)}" for k, v in entry.get("tensors", {}).items())
        print(f"{entry['name']:<{w}} {entry['type']:<{t}} {'not converted: ' + entry['why']:<44}")
        if shapes:
            print(f"    {shapes}")
    print(f"{'total':<{w}} {'':<{t}} {'':<44} {info['total_params']:>8}")
    for layer in info.get("stats", []):
        _print_stats(layer)
    for note in formats.get(fmt).read_notes(model) + formats.get(fmt).file_notes(Path(args.file)):
        _note(args, shown(note))
    for entry in info.get("skipped", []):
        _note(args, f"skipped {entry}: the identity at inference")
    for note in files.assumed(model):
        _note(args, shown(note))
    if info["non_finite"] is None:
        _note(args, "only the header was read; --scan reads the values to look for NaN and infinity")
    for name in info["non_finite"] or []:
        print(f"warning: {name} holds NaN or infinity")
    print()
    _print_conversions(info)
    return 0


def _print_stats(layer: dict) -> None:
    """One layer's statistics (stats.layer_stats) as tables: per tensor, then per gate."""
    print(f"\nstatistics of {layer['name']}: moments over the finite values; zeros as a fraction of all")
    stacked = any(row.get("layer") or row.get("direction", "forward") != "forward" for row in layer["tensors"])
    head = ["tensor" if "gate" not in layer["tensors"][0] else "gate", "role", "shape", *STAT_COLUMNS]
    lines = []
    for row in layer["tensors"]:
        where = row.get("gate", row["tensor"])
        if stacked and "gate" in row:
            where = f"l{row['layer']} {row['direction']} {where}"
        lines.append([where, row["role"], str(tuple(row["shape"])), *(_figure(row[k]) for k in STAT_COLUMNS[:5]),
                      f"{row['zeros']:.3f}", str(row["nan"]), str(row["inf"])])
    _table(head, lines)
    if "gates" in layer:
        lines = []
        for gate in layer["gates"]:
            where = f"l{gate['layer']} {gate['direction']} {gate['gate']}" if stacked else gate["gate"]
            bias = gate["bias"]
            said = "no bias" if bias is None else (f"{_figure(bias['mean'])} ({_figure(bias['min']).strip()} .. "
                                                   f"{_figure(bias['max']).strip()})")
            lines.append([where, said, _figure(gate["spectral_norm_W_h"])])
        print()
        _table(["gate", "bias applied: mean (min .. max)", "spectral norm of W_h"], lines)


STAT_COLUMNS = ("mean", "std", "min", "max", "l2", "zeros", "nan", "inf")


def _figure(value: object) -> str:
    return "-" if value is None else f"{value:.4g}"


def _table(head: list[str], lines: list[list[str]]) -> None:
    widths = [max(len(str(c)) for c in column) for column in zip(head, *lines)]
    for k, line in enumerate([head, *lines]):
        cells = [f"{c:<{w}}" if i < 3 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(line, widths))]
        print("  " + "  ".join(cells).rstrip())


def _displayable(value: object) -> object:
    """``value`` (a describe() dict) with every string, keys too, as it may be shown on a terminal."""
    if isinstance(value, str):
        return shown(value)
    if isinstance(value, dict):
        return {_displayable(k): _displayable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_displayable(v) for v in value]
    return value


def _name_width(names: list[str]) -> int:
    """The width of a table's first column: 16, or wider for longer layer names."""
    return max([16, *(len(n) + 1 for n in names)])


def _print_conversions(info: dict, targets: tuple[str, ...] | None = None) -> None:
    """Per layer and target (every writable format unless given): exact, weights only (*: a state dict keeps
    the weights, the model around them needs --module), or impossible (!), with the reasons."""
    targets = targets or tuple(info["conversions"])
    w = _name_width([layer["name"] for layer in info["layers"]])
    print((f"{'conversion to':<{w}} " + " ".join(f"{t:<10}" for t in targets)).rstrip())
    notes = []
    for layer in info["layers"]:
        cells = []
        for target in targets:
            c = layer["conversions"][target]
            if c["verdict"] == "impossible":
                cells.append("impossible")
                notes.append(f"  ! {target}: {layer['name']}: {c['reason']}")
            elif c["verdict"] == "weights":
                cells.append("weights*")
                companion = "needs --module FILE.py" if formats.get(target).module_source else "is not kept"
                notes.append(f"  * {target}: {layer['name']}: the {formats.get(target).holder} keeps the weights; "
                             f"{', '.join(c['needs'])} {companion}")
            else:
                cells.append("exact")
        print(f"{layer['name']:<{w}} " + " ".join(f"{c:<10}" for c in cells).rstrip())
    shared = [r for r in info["conversions"][targets[0]]["reasons"]
              if len(targets) > 1 and all(r in info["conversions"][t]["reasons"] for t in targets)]
    notes += [f"  ! every target: {r}" for r in shared]
    for target in targets:
        model = info["conversions"][target]
        layer_reasons = {f"{layer['name']}: {layer['conversions'][target].get('reason')}" for layer in info["layers"]}
        notes += [f"  ! {target}: {r}" for r in model["reasons"] if r not in layer_reasons and r not in shared]
    for note in notes:
        print(note)


_FRAMEWORK_TITLE = {"keras": "Keras", "torch": "PyTorch", "onnx": "ONNX", "tensorflow": "TensorFlow", "flax": "Flax",
                    "equinox": "Equinox", "haiku": "Haiku", "tflite": "TFLite"}


def _print_gates(rows: list[dict]) -> None:
    tensors = list(rows[0]["tensors"])
    stacked = any(r["layer"] or r["direction"] != "forward" for r in rows)
    width = max(len(str(v)) for r in rows for v in r["tensors"].values())
    if tensors[0] == "W_x":  # a canonical archive: one tensor per gate and role, named in full
        sample = rows[0]["tensors"]["W_x"].rsplit(".", 2)[0]
        print(f"    tensors {sample}.<gate>.<role>, one per gate and role")
        print(f"    {'gate':<10} " + " ".join(f"{t:<8}" for t in tensors).rstrip())
        for r in rows:
            if stacked and r["gate"] == rows[0]["gate"]:
                print(f"    layer {r['layer']} {r['direction']}")
            print(f"    {r['gate']:<10} " + " ".join(f"{str(tuple(r['shapes'][t])):<8}" for t in tensors).rstrip())
        return
    last = None
    for r in rows:
        if (r["layer"], r["direction"]) != last:  # each stacked layer and direction has tensors of its own
            last = (r["layer"], r["direction"])
            if stacked:
                print(f"    layer {r['layer']} {r['direction']}")
            names = list(r["tensors"])
            width = max(len(str(v)) for q in rows if (q["layer"], q["direction"]) == last
                        for v in q["tensors"].values())
            print(f"    {'gate':<10} " + " ".join(f"{t:<{max(width, len(t))}}" for t in names) + "  W_x      W_h")
        label = f"{r['gate']} ({r['symbol']})"
        cells = " ".join(f"{r['tensors'][t]:<{max(width, len(t))}}" for t in names)
        print(f"    {label:<10} {cells}  {str(tuple(r['shapes']['W_x'])):<8} {tuple(r['shapes']['W_h'])}")


def _convert(args: argparse.Namespace) -> int:
    from . import files

    if args.out_dir is not None:
        return _convert_many(args)
    usage = args.usage_parser
    for flag, given in (("--recursive", args.recursive), ("--jobs", args.jobs)):
        if given:
            raise _UsageError(usage, f"{flag} is for several files: give --out-dir DIR")
    if len(args.paths) != 2:
        raise _UsageError(usage, "give SRC and DST, or several sources with --out-dir DIR --to FORMAT")
    args.src, args.dst = args.paths
    if args.check:
        from .describe import describe

        from .canonical import with_settings
        from .describe import conversions, model_conversions

        fmt = files.target_format(args.dst, args.dst_format)
        src_fmt = files.detect(args.src, args.src_format)
        model = with_settings(files.read(args.src, src_fmt, kinds=dict(args.kind), only=args.only,
                                         config=args.config, forget_bias=args.forget_bias),
                              _settings(args.settings))
        info = describe(model, src_fmt, str(args.src))
        if args.module:
            info["conversions"] = model_conversions(model, module=True)
            for layer, entry in zip(model.layers, info["layers"]):
                entry["conversions"] = conversions(layer, module=True)
        verdict = info["conversions"][fmt]["verdict"]
        if args.json:
            print(json.dumps({"source": str(args.src), "source_format": src_fmt, "destination": str(args.dst),
                              "format": fmt, "written": False, "verdict": verdict,
                              "reasons": info["conversions"][fmt]["reasons"],
                              "needs": info["conversions"][fmt].get("needs", []),
                              "layers": {layer["name"]: layer["conversions"][fmt] for layer in info["layers"]}},
                             indent=2))
            return 1 if verdict == "impossible" else 0
        _print_conversions(_displayable(info), (fmt,))
        words = {"exact": "exact", "impossible": "impossible",
                 "weights": "the weights exactly; the model needs --module"}[verdict]
        print(shown(f"{args.src} -> {args.dst} ({fmt}): {words}; nothing written"))
        return 1 if verdict == "impossible" else 0

    report = files.convert(args.src, args.dst, src_format=args.src_format, dst_format=args.dst_format,
                           overwrite=args.overwrite, kinds=dict(args.kind), strict=args.strict,
                           settings=_settings(args.settings), module=args.module, only=args.only,
                           config=args.config, forget_bias=args.forget_bias)
    if args.json:
        print(json.dumps({"source": str(args.src), "source_format": files.detect(args.src, args.src_format),
                          "destination": str(report.path), "format": report.format, "written": True,
                          "verdict": report.verdict, "module": args.module, "bytes": report.path.stat().st_size,
                          "notes": [str(getattr(note, "cli", note)) for note in report.notes]}, indent=2))
        return 0
    print(shown(f"wrote {report.path} ({report.format})" + (f" and {args.module}" if args.module else "")))
    for note in report.notes:
        _note(args, shown(getattr(note, "cli", note)))
    return 0


def _convert_many(args: argparse.Namespace) -> int:
    """``convert SRC... --out-dir DIR --to FORMAT``: every file, a summary table, exit 1 if any failed."""
    from . import _progress
    from .batch import convert_many

    for flag, given in (("--module", args.module), ("--check", args.check)):
        if given:
            raise _UsageError(args.usage_parser, f"{flag} is for one file, not with --out-dir")
    if args.dst_format is None:
        raise _UsageError(args.usage_parser, "--out-dir needs --to FORMAT")

    def done(outcome, count: int, total: int) -> None:
        _progress.phase(f"converted {count} of {total} files", min(count + 1, total), total)

    _progress.phase("looking for files", 1, 1)
    outcomes = convert_many(args.paths, args.out_dir, args.dst_format, recursive=args.recursive, jobs=args.jobs,
                            overwrite=args.overwrite, on_done=done, kinds=dict(args.kind), strict=args.strict,
                            settings=_settings(args.settings), only=args.only, src_format=args.src_format,
                            **({"config": args.config} if args.config else {}),
                            **({"forget_bias": args.forget_bias} if args.forget_bias is not None else {}))
    failed = sum(not o.ok for o in outcomes)
    if args.json:
        print(json.dumps({"out_dir": str(args.out_dir), "format": args.dst_format,
                          "files": [o.as_dict() for o in outcomes], "converted": len(outcomes) - failed,
                          "failed": failed, "ok": not failed}, indent=2))
        return 1 if failed else 0
    if not outcomes:
        print(shown(f"no file that lstm-convert reads in {', '.join(args.paths)}"))
        return 1
    rows = [(shown(str(o.source)), shown(f"wrote {o.destination} ({o.verdict})" if o.ok
                                         else f"error: {o.error['message']}"), f"{o.seconds:.2f} s", o)
            for o in outcomes]
    w = max(4, *(len(r[0]) for r in rows))
    print(f"{'file':<{w}}  {'time':>8}  result")
    for name, result, seconds, outcome in rows:
        print(f"{name:<{w}}  {seconds:>8}  {result}")
        for note in outcome.notes if not args.quiet else []:
            print(f"{'':<{w}}  {'':>8}  note: {shown(note)}")
    print(f"{len(outcomes)} file{'s' if len(outcomes) != 1 else ''}: {len(outcomes) - failed} converted, "
          f"{failed} failed")
    return 1 if failed else 0


def _verify(args: argparse.Namespace) -> int:
    from .verify import verify

    if args.b is None:
        from . import files

        fmt = formats.detect(args.a)
        if fmt.integrity is None:
            raise LSTMConvertError(f"{args.a}: verify with one file checks the SHA-256 digests an lstm_convert "
                                   f"archive records, and a {fmt.title} file records none; give two files to "
                                   "compare their outputs")
        fmt.integrity(Path(args.a))
        files.read(args.a, fmt.name, check=False)  # and that it is a whole, consistent file
        notes = fmt.file_notes(Path(args.a))
        if args.json:
            print(json.dumps({"file": str(args.a), "format": fmt.name, "intact": True, "notes": notes}, indent=2))
            return 0
        covered = "" if notes else " and every metadata value its own"
        print(f"{shown(args.a)}: every tensor matches its SHA-256{covered}; the archive is intact")
        for note in notes:
            _note(args, note)
        return 0

    result = verify(args.a, args.b, atol=args.atol, rtol=args.rtol, batch=args.batch, steps=args.steps,
                    seed=args.seed, kinds=dict(args.kind), only=args.only, config=args.config,
                    forget_bias=args.forget_bias)
    if args.json:
        print(json.dumps({"a": {"file": str(args.a), "runner": result.runners[0]},
                          "b": {"file": str(args.b), "runner": result.runners[1]},
                          "batch": result.batch, "steps": result.steps, "seed": args.seed, "masked": result.masked,
                          "atol": result.atol, "rtol": result.rtol,
                          "rows": [{"layer": row["layer"], "part": row["part"],
                                    "max_abs_diff": float(row["max_abs_diff"]), "ok": bool(row["ok"])}
                                   for row in result.rows],
                          "notes": [str(getattr(note, "cli", note)) for note in result.notes], "ok": result.ok},
                         indent=2))
        return 0 if result.ok else 1
    print(shown(f"A: {args.a} (run by {result.runners[0]})"))
    print(shown(f"B: {args.b} (run by {result.runners[1]})"))
    print(f"random input: batch {result.batch}, {result.steps} steps, seed {args.seed}"
          + (", with padded (masked) steps" if result.masked else "")
          + f"; atol {result.atol:g}, rtol {result.rtol:g}")
    w = _name_width([shown(row["layer"]) for row in result.rows])
    print(f"{'layer':<{w}} {'output':<8} {'max |A - B|':>12}")
    for row in result.rows:
        print(f"{shown(row['layer']):<{w}} {row['part']:<8} {row['max_abs_diff']:>12.3e}" + ("" if row["ok"] else "  MISMATCH"))
    for note in result.notes:
        _note(args, shown(getattr(note, "cli", note)))
    if not result.ok:
        print("FAILED: outputs differ beyond tolerance")
    elif len(result.rows) > 1:
        print("OK: the model outputs and every layer output agree within tolerance")
    else:
        print("OK: the model outputs agree within tolerance")
    return 0 if result.ok else 1


def _diff(args: argparse.Namespace) -> int:
    from . import files
    from .diff import diff

    if not args.atol >= 0:
        raise SettingError(f"--atol must be 0 or more, got {args.atol}")
    if args.plot:
        _picture_target(args.plot, args.overwrite)
    fmt_a, fmt_b = files.detect(args.a), files.detect(args.b)
    model_a = files.read(args.a, fmt_a, kinds=dict(args.kind), only=args.only, config=args.config)
    model_b = files.read(args.b, fmt_b, kinds=dict(args.kind), only=args.only)
    result = diff(model_a, model_b, atol=args.atol)
    if args.plot:
        from . import plot

        with _atomic_no_replace(args.overwrite):
            plot.save(plot.figure(plot.difference(model_a, model_b), difference=True,
                                  title=f"{Path(args.b).name} - {Path(args.a).name}, gate by gate"), args.plot)
    if args.json:
        print(json.dumps({"a": str(args.a), "b": str(args.b), "format_a": fmt_a, "format_b": fmt_b,
                          **_finite(result.as_dict())}, indent=2))
        return 0 if result.identical else 1
    print(f"A: {shown(str(args.a))} ({fmt_a})\nB: {shown(str(args.b))} ({fmt_b})")
    for line in result.structure:
        print(f"structure: {shown(line)}")
    for row in result.settings:
        print(f"setting {shown(row['layer'])}.{row['key']}: A {shown(repr(row['a']))}, B {shown(repr(row['b']))}")
    if result.tensors and not args.quiet:
        width = max(len(row["tensor"]) for row in result.tensors)
        print(f"{'tensor':<{width}}  {'shape':<12} {'max |A - B|':>12} {'max rel':>10}  result")
        for row in result.tensors:
            shape = str(tuple(row.get("shape", row.get("shape_a", ()))))
            if row["status"] == "shape":
                shape = f"{tuple(row['shape_a'])} vs {tuple(row['shape_b'])}"
            figures = ("", "") if row["max_abs"] is None or row["status"] == "bit-identical" else \
                (f"{row['max_abs']:.3e}", f"{row['max_rel']:.3e}")
            said = row["status"] + (f" ({' vs '.join(row['dtypes'])})" if "dtypes" in row else "")
            print(f"{shown(row['tensor']):<{width}}  {shape:<12} {figures[0]:>12} {figures[1]:>10}  {said}")
    same = sum(row["status"] == "bit-identical" for row in result.tensors)
    if result.bit_identical:
        print(f"identical: all {same} tensors bit for bit, and what the layers compute")
    elif result.identical:
        summed = sum(row["status"] == "same sum" for row in result.tensors) // 2
        print(f"identical within {args.atol:g}: {same} of {len(result.tensors)} tensors bit for bit" +
              (f"; {summed} gates' two biases split otherwise, with the same sum" if summed else ""))
    else:
        differing = [row["tensor"] for row in result.tensors if row["status"] not in ("bit-identical", "within atol",
                                                                                      "same sum")]
        what = [f"{len(differing)} tensors differ ({', '.join(differing[:4])}{', ...' if len(differing) > 4 else ''})"
                ] if differing else []
        what += [f"{len(result.settings)} settings"] if result.settings else []
        what += ["the layers"] if result.structure else []
        print(f"DIFFERENT: {'; '.join(what)}")
    return 0 if result.identical else 1


def _plot(args: argparse.Namespace) -> int:
    from . import files, plot

    _picture_target(args.out, args.overwrite)
    fmt = files.detect(args.file, args.src_format)
    model = files.read(args.file, fmt, kinds=dict(args.kind), only=args.only, config=args.config,
                       forget_bias=args.forget_bias)
    with _atomic_no_replace(args.overwrite):
        plot.save(plot.figure(model, title=args.title or f"{Path(args.file).name}: recurrent weights, gate by gate"),
                  args.out)
    if args.json:
        print(json.dumps({"file": str(args.file), "format": fmt, "picture": str(args.out)}, indent=2))
    else:
        print(f"wrote {shown(str(args.out))}")
    return 0


def _picture_target(out: str, overwrite: bool) -> None:
    """Refuse a picture's destination before anything is read: its suffix, and an existing file."""
    from . import _atomic
    from .plot import SUFFIXES

    if Path(out).suffix.lower() not in SUFFIXES:
        raise SettingError(f"{out}: a picture is written as {', '.join(SUFFIXES)}, not "
                           f"{Path(out).suffix or 'a name without a suffix'}")
    if not overwrite and _atomic.exists(out):
        raise FormatError(f"{out}: already exists", hint="pass --overwrite to replace it")
    from ._optional import require

    require("matplotlib")


def _atomic_no_replace(overwrite: bool):
    from ._atomic import no_replace

    return no_replace(not overwrite)


def _finite(value: object) -> object:
    """``value`` with infinite figures as the string "inf" (JSON has no infinity)."""
    if isinstance(value, float) and value != value:
        return "nan"
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _demo(args: argparse.Namespace) -> int:
    from . import demo

    show = _demo_json if args.json else _print_demo
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        return show(demo.run(args.out, seed=args.seed), kept=True)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return show(demo.run(tmp, seed=args.seed), kept=False)


def _demo_ok(r: dict) -> bool:
    worst = max(max(d.values()) for d in r["agreement"].values())
    return worst <= 1e-5 and r["model_agreement"] <= 1e-5 and r["archive_identical"]


def _demo_json(r: dict, kept: bool) -> int:
    w = r["weights"]
    gates = {gate: {role: list(getattr(w.gate(gate), role).shape) for role in ("W_x", "W_h", "b_x", "b_h")}
             for gate in w.gate_names}
    print(json.dumps({
        "model": "Input((18, 7)) -> LSTM(2) -> Dense(5)", "keras_tensors": r["keras_tensors"],
        "keras_params": r["keras_params"], "canonical_params": r["canonical_params"], "gates": gates,
        "torch_tensors": r["torch_tensors"], "keras_file": r["keras_file"] if kept else None,
        "archive": r["archive"] if kept else None, "archive_tensors": [[n, list(s)] for n, s in r["archive_tensors"]],
        "agreement": {label: {k: float(v) for k, v in d.items()} for label, d in r["agreement"].items()},
        "model_agreement": float(r["model_agreement"]), "archive_identical": bool(r["archive_identical"]),
        "torch_roundtrip_identical": bool(r["torch_roundtrip_identical"]), "ok": _demo_ok(r)},
        indent=2, default=lambda v: list(v) if isinstance(v, tuple) else str(v)))
    return 0 if _demo_ok(r) else 1


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
    if kept:
        print(f"\nThe seed model itself: {r['keras_file']}")
    where = r["archive"] if kept else "seed_lstm.safetensors (temporary; --out DIR keeps it and seed.keras)"
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
    ok = _demo_ok(r)
    print("OK: within 1e-5" if ok else "MISMATCH: beyond 1e-5")
    return 0 if ok else 1
