"""TFLite files: recurrent operators read and written as FlatBuffers, without TensorFlow.

A ``.tflite`` file is one FlatBuffer (identifier ``TFL3``): a ``Model`` of operator codes, subgraphs and
buffers; subgraph 0 is the model, a list of tensors (shape, type, buffer, name, ``is_variable``) and of
operators in the order they run, each naming its inputs and outputs by tensor index (-1: an optional input
left out). Weights are constant tensors whose buffer holds their bytes (little-endian, row-major).

The recurrent operators and what each input is:

* ``UNIDIRECTIONAL_SEQUENCE_LSTM`` (24 inputs): 0 the input ``(batch, time, in)``; 1-4 input-to-gate
  weights ``(H, in)`` for the input, forget, cell and output gates; 5-8 recurrent-to-gate weights
  ``(H, out)``; 9-11 peepholes ``(H,)`` for the input, forget and output gates; 12-15 one bias per gate
  ``(H,)``; 16 projection weights ``(out, H)`` and 17 its bias; 18 and 19 the output and cell states,
  *variable* tensors that start at zero and keep the final states from one invocation to the next; 20-23
  layer-norm coefficients. Options: the cell's activation (``fused_activation_function``), ``cell_clip``
  (the new cell state clipped to ``[-cell_clip, cell_clip]`` at each step: TensorFlow's converter sets 10.0
  for every Keras LSTM), ``proj_clip``, ``time_major``. Without input-gate weights (1 and 5) the cell is a
  CIFG LSTM (the input gate is ``1 - forget``).
* ``BIDIRECTIONAL_SEQUENCE_LSTM`` (48 inputs): 1-17 the forward cell as above, 18-34 the backward one,
  35-38 the four states, 39-47 auxiliary inputs; ``merge_outputs`` concatenates the two output sequences
  (the backward one aligned with the input's steps); ``time_major`` defaults to *true* here.
* ``LSTM``: one step of the same cell on ``(batch, in)``.
* ``UNIDIRECTIONAL_SEQUENCE_RNN``: input, weights ``(H, in)``, recurrent weights ``(H, H)``, bias, state;
  ``BIDIRECTIONAL_SEQUENCE_RNN``: the forward four then the backward four, then auxiliary inputs.

TensorFlow's converter writes a Keras ``Bidirectional`` as two unidirectional operators, the backward one
on a ``REVERSE_V2`` of the input, then ``STRIDED_SLICE`` of the last steps and ``CONCATENATION``; those
patterns are read as the layer they came from. Dense layers are ``FULLY_CONNECTED`` (weights ``(out,
in)``), an Embedding ``GATHER``. Weights are float32; quantised weights are refused.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

from .._lazy import np

from .. import _flatbuffers as fb
from ..canonical import DIRECTIONS, PEEPHOLE_GATES, Dense, Embedding, Gate, Layer, Model, RecurrentLayer
from ..errors import FormatError, UnsupportedError
from ..gates import TFLITE_GATES

# Builtin operator codes (schema.fbs, BuiltinOperator).
OPS = {"CONCATENATION": 2, "FULLY_CONNECTED": 9, "LOGISTIC": 14, "LSTM": 16, "RELU": 19, "RESHAPE": 22,
       "SOFTMAX": 25, "TANH": 28, "UNIDIRECTIONAL_SEQUENCE_RNN": 35, "GATHER": 36, "STRIDED_SLICE": 45,
       "BIDIRECTIONAL_SEQUENCE_RNN": 46, "UNIDIRECTIONAL_SEQUENCE_LSTM": 44, "BIDIRECTIONAL_SEQUENCE_LSTM": 52,
       "REVERSE_V2": 105, "DEQUANTIZE": 6}
_NAMES = {code: name for name, code in OPS.items()}
# BuiltinOptions union members.
_OPTIONS = {"FULLY_CONNECTED": 8, "SOFTMAX": 9, "CONCATENATION": 10, "LSTM": 14, "GATHER": 23,
            "UNIDIRECTIONAL_SEQUENCE_RNN": 31, "STRIDED_SLICE": 32, "BIDIRECTIONAL_SEQUENCE_LSTM": 69,
            "BIDIRECTIONAL_SEQUENCE_RNN": 70, "UNIDIRECTIONAL_SEQUENCE_LSTM": 71}
# ActivationFunctionType <-> canonical activations (RELU_N1_TO_1, RELU6 and SIGN_BIT have none).
_ACT_IN = {0: "linear", 1: "relu", 4: "tanh"}
_ACT_OUT = {name: code for code, name in _ACT_IN.items()}
_FLOAT32, _INT32 = 0, 2
_TYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 5: "string", 6: "bool", 7: "int16",
          9: "int8", 10: "float64", 16: "bfloat16"}
# Inputs and outputs an operator needs at least (the recurrent ones are checked with their own counts).
_ARITY = {"REVERSE_V2": (2, 1), "STRIDED_SLICE": (4, 1), "FULLY_CONNECTED": (2, 1), "GATHER": (2, 1),
          "CONCATENATION": (1, 1)}
_LSTM_GATES = TFLITE_GATES["lstm"]  # TFLite's order of the per-gate inputs, by their canonical names
_IDENTIFIER = b"TFL3"
_LIMIT = 2 ** 31 - 2 ** 20  # a FlatBuffer's offsets reach 2 GiB; larger files keep buffers outside it


# -- reading ---------------------------------------------------------------------------------------------------


class _File:
    """The parts of a ``.tflite`` file the reader needs, every offset checked."""

    def __init__(self, data: bytes | memoryview, where: str) -> None:
        self.data, self.where = data, where
        model = fb.root(data, where)
        codes = []
        for code in model.tables(1):
            codes.append(max(int(code.scalar(0, "b", 0)), int(code.scalar(3, "i", 0))))
        self.codes = codes
        graphs = model.tables(2)
        if not graphs:
            raise FormatError(f"{where}: a TFLite model without a subgraph")
        graph = graphs[0]
        self.buffers = model.tables(4)
        self.tensors = graph.tables(0)
        self.inputs, self.outputs = graph.scalars(1, "i"), graph.scalars(2, "i")
        self.operators = graph.tables(3)
        self.description = model.string(3) or ""
        self.version = int(model.scalar(0, "I", 0))

    def opcode(self, op: fb.Table, index: int) -> str:
        k = int(op.scalar(0, "I", 0))
        if k >= len(self.codes):
            raise FormatError(f"{self.where}: operator {index} names operator code {k} of {len(self.codes)}")
        code = self.codes[k]
        return _NAMES.get(code, f"builtin operator {code}" if code < 1000 else "a custom operator")

    def tensor(self, k: int, index: int) -> fb.Table:
        if not 0 <= k < len(self.tensors):
            raise FormatError(f"{self.where}: operator {index} names tensor {k} of {len(self.tensors)}")
        return self.tensors[k]

    def name(self, k: int) -> str:
        if not 0 <= k < len(self.tensors):
            return f"tensor {k} (of {len(self.tensors)})"
        return self.tensors[k].string(3) or f"tensor {k}"

    def shape(self, k: int) -> tuple[int, ...]:
        if not 0 <= k < len(self.tensors):
            raise FormatError(f"{self.where}: names tensor {k} of {len(self.tensors)}")
        return tuple(self.tensors[k].scalars(0, "i"))

    def constant(self, k: int, index: int, shape: tuple[int, ...] | None, what: str) -> np.ndarray:
        """The value of constant tensor ``k`` (float32, or int32 for indices), its shape checked."""
        tensor = self.tensor(k, index)
        name = self.name(k)
        kind = int(tensor.scalar(1, "b", 0))
        if tensor.table(4) is not None and (tensor.table(4).scalars(2, "f") or tensor.table(4).scalars(3, "q")):
            raise UnsupportedError(f"{self.where}: {name} ({what}) is quantised ({_TYPES.get(kind, kind)} with scales); "
                                   "lstm_convert reads float32 weights exactly and does not dequantise")
        if kind not in (_FLOAT32, _INT32):
            raise UnsupportedError(f"{self.where}: {name} ({what}) holds {_TYPES.get(kind, f'type {kind}')} weights; "
                                   "lstm_convert reads float32 TFLite weights")
        dims = self.shape(k)
        if shape is not None and dims != shape:
            raise FormatError(f"{self.where}: {name} ({what}) has shape {dims}, expected {shape}")
        data = self._bytes(tensor, name, what)
        dtype = np.dtype("<f4" if kind == _FLOAT32 else "<i4")
        count = int(np.prod(dims, dtype=np.int64)) if dims else 1
        if len(data) != count * 4:
            raise FormatError(f"{self.where}: {name} ({what}) holds {len(data)} bytes, expected {count * 4} for shape "
                              f"{dims}")
        return np.frombuffer(bytes(data), dtype).reshape(dims).astype(dtype.newbyteorder("="))

    def _bytes(self, tensor: fb.Table, name: str, what: str):
        k = int(tensor.scalar(2, "I", 0))
        if not 0 < k < len(self.buffers):
            raise FormatError(f"{self.where}: {name} ({what}) is not a constant: its weights are not in the file")
        buffer = self.buffers[k]
        offset, size = int(buffer.scalar(1, "Q", 0)), int(buffer.scalar(2, "Q", 0))
        if offset > 1:  # a large model's buffer, outside the FlatBuffer
            if offset + size > len(self.data):
                raise FormatError(f"{self.where}: {name} ({what}) lies past the end of the file (byte {offset}, "
                                  f"{size} bytes, of {len(self.data)})")
            return memoryview(self.data)[offset:offset + size]
        data = buffer.bytes(0)
        if data is None or not len(data):
            raise FormatError(f"{self.where}: {name} ({what}) is not a constant: its buffer is empty")
        return data


def read(data: bytes | memoryview, where: str, *, only: Sequence[str] = (), source: dict | None = None) -> Model:
    """The model of a TFLite file's bytes (see the module's docstring)."""
    from ..formats import check_selection, select_layers

    if len(data) < 8 or bytes(data[4:8]) != _IDENTIFIER:
        raise FormatError(f"{where}: not a TFLite file (no 'TFL3' identifier at byte 4)")
    f = _File(data, where)
    layers, input_shape, input_dtype, batch = _Reader(f).walk()
    source = {"framework": "tflite", "file_format": "tflite", **(source or {})}
    layers = [_with_source(layer, source) for layer in layers]
    model = Model(tuple(layers), source=dict(source), input_shape=input_shape, input_dtype=input_dtype,
                  batch_size=batch if any(getattr(layer, "stateful", False) for layer in layers) else None,
                  config={"tflite": {"batch_size": batch}})
    if only:
        check_selection(where, only, [layer.name for layer in layers])
        model = select_layers(model, only, where)
    return model


def _with_source(layer: Layer, source: dict) -> Layer:
    """``layer`` with where it came from, and its parameters as the file holds them (one bias per gate)."""
    import dataclasses

    if isinstance(layer, RecurrentLayer):
        params = sum(g.W_x.size + g.W_h.size + g.b_x.size for g in layer.gates.values())
        params += sum(p.size for p in layer.peepholes.values()) + sum(p.size for p in layer.projections.values())
    else:
        params = sum(a.size for _, a in layer.tensors())
    return dataclasses.replace(layer, source={**source, **dict(layer.source), "params": str(params)})


class _Reader:
    """Follows the model's value from its input through the operators, in order, into a chain of layers."""

    def __init__(self, f: _File) -> None:
        self.f, self.where = f, f.where
        self.layers: list[Layer] = []
        self.reversed: dict[int, int] = {}  # REVERSE_V2's output -> the tensor it reverses in time
        self.pending: dict[int, dict] = {}  # a recurrent operator's output not yet part of the chain
        self.steps: dict[int, tuple[int, str]] = {}  # STRIDED_SLICE of one step: output -> (sequence, "last"/"first")
        self.names: set[str] = set()

    def walk(self):
        f = self.f
        if len(f.inputs) != 1 or len(f.outputs) != 1:
            raise UnsupportedError(f"{self.where}: the model has {len(f.inputs)} inputs and {len(f.outputs)} outputs; "
                                   "lstm_convert reads models of one input and one output")
        first = f.inputs[0]
        if not 0 <= first < len(f.tensors):
            raise FormatError(f"{self.where}: the model's input is tensor {first} of {len(f.tensors)}")
        kind = int(f.tensors[first].scalar(1, "b", 0))
        shape = f.shape(first)
        signature = tuple(f.tensors[first].scalars(7, "i")) or shape
        if kind not in (_FLOAT32, _INT32) or len(shape) < 2:
            raise UnsupportedError(f"{self.where}: the model's input is {_TYPES.get(kind, kind)} {shape}; lstm_convert "
                                   "reads models of float32 sequences or int32 indices")
        self.chain = first
        for index, op in enumerate(f.operators):
            self.operator(index, op)
        out = f.outputs[0]
        if out in self.pending or out in self.steps:
            self.commit(out, len(f.operators))
        if out != self.chain:
            raise UnsupportedError(f"{self.where}: the model's output ({f.name(out)}) is not the end of a chain of layers "
                                   "that lstm_convert reads")
        if not self.layers:
            raise FormatError(f"{self.where}: holds no operator that lstm_convert reads")
        batch = shape[0] if shape[0] > 0 else None
        dims = tuple(d if d > 0 else None for d in signature[1:])
        return self.layers, dims, "float32" if kind == _FLOAT32 else "int32", batch

    # -- the operators ------------------------------------------------------------------------------------------

    def operator(self, index: int, op: fb.Table) -> None:
        f = self.f
        name = f.opcode(op, index)
        inputs, outputs = op.scalars(1, "i"), op.scalars(2, "i")
        for k in list(inputs) + list(outputs):
            if k != -1:
                f.tensor(k, index)
        need = _ARITY.get(name, (1, 1))
        if len(inputs) < need[0] or len(outputs) < need[1]:
            raise FormatError(f"{self.where}: operator {index} ({name}) has {len(inputs)} inputs and {len(outputs)} "
                              f"outputs, expected at least {need[0]} and {need[1]}")
        opts = op.table(4)
        x = inputs[0] if inputs else -1
        if name == "REVERSE_V2":
            axis = f.constant(inputs[1], index, None, "REVERSE_V2 axis").reshape(-1).tolist()
            if axis not in ([1], [-2] if len(f.shape(x)) == 3 else [1]):
                raise self.refuse(index, name, f"reverses axis {axis}, not the time axis")
            unit = self.pending.get(x)
            if unit is not None and unit["backward"] and not unit.get("realigned"):  # a backward output realigned
                self.pending[outputs[0]] = {**self.pending.pop(x), "realigned": True}
                return
            if x in self.pending or x in self.steps:
                self.commit(x, index)
            self.take(x, index, name)
            self.reversed[outputs[0]] = x
            return
        if name in ("UNIDIRECTIONAL_SEQUENCE_LSTM", "UNIDIRECTIONAL_SEQUENCE_RNN", "BIDIRECTIONAL_SEQUENCE_LSTM",
                    "BIDIRECTIONAL_SEQUENCE_RNN", "LSTM"):
            if x in self.pending or x in self.steps:
                self.commit(x, index)
            backward = x in self.reversed
            base = self.reversed.get(x, x)
            self.take(base, index, name)
            unit = self.recurrent(index, name, inputs, outputs, opts)
            unit["backward"], unit["base"] = backward, base
            if name.startswith("BIDIRECTIONAL") or name == "LSTM":
                if backward:
                    raise self.refuse(index, name, "runs on a reversed input")
                self.pending[outputs[0]] = unit
                if name.startswith("BIDIRECTIONAL") and not unit["merge"]:
                    if len(outputs) < 2:
                        raise self.refuse(index, name, "has one output, though its directions are not merged")
                    self.pending[outputs[1]] = {**unit, "half": "backward"}
                    unit["half"] = "forward"
                return
            self.pending[outputs[0]] = unit
            return
        if name == "STRIDED_SLICE" and x in self.pending:
            which = self.one_step(index, inputs, opts)
            if which is None:
                raise self.refuse(index, name, "slices a recurrent output other than at its first or last step")
            self.steps[outputs[0]] = (x, which)
            return
        if name == "CONCATENATION" and len(inputs) == 2 and all(k in self.pending or k in self.steps for k in inputs):
            self.bidirectional(index, inputs, outputs[0], opts)
            return
        # Any other operator takes the chain's value: what is pending becomes a layer first.
        if x in self.pending or x in self.steps:
            self.commit(x, index)
        if name == "FULLY_CONNECTED":
            self.take(x, index, name)
            self.dense(index, inputs, opts)
        elif name in ("LOGISTIC", "SOFTMAX", "TANH", "RELU"):
            self.take(x, index, name)
            last = self.layers[-1] if self.layers else None
            if not isinstance(last, Dense) or last.activation != "linear" or last.config.get("tflite", {}).get("act"):
                raise self.refuse(index, name, "follows no Dense layer without an activation")
            if name == "SOFTMAX" and opts is not None and float(opts.scalar(0, "f", 1.0)) != 1.0:
                raise self.refuse(index, name, f"has beta={opts.scalar(0, 'f', 1.0)}, not 1")
            import dataclasses

            act = {"LOGISTIC": "sigmoid", "SOFTMAX": "softmax", "TANH": "tanh", "RELU": "relu"}[name]
            self.layers[-1] = dataclasses.replace(last, activation=act)
        elif name == "GATHER":
            table = inputs[0]
            if len(inputs) < 2 or inputs[1] != self.chain or self.layers:
                raise self.refuse(index, name, "is not a lookup of the model's input indices")
            weight = f.constant(table, index, None, "GATHER params")
            if weight.ndim != 2 or (opts is not None and (opts.scalar(0, "i", 0) or opts.scalar(1, "i", 0))):
                raise self.refuse(index, name, "is not a lookup of rows of a 2-D table")
            self.layers.append(Embedding(name=self.unique(_stem(f.name(table), (".weight",)) or "embedding",
                                                          "embedding"), weight=weight))
        else:
            raise self.refuse(index, name, "is not an operator lstm_convert reads")
        self.chain = outputs[0]

    def take(self, k: int, index: int, name: str) -> None:
        if k != self.chain:
            raise self.refuse(index, name, f"takes {self.f.name(k) if k >= 0 else 'nothing'}, not the output of the "
                              "layers before it: the model is not a chain")

    def refuse(self, index: int, name: str, why: str) -> UnsupportedError:
        return UnsupportedError(f"{self.where}: operator {index} ({name}) {why}; lstm_convert reads chains of "
                                "recurrent operators, FULLY_CONNECTED and GATHER")

    def unique(self, text: str, fallback: str) -> str:
        base = "".join(c if c.isalnum() or c in "_-" else "_" for c in text.split(";")[0].split(":")[0]) or fallback
        base = base.strip("_") or fallback
        name, k = base, 1
        while name in self.names:
            k += 1
            name = f"{base}_{k}"
        self.names.add(name)
        return name

    def one_step(self, index: int, inputs: Sequence[int], opts) -> str | None:
        f = self.f
        if len(inputs) != 4 or len(f.shape(inputs[0])) != 3 or opts is None:
            return None
        begin, end, strides = (f.constant(k, index, (3,), "STRIDED_SLICE bound").tolist() for k in inputs[1:])
        masks = [int(opts.scalar(k, "i", 0)) for k in range(5)]
        if strides != [1, 1, 1] or masks[0] & 5 != 5 or masks[1] & 5 != 5 or masks[2] or masks[3] or masks[4] != 2:
            return None
        signature = tuple(f.tensors[inputs[0]].scalars(7, "i")) or f.shape(inputs[0])
        steps = signature[1] if len(signature) == 3 else -1
        if begin[1] == -1 or (steps > 1 and begin[1] == steps - 1):
            return "last"
        if begin[1] == 0 and (end[1] == 1 or masks[4] & 2):
            return "first"
        return None

    def dense(self, index: int, inputs: Sequence[int], opts) -> None:
        f = self.f
        if len(inputs) < 2:
            raise self.refuse(index, "FULLY_CONNECTED", "has no weights")
        weight = f.constant(inputs[1], index, None, "FULLY_CONNECTED weights")
        if weight.ndim != 2:
            raise self.refuse(index, "FULLY_CONNECTED", f"has weights of shape {weight.shape}")
        bias = f.constant(inputs[2], index, (weight.shape[0],), "FULLY_CONNECTED bias") \
            if len(inputs) > 2 and inputs[2] != -1 else None
        act = int(opts.scalar(0, "b", 0)) if opts is not None else 0
        if opts is not None and int(opts.scalar(1, "b", 0)):
            raise self.refuse(index, "FULLY_CONNECTED", "keeps its weights in a shuffled format")
        if act not in _ACT_IN:
            raise self.refuse(index, "FULLY_CONNECTED", f"has fused activation {act}, which has no canonical name")
        stem = _stem(f.name(inputs[1]), (".weight",))
        if not stem and "/" in f.name(inputs[1]):  # TensorFlow's converter: model/dense/MatMul
            stem = f.name(inputs[1]).rpartition("/")[0].rpartition("/")[2]
        name = self.unique(stem or "dense", "dense")
        self.layers.append(Dense(name=name, weight=weight, bias=bias, activation=_ACT_IN[act],
                                 config={"tflite": {"act": act}} if act else {}))

    def recurrent(self, index: int, name: str, inputs: Sequence[int], outputs: Sequence[int], opts) -> dict:
        """The weights and options of one recurrent operator, per direction."""
        f = self.f
        lstm = "LSTM" in name
        bidirectional = name.startswith("BIDIRECTIONAL")
        expected = {"UNIDIRECTIONAL_SEQUENCE_LSTM": (20, 24), "LSTM": (20, 24), "BIDIRECTIONAL_SEQUENCE_LSTM": (48, 48),
                    "UNIDIRECTIONAL_SEQUENCE_RNN": (5, 5), "BIDIRECTIONAL_SEQUENCE_RNN": (9, 12)}[name]
        if not expected[0] <= len(inputs) <= expected[1]:
            raise self.refuse(index, name, f"has {len(inputs)} inputs, expected {expected[1]}")
        if opts is None:
            raise self.refuse(index, name, "has no options")
        if lstm:
            act = int(opts.scalar(0, "b", 0))
            cell_clip, proj_clip = float(opts.scalar(1, "f", 0.0)), float(opts.scalar(2, "f", 0.0))
            time_major = bool(opts.scalar(4 if bidirectional else 3, "?", bidirectional)) if name != "LSTM" else False
            merge = bool(opts.scalar(3, "?", False)) if bidirectional else True
            if name == "LSTM" and int(opts.scalar(3, "b", 0)):
                raise self.refuse(index, name, "is the basic-kernel LSTM (four gates in one tensor)")
        else:
            time_major = bool(opts.scalar(0, "?", False))
            act = int(opts.scalar(1, "b", 0))
            merge = bool(opts.scalar(2, "?", False)) if bidirectional else True
            cell_clip = proj_clip = 0.0
        if time_major:
            raise self.refuse(index, name, "is time-major (time, batch, features)")
        if act not in _ACT_IN:
            raise self.refuse(index, name, f"has activation {act} (RELU6, RELU_N1_TO_1 or SIGN_BIT), which lstm_convert "
                              "does not hold")
        if proj_clip:
            raise self.refuse(index, name, f"clips its projection at {proj_clip}, which lstm_convert does not hold")
        if cell_clip < 0 or cell_clip != cell_clip:
            raise self.refuse(index, name, f"has cell_clip {cell_clip}")
        x_shape = f.shape(inputs[0])
        if len(x_shape) != (2 if name == "LSTM" else 3):
            raise self.refuse(index, name, f"takes an input of shape {x_shape}")
        width = x_shape[-1]
        if lstm:
            spans = [(1, 18)] if not bidirectional else [(1, 18), (18, 35)]
            if bidirectional and any(k != -1 for k in inputs[39:48]):
                raise self.refuse(index, name, "has auxiliary inputs")
            norms = list(inputs[20:24]) if not bidirectional and len(inputs) == 24 else [-1] * 4
            units = [self.lstm_direction(index, name, inputs[a:b], width, norms) for a, b in spans]
        else:
            if bidirectional and len(inputs) > 9 and any(k != -1 for k in inputs[9:]):
                raise self.refuse(index, name, "has auxiliary inputs")
            spans = [(1, 4)] if not bidirectional else [(1, 4), (5, 8)]
            units = [self.rnn_direction(index, name, inputs[a:b], width) for a, b in spans]
        sizes = {(u["hidden"], u["proj"], u.get("input_forget", False), bool(u["peepholes"])) for u in units}
        if len(sizes) != 1:
            raise self.refuse(index, name, "has directions of different sizes or kinds of cell")
        return {"op": name, "index": index, "units": units, "act": _ACT_IN[act], "width": width,
                "cell_clip": cell_clip or None, "merge": merge, "kind": "lstm" if lstm else "rnn",
                "stem": _stem(f.name(inputs[1] if inputs[1] != -1 else inputs[2]),
                              (".forward.input.W_x", ".forward.forget.W_x", ".forward.W_x")), "cell": name == "LSTM"}

    def lstm_direction(self, index: int, name: str, t: Sequence[int], width: int, norms: Sequence[int]) -> dict:
        f = self.f
        forget = f.constant(t[1], index, None, "input-to-forget weights")
        if forget.ndim != 2:
            raise self.refuse(index, name, f"has input-to-forget weights of shape {forget.shape}")
        hidden = forget.shape[0]
        recurrent = f.constant(t[5], index, None, "recurrent-to-forget weights")
        if recurrent.ndim != 2 or recurrent.shape[0] != hidden:
            raise self.refuse(index, name, f"has recurrent-to-forget weights of shape {recurrent.shape}")
        out = recurrent.shape[1]
        cifg = t[0] == -1
        if (t[4] == -1) != cifg or (cifg and (t[11] != -1 or t[8] != -1 or norms[0] != -1)):
            raise self.refuse(index, name, "has input-gate tensors of some kinds and not others")
        gates = {}
        for k, gate in enumerate(_LSTM_GATES):
            if cifg and gate == "input":
                continue
            w_x = f.constant(t[k], index, (hidden, width), f"input-to-{gate} weights")
            w_h = f.constant(t[4 + k], index, (hidden, out), f"recurrent-to-{gate} weights")
            if t[11 + k] == -1:
                raise self.refuse(index, name, f"has no {gate} gate bias")
            b = f.constant(t[11 + k], index, (hidden,), f"{gate} gate bias")
            gates[gate] = Gate(w_x, w_h, b, np.zeros_like(b))
        peep = dict(zip(PEEPHOLE_GATES, (t[8], t[9], t[10])))
        if cifg:
            del peep["input"]
        if any(k != -1 for k in peep.values()) and any(k == -1 for k in peep.values()):
            raise self.refuse(index, name, "has some peepholes and not others")
        peepholes = {g: f.constant(k, index, (hidden,), f"cell-to-{g} peephole") for g, k in peep.items()} \
            if peep["forget"] != -1 else {}
        layer_norm = dict(zip(_LSTM_GATES, norms))
        if cifg:
            del layer_norm["input"]
        if any(k != -1 for k in layer_norm.values()) and any(k == -1 for k in layer_norm.values()):
            raise self.refuse(index, name, "normalises some gates and not others")
        layer_norm = {g: f.constant(k, index, (hidden,), f"{g} gate layer-norm coefficients")
                      for g, k in layer_norm.items()} if norms[1] != -1 else {}
        if cifg:  # the input gate is 1 - f = sigmoid(-pre_f): canonically, coupled gates (input_forget) whose
            # input gate has the forget gate's weights negated; the forget gate's own are unused, zeros
            forget = gates["forget"]
            gates["input"] = Gate(-forget.W_x, -forget.W_h, -forget.b_x, forget.b_h.copy())
            gates["forget"] = Gate(np.zeros_like(forget.W_x), np.zeros_like(forget.W_h), np.zeros_like(forget.b_x),
                                   forget.b_h.copy())
            gates = {gate: gates[gate] for gate in _LSTM_GATES}
            if peepholes:
                peepholes = {"input": -peepholes["forget"], "forget": np.zeros_like(peepholes["forget"]),
                             "output": peepholes["output"]}
            if layer_norm:  # normalising -pre gives -(normalised pre): the coefficients stay, the bias is negated
                layer_norm = {"input": layer_norm["forget"], "forget": np.ones_like(layer_norm["forget"]),
                              "cell": layer_norm["cell"], "output": layer_norm["output"]}
                layer_norm = {gate: layer_norm[gate] for gate in _LSTM_GATES}
        projection = None
        if t[15] != -1:
            projection = f.constant(t[15], index, (out, hidden), "projection weights")
            if out >= hidden:
                raise self.refuse(index, name, f"projects {hidden} cells to {out} outputs (not fewer)")
        elif out != hidden:
            raise self.refuse(index, name, f"has {hidden} cells and {out} outputs without a projection")
        if t[16] != -1 and np.any(f.constant(t[16], index, (out,), "projection bias")):
            raise self.refuse(index, name, "adds a bias to its projection, which lstm_convert does not hold")
        return {"gates": gates, "peepholes": peepholes, "projection": projection, "hidden": hidden,
                "proj": out if projection is not None else 0, "input_forget": cifg, "layer_norm": layer_norm}

    def rnn_direction(self, index: int, name: str, t: Sequence[int], width: int) -> dict:
        f = self.f
        w_x = f.constant(t[0], index, None, "input weights")
        if w_x.ndim != 2 or w_x.shape[1] != width:
            raise self.refuse(index, name, f"has input weights of shape {w_x.shape}")
        hidden = w_x.shape[0]
        w_h = f.constant(t[1], index, (hidden, hidden), "recurrent weights")
        b = f.constant(t[2], index, (hidden,), "bias")
        return {"gates": {"hidden": Gate(w_x, w_h, b, np.zeros_like(b))}, "peepholes": {}, "projection": None,
                "hidden": hidden, "proj": 0}

    # -- recurrent operators into layers ------------------------------------------------------------------------

    def resolve(self, k: int) -> tuple[dict, str]:
        """A pending recurrent output, or one step of one: ``(unit, "sequence" / "last" / "first")``."""
        if k in self.steps:
            seq, which = self.steps[k]
            return self.pending[seq], which
        return self.pending[k], "sequence"

    def commit(self, k: int, index: int) -> None:
        unit, which = self.resolve(k)
        others = [u for u in self.pending.values() if u["index"] != unit["index"]]
        if others:
            raise self.refuse(others[0]["index"], others[0]["op"], "gives an output that the model does not use")
        if unit.get("half"):
            raise self.refuse(unit["index"], unit["op"], "gives two output sequences that are not merged")
        backward = unit["backward"]
        if which == "first" or unit.get("realigned"):
            raise self.refuse(unit["index"], unit["op"], "is read at a step that no Keras or PyTorch layer returns")
        layer = self.layer(unit, directions=len(unit["units"]), go_backwards=backward,
                           return_sequences=which == "sequence")
        self.layers.append(layer)
        self.chain = k
        self.pending.clear()
        self.steps.clear()
        self.reversed.clear()

    def bidirectional(self, index: int, inputs: Sequence[int], out: int, opts) -> None:
        axis = int(opts.scalar(0, "i", 0)) if opts is not None else 0
        if opts is not None and int(opts.scalar(1, "b", 0)):
            raise self.refuse(index, "CONCATENATION", "has a fused activation")
        (a, wa), (b, wb) = self.resolve(inputs[0]), self.resolve(inputs[1])
        rank = len(self.f.shape(inputs[0]))
        if axis not in (-1, rank - 1):
            raise self.refuse(index, "CONCATENATION", f"joins on axis {axis}, not the features")
        if a.get("half") and b.get("half") and a["index"] == b["index"]:  # a fused operator's two sequences
            pairs = {a["half"]: wa, b["half"]: wb}
            if [a["half"], b["half"]] != ["forward", "backward"] or pairs != {"forward": "last", "backward": "first"} \
                    and pairs != {"forward": "sequence", "backward": "sequence"}:
                raise self.refuse(index, "CONCATENATION", "joins the two directions in an order or at steps no "
                                  "Bidirectional layer has")
            unit = a
            layer = self.layer(unit, directions=2, go_backwards=False, return_sequences=wa == "sequence")
        else:
            if a["backward"] or not b["backward"] or a["base"] != b["base"] or a["kind"] != b["kind"] \
                    or len(a["units"]) != 1 or len(b["units"]) != 1 or a["act"] != b["act"] \
                    or a["cell_clip"] != b["cell_clip"]:
                raise self.refuse(index, "CONCATENATION", "does not join a forward layer and the backward layer of the "
                                  "same input, in that order")
            sequences = wa == "sequence" and wb == "sequence" and b.get("realigned") and not a.get("realigned")
            lasts = wa == "last" and wb == "last" and not b.get("realigned")
            if not (sequences or lasts):
                raise self.refuse(index, "CONCATENATION", "joins the two directions at steps no Bidirectional layer has")
            unit = {**a, "units": a["units"] + b["units"]}
            layer = self.layer(unit, directions=2, go_backwards=False, return_sequences=bool(sequences))
        self.layers.append(layer)
        self.chain = out
        self.pending.clear()
        self.steps.clear()
        self.reversed.clear()

    def layer(self, unit: dict, *, directions: int, go_backwards: bool, return_sequences: bool) -> RecurrentLayer:
        first = unit["units"][0]
        hidden, proj = first["hidden"], first["proj"]
        gates, peepholes, projections, layer_norm = {}, {}, {}, {}
        for direction, part in zip(DIRECTIONS[:directions], unit["units"]):
            for gate, value in part["gates"].items():
                gates[(0, direction, gate)] = value
            for gate, value in part["peepholes"].items():
                peepholes[(0, direction, gate)] = value
            for gate, value in part.get("layer_norm", {}).items():
                layer_norm[(0, direction, gate)] = value
            if part["projection"] is not None:
                projections[(0, direction)] = part["projection"]
        name = self.unique(unit["stem"] or unit["kind"], unit["kind"])
        return RecurrentLayer(
            kind=unit["kind"], input_size=unit["width"], hidden_size=hidden, gates=gates, directions=directions,
            activation=unit["act"], name=name, proj_size=proj, projections=projections, peepholes=peepholes,
            layer_norm=layer_norm, cell_clip=unit["cell_clip"], input_forget=first.get("input_forget", False), go_backwards=go_backwards, return_sequences=return_sequences or unit["cell"],
            cell=unit["cell"], config={"tflite": {"operator": unit["op"]}})


