"""An independent reader of lstm_convert archives, written from docs/archive-format.md alone.

    python scripts/read_archive.py ARCHIVE            # check every digest; list the layers
    python scripts/read_archive.py ARCHIVE --layout   # the file's byte layout (the specification's worked example)
    python scripts/read_archive.py ARCHIVE --run      # and the model's output on a seeded input, as JSON

It uses the standard library and NumPy only, none of lstm_convert's code: that a second program reads an
archive, checks it and computes the model from the gate tensors is what shows the specification is enough.
Exit status 0 when the archive is intact, 1 with one line on stderr naming what is not.
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys

import numpy as np

DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4"}
GATES = {"lstm": ("input", "forget", "cell", "output"), "gru": ("reset", "update", "candidate"), "rnn": ("hidden",)}


class Damaged(Exception):
    """The archive is not what the specification says."""


def parse(data: bytes) -> tuple[dict, dict, int]:
    """``(metadata, tensors, data_start)``: the header's ``__metadata__`` and its tensor entries."""
    if len(data) < 8:
        raise Damaged("shorter than the 8-byte header length")
    (length,) = struct.unpack_from("<Q", data, 0)
    if 8 + length > len(data):
        raise Damaged(f"a header of {length} bytes in a file of {len(data)}")
    try:
        header = json.loads(data[8:8 + length].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise Damaged(f"the header is not JSON: {exc}") from None
    if not isinstance(header, dict) or not isinstance(header.get("__metadata__"), dict):
        raise Damaged("the header has no __metadata__ object")
    metadata = header.pop("__metadata__")
    if not all(isinstance(v, str) for v in metadata.values()):
        raise Damaged("a metadata value is not a string")
    return metadata, header, 8 + length


def check(data: bytes) -> tuple[dict, dict, int, dict]:
    """Everything the specification says a reader checks; ``(metadata, tensors, data_start, arrays)``."""
    metadata, entries, start = parse(data)
    if metadata.get("format") != "lstm_convert" or metadata.get("format_version") not in ("1", "2", "3"):
        raise Damaged(f"format {metadata.get('format')!r} version {metadata.get('format_version')!r}")
    if metadata["format_version"] == "3":
        recorded = json.loads(metadata["metadata_sha256"])
        for key, value in metadata.items():
            if key != "metadata_sha256" and recorded.get(key) != hashlib.sha256(value.encode("utf-8")).hexdigest():
                raise Damaged(f"metadata key {key!r} does not match its SHA-256")
        if set(recorded) != set(metadata) - {"metadata_sha256"}:
            raise Damaged("the metadata keys are not those recorded")
    digests = json.loads(metadata["sha256"])
    arrays, end = {}, 0
    for name, entry in sorted(entries.items(), key=lambda item: item[1]["data_offsets"][0]):
        begin, stop = entry["data_offsets"]
        if begin != end or entry["dtype"] not in DTYPES:
            raise Damaged(f"{name}: offsets {begin}, {stop} or dtype {entry['dtype']}")
        raw = data[start + begin:start + stop]
        if len(raw) != stop - begin or hashlib.sha256(raw).hexdigest() != digests.get(name):
            raise Damaged(f"{name} does not match its SHA-256")
        count = int(np.prod(entry["shape"], dtype=np.int64))
        if count * np.dtype(DTYPES[entry["dtype"]]).itemsize != len(raw):
            raise Damaged(f"{name}: {len(raw)} bytes for shape {entry['shape']}")
        arrays[name] = np.frombuffer(raw, DTYPES[entry["dtype"]]).reshape(entry["shape"])
        end = stop
    if start + end != len(data) or set(digests) != set(entries):
        raise Damaged("the data does not end where the last tensor does, or digests and tensors differ")
    expected = {name for spec in json.loads(metadata["layers"]) for name in names(spec)}
    if expected != set(entries):
        raise Damaged(f"tensors {sorted(expected ^ set(entries))[:4]} disagree with the layers' specs")
    return metadata, entries, start, arrays


def names(spec: dict) -> list[str]:
    """The tensors a layer spec calls for (the specification's naming rules)."""
    layer = spec["name"]
    if spec["kind"] in GATES:
        out = []
        directions = ["reverse"] if spec.get("backward") else ["forward", "reverse"][:spec["directions"]]
        roles = ["W_x", "W_h"] + (["b_x", "b_h"] if spec["bias"] else [])
        for k in range(spec["num_layers"]):
            for d in directions:
                for gate in GATES[spec["kind"]]:
                    out += [f"{layer}.l{k}.{d}.{gate}.{r}" for r in roles]
                    if spec.get("peepholes") and gate in ("input", "forget", "output"):
                        out.append(f"{layer}.l{k}.{d}.{gate}.p")
                    if spec.get("layer_norm"):
                        out.append(f"{layer}.l{k}.{d}.{gate}.ln")
                if spec.get("proj_size"):
                    out.append(f"{layer}.l{k}.{d}.projection.W_hr")
        return out
    if spec["kind"] == "dense":
        return [f"{layer}.weight"] + ([f"{layer}.bias"] if spec["bias"] else [])
    if spec["kind"] == "embedding":
        return [f"{layer}.weight"]
    if spec["kind"] == "masking":
        return []
    return [f"{layer}.{a}" for a in spec.get("arrays", [])]


# -- the forward pass -----------------------------------------------------------------------------------------

def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


ACT = {"sigmoid": _sigmoid, "tanh": np.tanh, "relu": lambda z: np.maximum(z, 0.0), "linear": lambda z: z,
       "hard_sigmoid_keras3": lambda z: np.clip(z / 6.0 + 0.5, 0.0, 1.0),
       "hard_sigmoid_keras2": lambda z: np.clip(0.2 * z + 0.5, 0.0, 1.0),
       "softmax": lambda z: np.exp(z - z.max(-1, keepdims=True)) / np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True),
       "softplus": lambda z: np.logaddexp(0.0, z), "softsign": lambda z: z / (1.0 + np.abs(z)),
       "elu": lambda z: np.where(z > 0, z, np.expm1(np.minimum(z, 0.0))), "silu": lambda z: z * _sigmoid(z)}


