"""A runnable PyTorch module for a whole canonical :class:`Model`, as standalone Python source.

A state dict holds weights only; what the model computes (a recurrent layer that returns only its
last step, masks, reversed input, merge modes, Dense activations) lives in its ``forward``. This
module writes that ``forward`` as Python source that needs only torch, so that the same code is
what ``lc.to_torch(model)`` runs and what ``lstm-convert convert SRC DST.pt --module DST.py`` writes:

    from DST import Model
    m = Model()
    m.load_state_dict(torch.load("DST.pt", weights_only=True))
    y = m(x)          # x: (batch, time, features) float, or (batch, time) integer indices

The module's ``state_dict()`` keys are exactly the ``.pt`` file's; it starts in ``eval()`` mode, so that
batch normalisation uses its running statistics (call ``train()`` to train it). Recurrent modules are
``batch_first=True`` (the model takes batch-major input) and start from zero states, as a Keras model
does. Masks follow Keras: at a masked step the states carry over and the output is the previous
step's, or zeros (``zero_output_for_mask``; a Bidirectional layer returning sequences). Masked inputs
are packed (valid steps first, in order) and run through the recurrent module itself, so masks in the
middle of a sequence are exact too.
"""

from __future__ import annotations

import re
from typing import Any

from .. import __version__
from ..canonical import (
    Activation,
    BatchNorm,
    Conv1D,
    Dense,
    Embedding,
    Flatten,
    LayerNorm,
    Masking,
    Model,
    Pooling,
    RecurrentLayer,
)
from ..errors import UnsupportedError
from . import torch as torch_adapter

# Canonical activation -> a torch expression of ``x``.
_ACTIVATIONS = {
    "linear": "x", "relu": "torch.relu(x)", "sigmoid": "torch.sigmoid(x)", "tanh": "torch.tanh(x)",
    "softmax": "torch.softmax(x, dim=-1)", "softplus": "nn.functional.softplus(x)",
    "softsign": "nn.functional.softsign(x)", "elu": "nn.functional.elu(x)", "silu": "nn.functional.silu(x)",
    "hard_sigmoid_keras3": "torch.clamp(x / 6 + 0.5, 0, 1)", "hard_sigmoid_keras2": "torch.clamp(0.2 * x + 0.5, 0, 1)",
}