def _stem(name: str, suffixes: Sequence[str]) -> str:
    """The layer name a tensor written here carries (``lstm.forward.input.W_x``: ``lstm``), else empty."""
    for suffix in suffixes:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[:-len(suffix)]
    return ""


def input_dims(data: bytes | memoryview, where: str) -> list:
    f = _File(data, where)
    if len(f.inputs) != 1:
        return []
    k = f.inputs[0]
    signature = tuple(f.tensors[k].scalars(7, "i")) or f.shape(k)
    return [d if d > 0 else None for d in signature]


# -- writing ---------------------------------------------------------------------------------------------------


def check_layer(layer: Layer) -> None:
    """UnsupportedError unless the writer below computes ``layer`` exactly as the LiteRT interpreter runs it."""
    from ..canonical import Masking

    keep = "keep it in a safetensors archive"
    if isinstance(layer, Masking) or (isinstance(layer, Embedding) and layer.mask_zero):
        raise UnsupportedError(f"{layer.name}: a mask (padding steps skipped) has no TFLite operator; {keep}")
    if layer.dtype == "float64":
        raise UnsupportedError(f"{layer.name}: float64 weights; TFLite's operators run in float32, so a .tflite file "
                               f"would round them. {keep.capitalize()}")
    if isinstance(layer, Embedding):
        return
    if isinstance(layer, Dense):
        if layer.activation not in ("linear", "relu", "tanh", "sigmoid", "softmax"):
            raise UnsupportedError(f"{layer.name}: activation {layer.activation!r} has no TFLite operator here; {keep}")
        return
    if not isinstance(layer, RecurrentLayer):
        raise UnsupportedError(f"{layer.name}: a {layer.kind} layer has no TFLite operator that lstm_convert writes; "
                               f"{keep}")
    if layer.kind == "gru":
        raise UnsupportedError(f"{layer.name}: TFLite has no fused GRU operator (its converter unrolls a GRU into a "
                               f"loop of plain operators); {keep}, or in ONNX")
    what = []
    if layer.clip is not None:
        what.append(f"clip={layer.clip!r} (ONNX's clip of every gate's input)")
    if layer.backward or layer.go_backwards:
        what.append("a reverse direction alone (go_backwards)")
    if layer.return_state:
        what.append("return_state=True")
    if layer.stateful:  # the state tensors do carry over between invocations, but no test shows it exact
        what.append("stateful=True")
    if layer.merge_mode != "concat":
        what.append(f"merge_mode={layer.merge_mode!r}")
    if layer.layer_norm and layer.directions == 2:
        what.append("layer norm in both directions (BIDIRECTIONAL_SEQUENCE_LSTM has no layer-norm inputs)")
    if layer.cell and layer.kind != "lstm":
        what.append("a single-step cell (TFLite's one-step operator is an LSTM's)")
    if layer.recurrent_activation != "sigmoid":
        what.append(f"recurrent_activation={layer.recurrent_activation!r} (TFLite's gates are sigmoids)")
    if layer.activation not in _ACT_OUT:
        what.append(f"activation={layer.activation!r}")
    if layer.kind == "rnn" and layer.proj_size:
        what.append("a projection")
    if what:
        raise UnsupportedError(f"{layer.name}: {', '.join(what)} of this layer: no TFLite operator lstm_convert writes "
                               f"computes it; {keep}")


