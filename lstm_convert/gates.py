"""The one place that knows each framework's gate order, orientation, bias storage, peephole order and
activation slots.

Canonical gates are named, never numbered. A framework stacks the gates of a
layer into one tensor per role; a :class:`Layout` says in which order, along
which axis, how the two biases are stored, in which order the peepholes are and
which activation each slot holds. Nothing else in the package hard-codes an
order or slices a stacked tensor: adapters call :func:`split` / :func:`join`,
:func:`split_bias` / :func:`join_bias`, :func:`split_peepholes` /
:func:`join_peepholes` and :func:`activations`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ._lazy import concatenate, np, stack, zeros_like

from .errors import ShapeError, UnsupportedError

# Canonical gate names per cell kind, in the order the reference equations use them.
GATES: dict[str, tuple[str, ...]] = {
    "lstm": ("input", "forget", "cell", "output"),
    "gru": ("reset", "update", "candidate"),
    "rnn": ("hidden",),
}


# How a framework stores the two canonical biases of a gate (``b_x`` input-side, ``b_h`` recurrent-side):
SUMMED = "summed"  # one vector holding b_x + b_h (Keras LSTM, SimpleRNN; a GRU with reset_after=False)
SEPARATE = "separate"  # two tensors, input-side then recurrent-side (PyTorch bias_ih, bias_hh)
ROWS = "rows"  # one (2, G*H) tensor: row 0 input-side, row 1 recurrent-side (Keras GRU, reset_after=True)
HALVES = "halves"  # one (2*G*H,) vector: the input-side half, then the recurrent-side half (ONNX B)


@dataclass(frozen=True)
class Layout:
    """How one framework stores the stacked gate tensors of one kind of layer.

    ``order`` lists the canonical gates in the order of the framework's blocks,
    ``symbols`` the framework's own letters for them. A weight matrix is
    ``(input, G*H)`` when ``gate_axis`` is 1 (Keras: inputs times kernel) and
    ``(G*H, input)`` when it is 0 (PyTorch: kernel times inputs). ``bias`` says how
    the two canonical biases are stored (:data:`SUMMED`, :data:`SEPARATE`,
    :data:`ROWS`, :data:`HALVES`). ``peepholes`` is the order of an LSTM's
    peephole vectors where the framework has them; ``activation_slots`` names the
    layer attribute each entry of the framework's activation list takes; with
    ``direction_axis`` every tensor has a leading axis of directions (ONNX); with ``numbered`` each
    stacked layer and direction has tensors of its own, named ``<tensor>_l<k>[_reverse]`` (PyTorch); with
    ``row_major_blocks`` each gate's ``(input, H)`` block of a matrix holds the bytes of the canonical
    ``(H, input)`` matrix in row-major order, reinterpreted in place rather than transposed (cuDNN).
    """

    framework: str
    kind: str
    order: tuple[str, ...]
    symbols: tuple[str, ...]
    gate_axis: int
    bias: str
    tensors: tuple[str, ...]
    peepholes: tuple[str, ...] = ()
    activation_slots: tuple[str, ...] = ()
    direction_axis: bool = False
    numbered: bool = False
    row_major_blocks: bool = False


# Keras 3 LSTM: kernel (input, 4H), recurrent_kernel (H, 4H), bias (4H,); blocks i, f, c, o.
KERAS_LSTM = Layout(
    "keras", "lstm", ("input", "forget", "cell", "output"), ("i", "f", "c", "o"),
    gate_axis=1, bias=SUMMED, tensors=("kernel", "recurrent_kernel", "bias"),
)
# PyTorch nn.LSTM: weight_ih (4H, input), weight_hh (4H, H), bias_ih and bias_hh (4H,); blocks i, f, g, o.
TORCH_LSTM = Layout(
    "torch", "lstm", ("input", "forget", "cell", "output"), ("i", "f", "g", "o"),
    gate_axis=0, bias=SEPARATE, tensors=("weight_ih", "weight_hh", "bias_ih", "bias_hh"), numbered=True,
)

# Keras 3 GRU: kernel (input, 3H), recurrent_kernel (H, 3H); blocks z, r, h. The bias is (2, 3H),
# row 0 input-side and row 1 recurrent-side, with reset_after=True, and (3H,) without.
KERAS_GRU = Layout(
    "keras", "gru", ("update", "reset", "candidate"), ("z", "r", "h"),
    gate_axis=1, bias=ROWS, tensors=("kernel", "recurrent_kernel", "bias"),
)
# PyTorch nn.GRU: weight_ih (3H, input), weight_hh (3H, H), bias_ih and bias_hh (3H,); blocks r, z, n.
TORCH_GRU = Layout(
    "torch", "gru", ("reset", "update", "candidate"), ("r", "z", "n"),
    gate_axis=0, bias=SEPARATE, tensors=("weight_ih", "weight_hh", "bias_ih", "bias_hh"), numbered=True,
)
# Keras SimpleRNN: kernel (input, H), recurrent_kernel (H, H), bias (H,).
KERAS_RNN = Layout("keras", "rnn", ("hidden",), ("h",), gate_axis=1, bias=SUMMED,
                   tensors=("kernel", "recurrent_kernel", "bias"))
# PyTorch nn.RNN: weight_ih (H, input), weight_hh (H, H), bias_ih and bias_hh (H,).
TORCH_RNN = Layout("torch", "rnn", ("hidden",), ("h",), gate_axis=0, bias=SEPARATE,
                   tensors=("weight_ih", "weight_hh", "bias_ih", "bias_hh"), numbered=True)

# ONNX LSTM: W [D, 4H, input], R [D, 4H, H], B [D, 8H] = [Wb; Rb]; blocks i, o, f, c; P [D, 3H] = i, o, f;
# activations f (the gates), g (the cell input), h (the output).
ONNX_LSTM = Layout("onnx", "lstm", ("input", "output", "forget", "cell"), ("i", "o", "f", "c"),
                   gate_axis=0, bias=HALVES, tensors=("W", "R", "B"), peepholes=("input", "output", "forget"),
                   activation_slots=("recurrent_activation", "activation", "activation"), direction_axis=True)
# ONNX GRU: W [D, 3H, input], R [D, 3H, H], B [D, 6H]; blocks z, r, h (as Keras); activations f, g.
ONNX_GRU = Layout("onnx", "gru", ("update", "reset", "candidate"), ("z", "r", "h"),
                  gate_axis=0, bias=HALVES, tensors=("W", "R", "B"),
                  activation_slots=("recurrent_activation", "activation"), direction_axis=True)
# ONNX RNN: W [D, H, input], R [D, H, H], B [D, 2H]; one activation.
ONNX_RNN = Layout("onnx", "rnn", ("hidden",), ("h",), gate_axis=0, bias=HALVES, tensors=("W", "R", "B"),
                  activation_slots=("activation",), direction_axis=True)

# CuDNNLSTM / CuDNNGRU of tf.keras 2 and Keras 2 (read only): Keras' tensor names, shapes and gate order
# (i, f, c, o; z, r, h), but every gate's block of ``kernel`` (input, G*H) and ``recurrent_kernel`` (H, G*H)
# holds cuDNN's row-major (H, input) or (H, H) matrix, and the bias keeps both sides, (2*G*H,): the
# input-side half, then the recurrent-side half. The GRU computes reset after the product.
CUDNN_LSTM = Layout("cudnn", "lstm", ("input", "forget", "cell", "output"), ("i", "f", "c", "o"),
                    gate_axis=1, bias=HALVES, tensors=("kernel", "recurrent_kernel", "bias"), row_major_blocks=True)
CUDNN_GRU = Layout("cudnn", "gru", ("update", "reset", "candidate"), ("z", "r", "h"),
                   gate_axis=1, bias=HALVES, tensors=("kernel", "recurrent_kernel", "bias"), row_major_blocks=True)

# TensorFlow 1's cells (read only, from checkpoints): one ``kernel [in + H, G*H]`` multiplying
# ``concat([x, h])``, gates as column blocks; the LSTM's in the order i, j (the candidate), f, o. Its GRU keeps
# r, u in ``gates/kernel`` and the candidate apart in ``candidate/kernel [in + H, H]``: TF_GRU_GATES is the
# layout of ``gates/kernel`` alone, so it is not one of LAYOUTS.
TF_LSTM = Layout("tensorflow", "lstm", ("input", "cell", "forget", "output"), ("i", "j", "f", "o"), gate_axis=1,
                 bias=SUMMED, tensors=("kernel", "bias"))
TF_GRU_GATES = Layout("tensorflow", "gru", ("reset", "update"), ("r", "u"), gate_axis=1, bias=SUMMED,
                      tensors=("gates/kernel", "gates/bias"))

# Flax NNX's cells of two Linear parts (OptimizedLSTMCell, GRUCell, SimpleCell): dense_i kernel (input, G*H),
# dense_h kernel (H, G*H), the gates as column blocks; one bias, on dense_h for the LSTM and on dense_i for
# the others (NNX's GRU has no recurrent-side candidate bias). Flax linen keeps one Dense per gate and side.
NNX_LSTM = Layout("nnx", "lstm", ("input", "forget", "cell", "output"), ("i", "f", "g", "o"), gate_axis=1,
                  bias=SUMMED, tensors=("dense_i", "dense_h"))
NNX_GRU = Layout("nnx", "gru", ("reset", "update", "candidate"), ("r", "z", "n"), gate_axis=1, bias=SUMMED,
                 tensors=("dense_i", "dense_h"))
NNX_RNN = Layout("nnx", "rnn", ("hidden",), ("h",), gate_axis=1, bias=SUMMED, tensors=("dense_i", "dense_h"))

# Equinox's LSTMCell and GRUCell: PyTorch's gate blocks (rows of weight_ih (G*H, input) and weight_hh (G*H, H)),
# one bias (G*H,) on the input side, and for the GRU bias_n (H,), the candidate's recurrent-side bias.
EQX_LSTM = Layout("equinox", "lstm", ("input", "forget", "cell", "output"), ("i", "f", "g", "o"), gate_axis=0,
                  bias=SUMMED, tensors=("weight_ih", "weight_hh", "bias"))
EQX_GRU = Layout("equinox", "gru", ("reset", "update", "candidate"), ("r", "z", "n"), gate_axis=0, bias=SUMMED,
                 tensors=("weight_ih", "weight_hh", "bias", "bias_n"))

# Haiku's hk.LSTM: one Linear over concat([x, h]), w (input + H, 4H) and b (4H,), blocks i, g, f, o, and
# sigmoid(f + 1): the +1 is the layer's forget_bias. hk.GRU: w_i (input, 3H), w_h (H, 3H), b (3H,), blocks z, r,
# a, reset before the product and h' = (1 - z) h + z a: its z is the canonical update gate negated.
HAIKU_LSTM = Layout("haiku", "lstm", ("input", "cell", "forget", "output"), ("i", "g", "f", "o"), gate_axis=1,
                    bias=SUMMED, tensors=("linear/w", "linear/b"))
HAIKU_GRU = Layout("haiku", "gru", ("update", "reset", "candidate"), ("z", "r", "a"), gate_axis=1, bias=SUMMED,
                   tensors=("w_i", "w_h", "b"))

LAYOUTS: dict[tuple[str, str], Layout] = {
    (lay.framework, lay.kind): lay for lay in (KERAS_LSTM, TORCH_LSTM, ONNX_LSTM, CUDNN_LSTM, TF_LSTM, NNX_LSTM,
                                               EQX_LSTM, HAIKU_LSTM, KERAS_GRU, TORCH_GRU, ONNX_GRU, CUDNN_GRU,
                                               NNX_GRU, EQX_GRU, HAIKU_GRU, KERAS_RNN, TORCH_RNN, ONNX_RNN, NNX_RNN)
}

# Keras 1 kept one tensor per gate and role, named ``<layer>_<W|U|b>_<letter>`` (W input kernel (input, H),
# U recurrent kernel (H, H), b bias (H,)), listed in this gate order; with ``consume_less='gpu'`` (and for
# SimpleRNN) it stacked them as ``W``, ``U``, ``b`` in Keras 2's order (:data:`KERAS_LSTM`, :data:`KERAS_GRU`).
# Its GRU computes reset before the product (Keras 2's ``reset_after=False``).
KERAS1_GATES: dict[str, tuple[tuple[str, str], ...]] = {
    "lstm": (("i", "input"), ("c", "cell"), ("f", "forget"), ("o", "output")),
    "gru": (("z", "update"), ("r", "reset"), ("h", "candidate")),
}


def layout(framework: str, kind: str) -> Layout:
    """The layout of ``kind`` layers in ``framework``, or UnsupportedError."""
    try:
        return LAYOUTS[(framework, kind)]
    except KeyError:
        raise UnsupportedError(f"{framework} has no {kind} layout known to lstm_convert") from None


def split(lay: Layout, stacked: np.ndarray, hidden: int, name: str) -> dict[str, np.ndarray]:
    """Cut a framework's stacked tensor into canonical per-gate blocks.

    Matrices come back as ``(H, fan_in)`` and biases as ``(H,)``, whatever the
    framework's orientation. The blocks are views of ``stacked`` (copies for :attr:`Layout.row_major_blocks`).
    """
    axis = lay.gate_axis if stacked.ndim == 2 else 0
    expected = len(lay.order) * hidden
    if stacked.ndim not in (1, 2) or stacked.shape[axis] != expected:
        want = f"{expected} along axis {axis}" if stacked.ndim in (1, 2) else "a 1-D or 2-D tensor"
        raise ShapeError(f"{name}: expected {want} ({len(lay.order)} gates x {hidden} units), "
                         f"got shape {tuple(stacked.shape)}")
    blocks = {}
    for k, gate in enumerate(lay.order):
        span = slice(k * hidden, (k + 1) * hidden)
        if axis == 0:
            blocks[gate] = stacked[span]
        elif lay.row_major_blocks:  # the block's bytes, in row-major order, are the (H, fan_in) matrix
            blocks[gate] = np.ascontiguousarray(stacked[:, span]).reshape(hidden, -1)
        else:
            blocks[gate] = stacked[:, span].T
    return blocks


def join(lay: Layout, blocks: Mapping[str, np.ndarray]) -> np.ndarray:
    """Stack canonical per-gate blocks into the framework's tensor (a new array)."""
    ordered = [blocks[gate] for gate in lay.order]
    if ordered[0].ndim == 1 or lay.gate_axis == 0:
        return concatenate(ordered, axis=0)
    if lay.row_major_blocks:
        return concatenate([np.ascontiguousarray(b).reshape(b.shape[::-1]) for b in ordered], axis=1)
    return concatenate([b.T for b in ordered], axis=1)