_HELPERS = '''
def _place(root, name, module):
    """Register ``module`` under the dotted ``name`` (containers made as needed); an empty name makes the
    module's parameters the root's own, as in a bare module's state dict."""
    if not name:
        for key, parameter in module.named_parameters(recurse=False):
            root.register_parameter(key, parameter)
        root.__dict__.setdefault("_bare", []).append(module)
        return
    *parents, last = name.split(".")
    holder = root
    for part in parents:
        if part not in holder._modules:
            holder.add_module(part, nn.Module())
        holder = holder._modules[part]
    holder.add_module(last, module)


def _get(root, name):
    return root.__dict__["_bare"][0] if not name else root.get_submodule(name)


def _recurrent(rnn, x, mask, *, size, directions, cell, go_backwards, merge, sequences, zeros):
    """Run ``rnn`` (batch_first) over ``x`` (batch, time, features) from zero states, skipping masked steps
    as Keras does; return the sequence or, with ``sequences=False``, the last step."""
    if go_backwards:
        x = x.flip(1)
        mask = None if mask is None else mask.flip(1)
    if cell:
        return _cell(rnn, x, mask, size=size, sequences=sequences, zeros=zeros)
    steps = x.shape[1]
    if mask is None:
        y, _ = rnn(x)
        parts = [y[..., d * size:(d + 1) * size] for d in range(directions)]
        if not sequences:
            parts = [parts[0][:, -1]] + [part[:, 0] for part in parts[1:]]
    else:
        counts = mask.sum(1)
        done = mask.long().cumsum(1)  # valid steps so far
        # Valid steps first, in order: a permutation of the time axis, row by row.
        order = torch.where(mask, done - 1, counts[:, None] + (~mask).long().cumsum(1) - 1)
        packed_x = torch.zeros_like(x).scatter(1, order[..., None].expand_as(x), x)
        packed = pack_padded_sequence(packed_x, counts.clamp(min=1).cpu(), batch_first=True,
                                      enforce_sorted=False)
        y, _ = rnn(packed)
        y, _ = pad_packed_sequence(y, batch_first=True, total_length=steps)
        y = y * (counts > 0)[:, None, None].to(y.dtype)  # a row with no valid step gives zeros
        forward = y[..., :size]
        if sequences:  # the last valid output so far at every step, or zeros before the first
            seen = (done - 1).clamp(min=0)[..., None].expand(-1, -1, size)
            out = torch.where((done > 0)[..., None], forward.gather(1, seen), torch.zeros_like(forward[:, :1]))
            parts = [torch.where(mask[..., None], out, torch.zeros_like(out)) if zeros else out]
            if directions == 2:
                at = order[..., None].expand(-1, -1, size)
                backward = y[..., size:].gather(1, at)
                parts.append(torch.where(mask[..., None], backward, torch.zeros_like(backward)))
        else:
            last = (counts - 1).clamp(min=0)[:, None, None].expand(-1, 1, size)
            out = forward.gather(1, last)[:, 0]
            if zeros:  # zero_output_for_mask: a masked last step gives zeros
                out = torch.where(mask[:, -1:], out, torch.zeros_like(out))
            parts = [out] + ([y[:, 0, size:]] if directions == 2 else [])
    if merge == "concat":
        return torch.cat(parts, dim=-1)
    if merge == "sum":
        return parts[0] + parts[1]
    if merge == "mul":
        return parts[0] * parts[1]
    return (parts[0] + parts[1]) / 2


def _same(x, kernel, stride, dilation):
    """Keras' padding='same' with a stride: the zeros (before, after) for this length, the odd one after."""
    steps = x.shape[1]
    total = max((-(-steps // stride) - 1) * stride + (kernel - 1) * dilation + 1 - steps, 0)
    return total // 2, total - total // 2


def _conv(conv, x, pads):
    """``conv`` (an nn.Conv1d without padding of its own) on batch-major ``x``, with ``pads`` zeros before and
    after the sequence."""
    x = nn.functional.pad(x.transpose(1, 2), pads)
    return conv(x).transpose(1, 2)


def _cell(cell, x, mask, *, size, sequences, zeros):
    """A single-step cell over the sequence, one step at a time, with Keras' masking."""
    batch = x.shape[0]
    lstm = isinstance(cell, nn.LSTMCell)
    h = x.new_zeros(batch, size)
    state = (h, h.clone()) if lstm else h
    out = h
    outputs = []
    for t in range(x.shape[1]):
        new = cell(x[:, t], state)
        if mask is None:
            state = new
            out = new[0] if lstm else new
        else:
            keep = mask[:, t, None]
            if lstm:
                state = tuple(torch.where(keep, n, o) for n, o in zip(new, state))
            else:
                state = torch.where(keep, new, state)
            out = torch.where(keep, new[0] if lstm else new, torch.zeros_like(out) if zeros else out)
        outputs.append(out)
    return torch.stack(outputs, 1) if sequences else out
'''


def check(model: Model) -> None:
    """Raise UnsupportedError unless the generated module computes ``model`` exactly."""
    for layer in model.layers:
        torch_adapter.check_representable(layer)
        if isinstance(layer, RecurrentLayer):
            if layer.stateful:
                raise UnsupportedError(f"{layer.name}: stateful=True carries the final states of one call into the "
                                       "next, which the generated module does not do; keep it in Keras or the "
                                       "archive, or set stateful=false")
            if layer.return_state:
                raise UnsupportedError(f"{layer.name}: return_state=True (the final states as extra model outputs) "
                                       "is not written to a PyTorch module; set return_state=false")
    model.check_chain()