class _Graph:
    """Tensors, buffers and operators of one subgraph being written."""

    def __init__(self) -> None:
        self.tensors: list[fb.T] = []
        self.buffers: list[fb.T] = [fb.T({})]  # buffer 0: empty, the convention for tensors without data
        self.operators: list[fb.T] = []
        self.codes: list[int] = []

    def tensor(self, name: str, shape: Sequence[int], kind: int = _FLOAT32, data: bytes | None = None,
               variable: bool = False, signature: Sequence[int] | None = None) -> int:
        buffer = 0
        if data is not None:
            self.buffers.append(fb.T({0: fb.Blob(data)}))
            buffer = len(self.buffers) - 1
        self.tensors.append(fb.T({0: fb.Vec("i", shape), 1: ("b", kind), 2: ("I", buffer), 3: fb.Str(name),
                                  5: ("?", True) if variable else None,
                                  7: fb.Vec("i", signature) if signature is not None else None}))
        return len(self.tensors) - 1

    def const(self, name: str, array: np.ndarray) -> int:
        array = np.ascontiguousarray(array)
        kind = _INT32 if array.dtype.kind in "iu" else _FLOAT32
        data = array.astype("<i4" if kind == _INT32 else "<f4").tobytes()
        return self.tensor(name, array.shape, kind, data)

    def op(self, name: str, inputs: Sequence[int], outputs: Sequence[int], options: dict | None = None) -> None:
        code = OPS[name]
        if code not in self.codes:
            self.codes.append(code)
        self.operators.append(fb.T({0: ("I", self.codes.index(code)), 1: fb.Vec("i", inputs), 2: fb.Vec("i", outputs),
                                    3: ("B", _OPTIONS[name]) if options is not None else None,
                                    4: fb.T(options) if options is not None else None}))

    def model(self, inputs: Sequence[int], outputs: Sequence[int], description: str) -> bytearray:
        codes = [fb.T({0: ("b", min(code, 127)), 2: ("i", 1), 3: ("i", code)}) for code in self.codes]
        graph = fb.T({0: fb.Tables(self.tensors), 1: fb.Vec("i", inputs), 2: fb.Vec("i", outputs),
                      3: fb.Tables(self.operators), 4: fb.Str("main")})
        return fb.build(fb.T({0: ("I", 3), 1: fb.Tables(codes), 2: fb.Tables([graph]), 3: fb.Str(description),
                              4: fb.Tables(self.buffers)}), _IDENTIFIER)