def _cell(spec, t, k, d):
    """One stacked layer ``k``, direction ``d``: a step function of ``(x_t, state) -> (h, state)``."""
    act, rec = ACT[spec["activation"]], ACT[spec["recurrent_activation"]]
    get = lambda gate, role: t.get(f"{spec['name']}.l{k}.{d}.{gate}.{role}")  # noqa: E731
    gates = GATES[spec["kind"]]
    w = {g: (get(g, "W_x").astype(np.float64), get(g, "W_h").astype(np.float64)) for g in gates}
    zero = lambda g: np.zeros(w[g][0].shape[0])  # noqa: E731
    b = {g: ((get(g, "b_x") if spec["bias"] else zero(g)).astype(np.float64),
             (get(g, "b_h") if spec["bias"] else zero(g)).astype(np.float64)) for g in gates}

    def pre(g, x, h, c=None):
        z = x @ w[g][0].T + h @ w[g][1].T
        if spec.get("peepholes") and c is not None:
            z = z + get(g, "p").astype(np.float64) * c
        bias = b[g][0] + b[g][1] + (spec.get("forget_bias", 0.0) if g == "forget" else 0.0)
        if spec.get("layer_norm"):
            z = (z - z.mean(-1, keepdims=True)) / np.sqrt(z.var(-1, keepdims=True) + 1e-8)
            z = z * get(g, "ln").astype(np.float64)
        z = z + bias
        return np.clip(z, -spec["clip"], spec["clip"]) if spec.get("clip") is not None else z

    if spec["kind"] == "lstm":
        proj = get("projection", "W_hr")

        def step(x, state):
            h, c = state
            i = rec(pre("input", x, h, c))
            f = 1.0 - i if spec.get("input_forget") else rec(pre("forget", x, h, c))
            c = f * c + i * act(pre("cell", x, h))
            if spec.get("cell_clip") is not None:
                c = np.clip(c, -spec["cell_clip"], spec["cell_clip"])
            o = rec(pre("output", x, h, c))
            h = o * act(c)
            return (h @ proj.astype(np.float64).T if proj is not None else h), c
    elif spec["kind"] == "gru":
        def step(x, state):
            (h,) = state
            r = rec(x @ w["reset"][0].T + b["reset"][0] + h @ w["reset"][1].T + b["reset"][1])
            z = rec(x @ w["update"][0].T + b["update"][0] + h @ w["update"][1].T + b["update"][1])
            wx, wh = w["candidate"]
            bx, bh = b["candidate"]
            inner = r * (h @ wh.T + bh) if spec["reset_after"] else (r * h) @ wh.T + bh
            n = act(x @ wx.T + bx + inner)
            return z * h + (1.0 - z) * n, None
    else:
        def step(x, state):
            (h,) = state
            wx, wh = w["hidden"]
            return act(x @ wx.T + b["hidden"][0] + h @ wh.T + b["hidden"][1]), None
    return step