def source(model: Model, *, origin: str = "") -> str:
    """Python source of a module ``Model`` that computes ``model``; needs only torch."""
    check(model)
    first = model.layers[0]
    takes = "(batch, time) integer indices" if isinstance(first, Embedding) else \
        f"(batch, time, {first.input_size}) floating-point features"
    init, body = [], ["        mask = None"]
    sequence = True
    for layer in model.layers:
        prefix = layer.config.get("torch", {}).get("prefix", f"{layer.name}.")
        where = repr(prefix[:-1] if prefix.endswith(".") else prefix)
        if isinstance(layer, Masking):
            body += [f"        mask = (x != {layer.mask_value!r}).any(-1)  # {layer.name}",
                     "        x = x * mask[..., None].to(x.dtype)"]
            continue
        if layer.count_params():  # a module with weights: nn.Linear, nn.LSTM, nn.Conv1d, ...
            init.append(f"        _place(self, {where}, {_module_text(layer)})")
        if isinstance(layer, Embedding):
            if layer.mask_zero:
                body.append("        mask = x != 0")
            body.append(f"        x = _get(self, {where})(x)")
        elif isinstance(layer, Dense):
            body.append(f"        x = _get(self, {where})(x.to({_dtype(layer)}))")
            if layer.activation != "linear":
                body.append(f"        x = {_ACTIVATIONS[layer.activation]}")
        elif not isinstance(layer, RecurrentLayer):
            body += _around(layer, where, sequence)
            if isinstance(layer, (Flatten, Pooling)):
                sequence = False
        else:
            body.append(
                f"        x = _recurrent(_get(self, {where}), x.to({_dtype(layer)}), mask, size={layer.state_size}, "
                f"directions={layer.directions}, cell={layer.cell}, go_backwards={layer.go_backwards}, "
                f"merge={layer.merge_mode!r}, sequences={layer.return_sequences}, "
                f"zeros={layer.zero_output_for_mask})")
            if not layer.return_sequences:
                body.append("        mask = None")
                sequence = False
    returns = _output_shape(model)
    origin = re.sub(r"[^A-Za-z0-9_.+ -]", "", origin)[:60]  # it comes from a file: nothing that could end the docstring
    lines = [
        f'"""Generated by lstm_convert {__version__}{" from " + origin if origin else ""}; needs only torch.',
        "",
        f"Model()(x) takes {takes} and returns {returns}.",
        "",
        "    m = Model()",
        "    m.load_state_dict(torch.load(PATH_OF_THE_PT_FILE, weights_only=True))",
        '"""',
        "",
        "import torch",
        "from torch import nn",
        "from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence",
        _HELPERS,
        "",
        "class Model(nn.Module):",
        "    def __init__(self):",
        "        super().__init__()",
        *init,
        "        self.eval()",
        "",
        "    def forward(self, x):",
        *body,
        "        return x",
        "",
    ]
    return "\n".join(lines)