def write_bytes(model: Model) -> bytearray:
    """The ``.tflite`` file of ``model`` (checked with :func:`check_model` first)."""
    from .. import __version__

    check_model(model)
    g = _Graph()
    batch = model.batch_size or 1
    first = model.layers[0]
    steps = model.input_shape[0] if model.input_shape and model.input_shape[0] else None
    if isinstance(first, Embedding):
        x = g.tensor("input", [batch, steps or 1], _INT32, signature=[batch, steps or -1])
    elif isinstance(first, RecurrentLayer) and first.cell:  # one step: (batch, features)
        x = g.tensor("input", [batch, first.input_size])
    else:
        x = g.tensor("input", [batch, steps or 1, first.input_size], signature=[batch, steps or -1, first.input_size])
    start, sequence = x, True
    for layer in model.layers:
        if isinstance(layer, Embedding):
            out = g.tensor(layer.name, [batch, steps or 1, layer.embedding_dim])
            g.op("GATHER", [g.const(f"{layer.name}.weight", layer.weight), x], [out], {0: ("i", 0), 1: ("i", 0)})
            x = out
        elif isinstance(layer, Dense):
            x = _dense(g, layer, x, batch, steps, sequence)
        elif layer.cell:
            x = _cell(g, layer, x, batch)
            sequence = False
        else:
            for unit in layer.unstack():
                x = _recurrent(g, unit, x, batch, steps)
            sequence = layer.return_sequences
    return g.model([start], [x], f"lstm_convert {__version__}")