def _recurrent(spec, t, x):
    """A recurrent layer on ``(batch, time, features)`` from zero states, no mask."""
    size = spec["proj_size"] or spec["hidden_size"]
    if spec.get("go_backwards"):
        x = x[:, ::-1]
    directions = ["reverse"] if spec.get("backward") else ["forward", "reverse"][:spec["directions"]]
    merge = {"concat": lambda ys: np.concatenate(ys, -1), "sum": lambda ys: ys[0] + ys[1],
             "mul": lambda ys: ys[0] * ys[1], "ave": lambda ys: (ys[0] + ys[1]) / 2}[spec["merge_mode"]]
    for k in range(spec["num_layers"]):
        top = k == spec["num_layers"] - 1
        outs = []
        for d in directions:
            step = _cell(spec, t, k, d)
            seq = x if d == "forward" else x[:, ::-1]
            h = np.zeros((x.shape[0], size))
            state = (h, np.zeros((x.shape[0], spec["hidden_size"]))) if spec["kind"] == "lstm" else (h,)
            ys = []
            for s in range(seq.shape[1]):
                h, c = step(seq[:, s], state)
                state = (h, c) if spec["kind"] == "lstm" else (h,)
                ys.append(h)
            y = np.stack(ys, 1)
            if top and not spec["return_sequences"]:
                outs.append(y[:, -1])
            else:
                outs.append(y if d == "forward" else y[:, ::-1])
        x = merge(outs) if len(outs) == 2 else outs[0]
    return x


def run(data: bytes, x: np.ndarray) -> np.ndarray:
    """The model's output on ``x``, from the gate tensors (recurrent layers, Dense, Embedding; no masks)."""
    metadata, _, _, t = check(data)
    x = np.asarray(x)
    for spec in json.loads(metadata["layers"]):
        if spec["kind"] in GATES:
            if spec.get("cell"):
                raise Damaged(f"{spec['name']}: a single-step cell is not run by this reader")
            x = _recurrent(spec, t, np.asarray(x, np.float64))
        elif spec["kind"] == "dense":
            x = np.asarray(x, np.float64) @ t[f"{spec['name']}.weight"].astype(np.float64).T
            if spec["bias"]:
                x = x + t[f"{spec['name']}.bias"].astype(np.float64)
            x = ACT[spec["activation"]](x)
        elif spec["kind"] == "embedding" and not spec["mask_zero"]:
            x = t[f"{spec['name']}.weight"].astype(np.float64)[x]
        else:
            raise Damaged(f"{spec['name']}: a {spec['kind']} layer (or a mask) is not run by this reader")
    return x


def layout(data: bytes) -> str:
    """The byte layout: the header's length, the metadata's keys, and each tensor's place in the file."""
    metadata, entries, start = parse(data)
    lines = [f"bytes 0-7: header length {start - 8} (little-endian u64)",
             f"bytes 8-{start - 1}: header JSON (UTF-8, padded with spaces to a multiple of 8)"]
    lines += [f"  __metadata__.{key}: {len(value.encode('utf-8'))} bytes" for key, value in sorted(metadata.items())]
    lines.append(f"bytes {start}-{len(data) - 1}: data, each tensor's bytes little-endian, C order")
    for name, entry in sorted(entries.items(), key=lambda item: item[1]["data_offsets"][0]):
        begin, stop = entry["data_offsets"]
        lines.append(f"  {name:<28} {entry['dtype']:<4} {str(entry['shape']):<8} file bytes {start + begin}-"
                     f"{start + stop - 1}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    path = argv[0]
    try:
        with open(path, "rb") as handle:
            data = handle.read()
        metadata, _, _, _ = check(data)
        if "--layout" in argv:
            print(layout(data))
        if "--run" in argv:
            specs = json.loads(metadata["layers"])
            first = specs[0]
            rng = np.random.default_rng(0)
            if first["kind"] == "embedding":
                x = rng.integers(0, first["num_embeddings"], size=(2, 5))
            else:
                x = rng.normal(size=(2, 5, first["input_size"] if "input_size" in first else first["in_features"]))
            print(json.dumps(run(data, x).tolist()))
    except (OSError, Damaged, KeyError, TypeError, ValueError) as exc:
        print(f"read_archive: {path}: {exc}", file=sys.stderr)
        return 1
    if "--run" not in argv and "--layout" not in argv:
        specs = json.loads(metadata["layers"])
        print(f"{path}: intact (format version {metadata['format_version']}); layers: "
              + ", ".join(f"{s['name']} ({s['kind']})" for s in specs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