def _around(layer: Any, where: str, sequence: bool) -> list[str]:
    """The lines of ``forward`` for one of the layers around the recurrent ones, as the reference computes it."""
    module = f"_get(self, {where})"
    comment = f"  # {layer.name}"
    if isinstance(layer, Activation):
        return [f"        x = {_ACTIVATIONS[layer.activation]}{comment}"]
    if isinstance(layer, Flatten):
        return [f"        x = x.reshape(x.shape[0], -1){comment}", "        mask = None"]
    if isinstance(layer, Pooling):
        if layer.mode == "max":
            return [f"        x = x.amax(1){comment}", "        mask = None"]
        return [f"        if mask is None:{comment}", "            x = x.mean(1)", "        else:",
                "            weights = mask[..., None].to(x.dtype)",
                "            x = (x * weights).sum(1) / weights.sum(1)", "        mask = None"]
    if isinstance(layer, LayerNorm):
        if not layer.count_params():
            return [f"        x = nn.functional.layer_norm(x, ({layer.size},), eps={layer.epsilon!r}){comment}"]
        return [f"        x = {module}(x.to({_dtype(layer)}))"]
    if isinstance(layer, BatchNorm):
        call = f"{module}(x.to({_dtype(layer)}).transpose(1, 2)).transpose(1, 2)" if sequence else \
            f"{module}(x.to({_dtype(layer)}))"
        return [f"        x = {call}"]
    # Zeros alike at both ends are the nn.Conv1d's own padding (so that the module reads back as it is);
    # others are added in forward.
    pads = (f"_same(x, {layer.kernel_size}, {layer.stride}, {layer.dilation})" if layer.padding == "same"
            else repr((0, 0) if _symmetric(layer) else tuple(layer.padding)))
    lines = [f"        x = _conv({module}, x.to({_dtype(layer)}), {pads})", "        mask = None"]
    if layer.activation != "linear":
        lines.insert(1, f"        x = {_ACTIVATIONS[layer.activation]}")
    return lines


def _symmetric(layer: Conv1D) -> bool:
    return layer.padding != "same" and layer.padding[0] == layer.padding[1]


def _module_text(layer: Any) -> str:
    """The constructor call of the layer's PyTorch module (built from numbers, flags and known names only)."""
    dtype = _dtype(layer)
    if isinstance(layer, Conv1D):
        padding = layer.padding[0] if _symmetric(layer) else 0
        return (f"nn.Conv1d({layer.in_channels}, {layer.out_channels}, {layer.kernel_size}, stride={layer.stride}, "
                f"padding={padding}, dilation={layer.dilation}, groups={layer.groups}, bias={layer.bias is not None}, "
                f"dtype={dtype})")
    if isinstance(layer, BatchNorm):
        return (f"nn.BatchNorm1d({layer.size}, eps={layer.epsilon!r}, momentum={layer.momentum!r}, "
                f"affine={layer.scale is not None or layer.offset is not None}, dtype={dtype})")
    if isinstance(layer, LayerNorm):
        return f"nn.LayerNorm({layer.size}, eps={layer.epsilon!r}, bias={layer.offset is not None}, dtype={dtype})"
    if isinstance(layer, Dense):
        return f"nn.Linear({layer.in_features}, {layer.out_features}, bias={layer.bias is not None}, dtype={dtype})"
    if isinstance(layer, Embedding):
        return f"nn.Embedding({layer.num_embeddings}, {layer.embedding_dim}, dtype={dtype})"
    name = torch_adapter.module_name(layer)
    options = f"bias={layer.bias}, dtype={dtype}"
    if layer.kind == "rnn":
        options += f", nonlinearity={layer.activation!r}"
    if layer.cell:
        return f"nn.{name}({layer.input_size}, {layer.hidden_size}, {options})"
    if layer.proj_size:
        options += f", proj_size={layer.proj_size}"
    return (f"nn.{name}({layer.input_size}, {layer.hidden_size}, num_layers={layer.num_layers}, "
            f"bidirectional={layer.directions == 2}, batch_first=True, {options})")


def _dtype(layer: Any) -> str:
    return f"torch.{layer.dtype}"


def _output_shape(model: Model) -> str:
    last = model.layers[-1]
    sequence = True
    for layer in model.layers:
        if (isinstance(layer, RecurrentLayer) and not layer.return_sequences) or isinstance(layer, (Flatten, Pooling)):
            sequence = False
    return f"(batch, time, {last.output_size})" if sequence else f"(batch, {last.output_size})"


def build(model: Model) -> Any:
    """A new ``Model`` module from :func:`source` (not yet holding the weights)."""
    namespace: dict[str, Any] = {"__name__": "lstm_convert_generated"}
    exec(compile(source(model), "<lstm_convert generated module>", "exec"), namespace)  # noqa: S102 - our own code
    return namespace["Model"]()