def check_model(model: Model) -> None:
    for layer in model.layers:
        check_layer(layer)
    model.check_chain()
    for layer in model.layers[1:]:
        if isinstance(layer, Embedding):
            raise UnsupportedError(f"{layer.name}: an Embedding comes first in a TFLite model")


def _dense(g: _Graph, layer: Dense, x: int, batch: int, steps: int | None, sequence: bool) -> int:
    shape = [batch, steps or 1, layer.out_features] if sequence else [batch, layer.out_features]
    signature = [batch, steps or -1, layer.out_features] if sequence else None
    fused = _ACT_OUT.get(layer.activation, 0)
    after = {"sigmoid": "LOGISTIC", "softmax": "SOFTMAX"}.get(layer.activation)
    out = g.tensor(layer.name if after is None else f"{layer.name}.linear", shape, signature=signature)
    bias = g.const(f"{layer.name}.bias", layer.bias.astype(np.float32)) if layer.bias is not None else -1
    g.op("FULLY_CONNECTED", [x, g.const(f"{layer.name}.weight", layer.weight.astype(np.float32)), bias], [out],
         {0: ("b", fused), 1: ("b", 0), 2: ("?", sequence)})
    if after is None:
        return out
    final = g.tensor(layer.name, shape, signature=signature)
    g.op(after, [out], [final], {0: ("f", 1.0)} if after == "SOFTMAX" else None)
    return final