def join_chunks(lay: Layout, blocks: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """The framework's tensor as pieces to write one after the other, without joining them in memory.

    Blocks stacked along the first axis (PyTorch, ONNX, every bias) are written as they are; a Keras
    kernel, whose gates are columns, is joined first.
    """
    ordered = [blocks[gate] for gate in lay.order]
    if ordered[0].ndim == 1 or lay.gate_axis == 0:
        return ordered
    return [join(lay, blocks)]


def bias_storage(lay: Layout, reset_after: bool = True) -> str:
    """How ``lay`` stores a layer's biases: a Keras GRU without reset_after keeps one (summed) vector."""
    return SUMMED if lay.bias == ROWS and not reset_after else lay.bias


def split_bias(lay: Layout, stored: Sequence[np.ndarray], hidden: int, name: str, *,
               reset_after: bool = True) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The canonical per-gate ``(b_x, b_h)`` blocks of a framework's stored bias: ``stored`` is the two
    tensors of a :data:`SEPARATE` layout, else the one tensor (a summed bias becomes ``b_x``, with zeros
    in ``b_h``)."""
    storage = bias_storage(lay, reset_after)
    size = len(lay.order) * hidden
    if storage == SEPARATE:
        b_x, b_h = stored
    else:
        (one,) = stored
        if storage == ROWS:
            if one.ndim != 2 or one.shape[0] != 2:
                raise ShapeError(f"{name}: expected two rows (input-side, recurrent-side), a (2, {size}) bias, "
                                 f"got shape {tuple(one.shape)}")
            b_x, b_h = one[0], one[1]
        elif storage == HALVES:
            if one.ndim != 1 or one.shape[0] != 2 * size:
                raise ShapeError(f"{name}: expected {2 * size} values (input-side then recurrent-side halves of "
                                 f"{len(lay.order)} gates x {hidden} units), got shape {tuple(one.shape)}")
            b_x, b_h = one[:size], one[size:]
        else:
            b_x, b_h = one, zeros_like(one)
    return split(lay, b_x, hidden, name), split(lay, b_h, hidden, name)


def join_bias(lay: Layout, b_x: Mapping[str, np.ndarray], b_h: Mapping[str, np.ndarray], *,
              reset_after: bool = True) -> list[np.ndarray]:
    """The framework's stored bias from canonical per-gate blocks: two tensors for a :data:`SEPARATE`
    layout, else one. A summed bias adds the two in float64 and rounds once to the weights' dtype."""
    storage = bias_storage(lay, reset_after)
    if storage == SUMMED:
        return [join(lay, {g: (b_x[g].astype(np.float64) + b_h[g].astype(np.float64)).astype(b_x[g].dtype)
                           for g in lay.order})]
    pair = [join(lay, b_x), join(lay, b_h)]
    if storage == SEPARATE:
        return pair
    return [stack(pair)] if storage == ROWS else [concatenate(pair)]


def bias_vectors(lay: Layout, reset_after: bool = True) -> int:
    """How many bias vectors per gate ``lay`` keeps (for parameter counts)."""
    return 1 if bias_storage(lay, reset_after) == SUMMED else 2


def split_peepholes(lay: Layout, stored: np.ndarray, hidden: int, name: str) -> dict[str, np.ndarray]:
    """The per-gate peephole vectors of a framework's stacked peephole tensor, in :attr:`Layout.peepholes` order."""
    if not lay.peepholes:
        raise UnsupportedError(f"{name}: {lay.framework} {lay.kind} layers have no peepholes")
    size = len(lay.peepholes) * hidden
    if stored.ndim != 1 or stored.shape[0] != size:
        raise ShapeError(f"{name}: expected {size} peephole values ({', '.join(lay.peepholes)} x {hidden} units), "
                         f"got shape {tuple(stored.shape)}")
    return {gate: stored[k * hidden:(k + 1) * hidden] for k, gate in enumerate(lay.peepholes)}


def join_peepholes(lay: Layout, vectors: Mapping[str, np.ndarray]) -> np.ndarray:
    return concatenate([vectors[gate] for gate in lay.peepholes])


def activations(lay: Layout, layer: object) -> list[str]:
    """The layer's activations in the order of the framework's activation list."""
    return [getattr(layer, attr) for attr in lay.activation_slots]


def activation_attributes(lay: Layout, names: Sequence[str]) -> dict[str, str]:
    """The layer attributes (``activation``, ``recurrent_activation``) of a framework's activation list;
    UnsupportedError if one attribute would get two different activations."""
    out: dict[str, str] = {}
    for attr, name in zip(lay.activation_slots, names, strict=True):
        if out.setdefault(attr, name) != name:
            raise UnsupportedError(f"activations {list(names)}: the slots of {attr} hold {out[attr]!r} and {name!r}; "
                                   "one layer has one of each")
    return out


def param_count(layer: object, framework: str) -> int:
    """A recurrent layer's parameters as ``framework`` counts them: its weight matrices, its peepholes
    where the framework has them, and the bias vectors its layout keeps."""
    lay = layout(framework, layer.kind)
    weights = sum(a.size for name, a in layer.tensors() if not name.endswith(("b_x", "b_h", ".p")))
    weights += sum(a.size for a in layer.peepholes.values()) if lay.peepholes else 0
    biases = bias_vectors(lay, layer.reset_after) if layer.bias else 0
    return weights + biases * layer.hidden_size * len(layer.gates)


def places(lay: Layout, layer: object, index: int, direction: str, gate: str) -> dict[str, str]:
    """Where one gate of ``layer`` (stacked layer ``index``, ``direction``) sits in the framework's
    tensors, by tensor name: ``{"weight_ih_l0": "[2:4]", ...}``."""
    hidden = layer.hidden_size
    k = lay.order.index(gate)
    span = f"{k * hidden}:{(k + 1) * hidden}"
    storage = bias_storage(lay, layer.reset_after)
    lead = f"{layer.direction_names.index(direction)}, " if lay.direction_axis else ""
    numbered = lay.numbered and not getattr(layer, "cell", False)  # a single-step cell's tensors have no suffix
    suffix = f"_l{index}{'_reverse' if direction == 'reverse' else ''}" if numbered else ""
    where = {}
    for i, tensor in enumerate(lay.tensors if layer.bias else lay.tensors[:2]):
        key = f"{tensor}{suffix}"
        if i < 2:
            where[key] = f"[:, {span}]" if lay.gate_axis == 1 else f"[{lead}{span}]"
        elif storage == HALVES:
            size = len(lay.order) * hidden
            where[key] = f"[{lead}{span}] + [{lead}{k * hidden + size}:{(k + 1) * hidden + size}]"
        else:
            where[key] = f"[:, {span}]" if storage == ROWS else f"[{lead}{span}]"
    return where


def slice_text(lay: Layout, gate: str) -> str:
    """Where ``gate`` sits in the framework's stacked tensors, e.g. ``[:, 2H:3H]``."""
    k = lay.order.index(gate)
    span = f"{_mul(k)}:{_mul(k + 1)}"
    return f"[:, {span}]" if lay.gate_axis == 1 else f"[{span}]"


def _mul(k: int) -> str:
    return "0" if k == 0 else ("H" if k == 1 else f"{k}H")


# TFLite keeps one tensor per gate, as operator inputs: an LSTM's input-to-gate weights are inputs 1-4 and its
# recurrent-to-gate weights 5-8 in this order (then peepholes 9-11 for i, f, o, biases 12-15, layer-norm
# coefficients 20-23); a simple RNN's input weights are input 1. TFLite has no fused GRU.
TFLITE_GATES: dict[str, tuple[str, ...]] = {"lstm": ("input", "forget", "cell", "output"), "rnn": ("hidden",)}


def gate_table(kind: str = "lstm") -> str:
    """The README's gate-order table, written from the layouts above (and TFLite's per-gate inputs)."""
    lays = [lay for lay in LAYOUTS.values() if lay.kind == kind]
    tflite = TFLITE_GATES.get(kind)
    head = "| canonical gate | " + " | ".join(
        f"{_TITLES[lay.framework]} `{lay.tensors[0]}`" for lay in lays) + (" | TFLite (one tensor per gate)" if tflite
                                                                             else "") + " |"
    rule = "|---" * (len(lays) + 1 + bool(tflite)) + "|"

    def own(gate: str) -> str:
        if not tflite:
            return ""
        name = "input_weights" if kind == "rnn" else f"input_to_{gate}_weights"
        return f" | `{name}` (input {tflite.index(gate) + 1})"

    rows = [
        f"| {gate} | " + " | ".join(
            f"{lay.symbols[lay.order.index(gate)]} `{slice_text(lay, gate)}`" for lay in lays) + own(gate) + " |"
        for gate in GATES[kind]
    ]
    return "\n".join([head, rule, *rows])


_TITLES = {"keras": "Keras 3", "torch": "PyTorch", "onnx": "ONNX", "cudnn": "CuDNN (Keras 2, read)",
           "tensorflow": "TensorFlow 1 (read)", "nnx": "Flax NNX", "equinox": "Equinox",
           "haiku": "Haiku"}