def _recurrent(g: _Graph, layer: RecurrentLayer, x: int, batch: int, steps: int | None) -> int:
    """One unstacked layer: a fused operator, then the last step when it returns no sequence."""
    out_size, hidden = layer.state_size, layer.hidden_size
    t = steps or 1
    both = layer.directions == 2
    seq_shape = [batch, t, layer.output_size]
    sig = [batch, steps or -1, layer.output_size]
    name = layer.name
    merge = not both or layer.return_sequences
    if layer.kind == "lstm":
        inputs = [x]
        states = []
        for direction in DIRECTIONS[:layer.directions]:
            inputs += _lstm_tensors(g, layer, direction)
            states += [g.tensor(f"{name}.{direction}.h", [batch, out_size], variable=True),
                       g.tensor(f"{name}.{direction}.c", [batch, hidden], variable=True)]
        clip = float(layer.cell_clip or 0.0)
        act = ("b", _ACT_OUT[layer.activation])
        if both:
            inputs += states + [-1] * 9
            options = {0: act, 1: ("f", clip), 2: ("f", 0.0), 3: ("?", merge), 4: ("?", False)}
            op = "BIDIRECTIONAL_SEQUENCE_LSTM"
        else:
            inputs += states + _norm_tensors(g, layer, "forward")
            options = {0: act, 1: ("f", clip), 2: ("f", 0.0), 3: ("?", False)}
            op = "UNIDIRECTIONAL_SEQUENCE_LSTM"
    else:
        inputs = [x]
        for direction in DIRECTIONS[:layer.directions]:
            gate = layer.gates[(0, direction, "hidden")]
            stem = f"{name}.{direction}"
            inputs += [g.const(f"{stem}.W_x", gate.W_x.astype(np.float32)),
                       g.const(f"{stem}.W_h", gate.W_h.astype(np.float32)),
                       g.const(f"{stem}.bias", _bias(gate)),
                       g.tensor(f"{stem}.h", [batch, hidden], variable=True)]
        act = ("b", _ACT_OUT[layer.activation])
        if both:
            inputs += [-1] * 3
            options = {0: ("?", False), 1: act, 2: ("?", merge)}
            op = "BIDIRECTIONAL_SEQUENCE_RNN"
        else:
            options = {0: ("?", False), 1: act}
            op = "UNIDIRECTIONAL_SEQUENCE_RNN"
    if merge:
        out = g.tensor(name if layer.return_sequences else f"{name}.sequence", seq_shape, signature=sig)
        outputs = [out]
    else:  # the last step of each direction: the forward one's at the end, the backward one's at the start
        half = [batch, t, out_size]
        outputs = [g.tensor(f"{name}.{d}.sequence", half, signature=[batch, steps or -1, out_size]) for d in DIRECTIONS]
    g.op(op, inputs, outputs, options)
    if layer.return_sequences:
        return outputs[0]
    if merge:
        return _step(g, outputs[0], -1, name, [batch, layer.output_size])
    ends = [_step(g, outputs[0], -1, f"{name}.forward.last", [batch, out_size]),
            _step(g, outputs[1], 0, f"{name}.reverse.last", [batch, out_size])]
    final = g.tensor(name, [batch, layer.output_size])
    g.op("CONCATENATION", ends, [final], {0: ("i", -1), 1: ("b", 0)})
    return final


def _cell(g: _Graph, layer: RecurrentLayer, x: int, batch: int) -> int:
    """A single-step LSTM cell: TFLite's LSTM operator on ``(batch, features)``."""
    inputs = [x, *_lstm_tensors(g, layer, "forward"),
              g.tensor(f"{layer.name}.forward.h", [batch, layer.state_size], variable=True),
              g.tensor(f"{layer.name}.forward.c", [batch, layer.hidden_size], variable=True),
              *_norm_tensors(g, layer, "forward")]
    out = g.tensor(layer.name, [batch, layer.state_size])
    g.op("LSTM", inputs, [out], {0: ("b", _ACT_OUT[layer.activation]), 1: ("f", float(layer.cell_clip or 0.0)),
                                 2: ("f", 0.0), 3: ("b", 0)})
    return out


def _step(g: _Graph, seq: int, which: int, name: str, shape: list[int]) -> int:
    """One time step of a sequence (``which`` -1: the last, 0: the first), the time axis removed."""
    begin = g.const(f"{name}.begin", np.array([0, which, 0], np.int32))
    end = g.const(f"{name}.end", np.array([0, 0 if which == -1 else 1, 0], np.int32))
    strides = g.const(f"{name}.strides", np.array([1, 1, 1], np.int32))
    out = g.tensor(name, shape)
    g.op("STRIDED_SLICE", [seq, begin, end, strides], [out],
         {0: ("i", 5), 1: ("i", 5), 2: ("i", 0), 3: ("i", 0), 4: ("i", 2)})
    return out


def _norm_tensors(g: _Graph, layer: RecurrentLayer, direction: str) -> list[int]:
    """Inputs 20-23 of an LSTM operator: each gate's layer-norm coefficients (none in a CIFG cell's input gate)."""
    if not layer.layer_norm:
        return [-1] * 4
    coefficients = {name: layer.layer_norm[(0, direction, name)] for name in _LSTM_GATES}
    if layer.input_forget:  # TFLite's forget gate is the canonical input gate negated: the same coefficients
        coefficients["forget"] = coefficients["input"]
    return [-1 if layer.input_forget and name == "input" else
            g.const(f"{layer.name}.{direction}.{name}.ln", coefficients[name].astype(np.float32))
            for name in _LSTM_GATES]


def _bias(gate: Gate) -> np.ndarray:
    """TFLite's one bias per gate: the canonical two summed (in float32, as the sum a float32 runtime makes)."""
    if gate.b_x is None:
        return np.zeros(gate.W_x.shape[0], np.float32)
    return (gate.b_x.astype(np.float32) + gate.b_h.astype(np.float32)).astype(np.float32)


def _lstm_tensors(g: _Graph, layer: RecurrentLayer, direction: str) -> list[int]:
    """Inputs 1-17 of an LSTM operator for one direction."""
    stem = f"{layer.name}.{direction}"
    gates = {name: layer.gates[(0, direction, name)] for name in _LSTM_GATES}
    peepholes = {name: layer.peepholes[(0, direction, name)] for name in PEEPHOLE_GATES} if layer.peepholes else {}
    if layer.input_forget:  # coupled gates, f = 1 - i: TFLite's CIFG cell, whose forget gate is i's negated
        i = gates["input"]
        gates["forget"] = Gate(-i.W_x, -i.W_h, -i.b_x if i.b_x is not None else None,
                               -i.b_h if i.b_h is not None else None)
        if peepholes:
            peepholes["forget"] = -peepholes["input"]
    names = [name for name in _LSTM_GATES if not (layer.input_forget and name == "input")]
    out = [g.const(f"{stem}.{name}.W_x", gates[name].W_x.astype(np.float32)) if name in names else -1
           for name in _LSTM_GATES]
    out += [g.const(f"{stem}.{name}.W_h", gates[name].W_h.astype(np.float32)) if name in names else -1
            for name in _LSTM_GATES]
    if peepholes:
        out += [g.const(f"{stem}.{name}.p", peepholes[name].astype(np.float32)) if name in names else -1
                for name in PEEPHOLE_GATES]
    else:
        out += [-1, -1, -1]
    out += [g.const(f"{stem}.{name}.bias", _bias(gates[name])) if name in names else -1 for name in _LSTM_GATES]
    if layer.proj_size:
        out += [g.const(f"{stem}.projection", layer.projections[(0, direction)].astype(np.float32)), -1]
    else:
        out += [-1, -1]
    return out


def header_ok(head: bytes) -> bool:
    """Whether ``head`` starts a TFLite FlatBuffer: a root offset, then the identifier ``TFL3``."""
    if len(head) < 8 or head[4:8] != _IDENTIFIER:
        return False
    (root,) = struct.unpack_from("<I", head, 0)
    return 8 <= root


def run(data: bytes, x: np.ndarray) -> dict[str, Any]:
    """The file run in the LiteRT interpreter on ``x`` from zero states (its variables reset before each
    invocation), one sample at a time where the file's batch is 1: ``{"output": array, "tensors": {name:
    array}}`` with each tensor the writer names after a layer (the state tensors hold the final states)."""
    import warnings

    interpreter_cls = _interpreter()
    if interpreter_cls is None:
        raise UnsupportedError("running a .tflite file needs the LiteRT interpreter: pip install ai-edge-litert")
    with warnings.catch_warnings():  # preserving every tensor is meant for debugging: it is what verify does
        warnings.simplefilter("ignore")
        # The builtin kernels alone: the default XNNPACK delegate announces itself on stderr and fuses operators.
        resolver = getattr(getattr(interpreter_cls, "__module__", None) and __import__(
            interpreter_cls.__module__, fromlist=["OpResolverType"]), "OpResolverType", None)
        extra = {"experimental_op_resolver_type": resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES} if resolver else {}
        interpreter = interpreter_cls(model_content=bytes(data), experimental_preserve_all_tensors=True, **extra)
    detail = interpreter.get_input_details()[0]
    x = np.asarray(x)
    batch = int(detail["shape"][0])
    chunks = [x] if x.shape[0] == batch else ([x[i:i + 1] for i in range(x.shape[0])] if batch == 1 else None)
    if chunks is None:
        raise UnsupportedError(f"the .tflite file takes batches of {batch}, not {x.shape[0]}")
    outs: list[np.ndarray] = []
    named: dict[str, list[np.ndarray]] = {}
    by_name = None
    for chunk in chunks:
        interpreter.resize_tensor_input(detail["index"], list(chunk.shape), strict=False)
        interpreter.allocate_tensors()
        interpreter.reset_all_variables()
        if by_name is None:
            by_name = {d["name"]: d["index"] for d in interpreter.get_tensor_details()}
        interpreter.set_tensor(detail["index"], chunk.astype(detail["dtype"]))
        interpreter.invoke()
        outs.append(np.array(interpreter.get_tensor(interpreter.get_output_details()[0]["index"])))
        for name, k in by_name.items():
            try:
                named.setdefault(name, []).append(np.array(interpreter.get_tensor(k)))
            except ValueError:
                continue
    tensors = {}
    for name, parts in named.items():
        try:
            tensors[name] = np.concatenate(parts) if len(parts) > 1 else parts[0]
        except ValueError:
            continue
    return {"output": np.concatenate(outs) if len(outs) > 1 else outs[0], "tensors": tensors}


def runner() -> str:
    """The name of the interpreter :func:`run` uses: LiteRT's, else TensorFlow's own TFLite interpreter."""
    import importlib.util

    return "LiteRT" if importlib.util.find_spec("ai_edge_litert") is not None else "TensorFlow Lite"


def _interpreter():
    try:
        from ai_edge_litert.interpreter import Interpreter
        return Interpreter
    except ImportError:
        pass
    try:
        import tensorflow as tf
        return tf.lite.Interpreter
    except ImportError:
        return None
