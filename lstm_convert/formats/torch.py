"""PyTorch state dicts: ``.pt`` / ``.pth`` (``torch.save``) and ``.safetensors`` in PyTorch's layout
(:mod:`lstm_convert.adapters.torch_files`), run through PyTorch modules. Two biases per gate.

A state dict keeps weights, not what a model computes around them (return_sequences, masks, reversed
input): such layers are ``weights`` unless the module file of ``--module`` is written beside it, whose
``Model`` computes the whole model (:mod:`lstm_convert.adapters.torch_module`). lstm_convert records
what the model computes in the files it writes, so that ``verify`` and ``convert`` read it back.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import (
    Format,
    LayerVerdict,
    Note,
    ReadOptions,
    Run,
    head,
    is_safetensors,
    is_zip,
    parsing,
    refused,
    zip_errors,
    zip_names,
)

if TYPE_CHECKING:
    import numpy as np

# torch.load's own errors are turned into FormatError by the reader; these are what zipfile (the model
# record of a .pt) and the safetensors header raise on damaged bytes.
PARSER_ERRORS = (OSError, EOFError, ValueError, RecursionError)


def _recognise(path: Path, head: bytes) -> bool:
    if is_safetensors(path, head):
        return True
    if is_zip(head):  # torch.save's zip: <folder>/data.pkl
        return any(name.endswith("/data.pkl") for name in zip_names(path))
    return head[:1] == b"\x80"  # the legacy format starts with a pickle


def _read(path: Path, options: ReadOptions):
    from ..adapters import torch_files

    if is_safetensors(path, head(path) or b""):  # no zip: zipfile is not even imported (a megabyte resident)
        with parsing(path, "PyTorch state dict", PARSER_ERRORS):
            return torch_files.read_safetensors(path, kinds=options.kinds, header_only=options.header_only,
                                                only=options.only, inventory=options.inventory)
    with parsing(path, "PyTorch state dict", PARSER_ERRORS + zip_errors()):
        return torch_files.read_pt(path, kinds=options.kinds, only=options.only, inventory=options.inventory)


def _write(model, path: Path, before_rename) -> None:
    from ..adapters import torch_files

    if path.suffix.lower() == ".safetensors":
        torch_files.write_safetensors(model, path, before_rename=before_rename)
    else:
        torch_files.write_pt(model, path, before_rename=before_rename)


def check_layer(layer, module: bool) -> LayerVerdict:
    """Exact when PyTorch holds the weights and (``module``) the module file computes the layer;
    ``weights`` when the state dict keeps the weights but not the layer's semantics."""
    from ..adapters import torch as torch_adapter
    from ..adapters import torch_module
    from ..canonical import Model
    from ..errors import UnsupportedError

    try:
        torch_adapter.check_representable(layer)
    except UnsupportedError as exc:
        return refused(exc)
    if module or layer.semantics():
        try:
            torch_module.check(Model((layer,)))
        except UnsupportedError as exc:
            verdict = refused(exc)
            if layer.semantics():
                return LayerVerdict("impossible", f"the state dict keeps the weights, but the module cannot: "
                                    f"{verdict.reason}", error=exc)
            return verdict
    needs = () if module else tuple(layer.semantics())
    return LayerVerdict("weights" if needs else "exact", needs=needs)


def check_model(model, module: bool) -> None:
    from ..adapters import torch_module
    from ..adapters.torch import state_chunks

    state_chunks(model)  # refuses what no PyTorch module holds; joins nothing
    if module:
        torch_module.check(model)


def _module_source(model) -> str:
    from ..adapters import torch_module

    return torch_module.source(model, origin=model.source.get("framework", ""))


def load_state(path: Path) -> dict[str, Any]:
    """The file's state dict as torch tensors (by its content, as it was read: a renamed file too)."""
    import torch

    if is_safetensors(path, head(path) or b""):
        from safetensors.torch import load_file

        return load_file(path)
    import zipfile

    from .. import _torchscript

    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            scripted = _torchscript.is_torchscript(archive.namelist())
        if scripted:  # its parameters as data, as it was read; its code is never run
            from ..adapters.torch import from_numpy

            return {key: from_numpy(torch, array) for key, array in _torchscript.read(path)[0].items()}
    return torch.load(path, map_location="cpu", weights_only=True)


def run_state(path: Path, model, calls: list, state: Callable[[], Mapping[str, Any]]) -> Run | None:
    """The model computed by the module that :mod:`~lstm_convert.adapters.torch_module` generates, filled
    from ``state()`` with ``load_state_dict(strict=True)``; None without PyTorch."""
    if importlib.util.find_spec("torch") is None or len(calls) > 1:
        return None
    import torch

    from ..adapters import torch_module
    from ..errors import UnsupportedError

    try:
        module = torch_module.build(model)
    except UnsupportedError as exc:
        return Run(None, "", (str(exc),))
    prefixes = [layer.config.get("torch", {}).get("prefix", f"{layer.name}.") for layer in model.layers]
    tensors = {k: v for k, v in state().items() if not model.config.get("selected") or k.startswith(tuple(prefixes))}
    module.load_state_dict(tensors, strict=True)  # every key of the (selected) modules, no other
    with torch.no_grad():
        out = module(torch.from_numpy(calls[0])).float().numpy()
    notes = []
    if model.semantics():
        said = f"{path.name}: its model record says {'; '.join(model.semantics())}"
        notes.append(Note(f"{said}: run as the module that module= writes",
                          cli=f"{said}: run as the module of --module"))
    if model.source.get("model_record") != "lstm_convert":
        notes.append(f"{path.name}: a state dict without lstm_convert's model record says nothing of what is "
                     "computed around its weights: its layers run one after the other over whole sequences")
    return Run(out, "torch", tuple(notes))


def run_state_layers(model, x: np.ndarray, states: dict, state: Callable[[], Mapping[str, Any]]) -> list | str | None:
    """Layer by layer through PyTorch modules that ``load_state_dict(strict=True)`` fills from ``state()``."""
    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    from ..activations import ACTIVATIONS
    from ..adapters.torch import new_module
    from ..canonical import AROUND, Dense, Embedding, Masking
    from ..errors import UnsupportedError

    tensors = state()
    out = []
    tensor = torch.from_numpy(x)
    try:
        for layer in model.layers:
            if isinstance(layer, Masking):
                out.append((tensor.float().numpy(), None))
                continue
            prefix = layer.config.get("torch", {}).get("prefix", f"{layer.name}.")
            own = {k[len(prefix):]: v for k, v in tensors.items()
                   if k.startswith(prefix) and "." not in k[len(prefix):]}
            if isinstance(layer, AROUND):
                with torch.no_grad():
                    tensor = _around(torch, layer, own, tensor)
                out.append((tensor.float().numpy(), None))
                continue
            module = new_module(torch, layer, batch_first=True)
            module.load_state_dict(own, strict=True)
            dtype = next(module.parameters()).dtype
            with torch.no_grad():
                if isinstance(layer, Embedding):
                    tensor = module(tensor)
                    out.append((tensor.float().numpy(), None))
                elif isinstance(layer, Dense):
                    tensor = module(tensor.to(dtype))
                    if layer.activation != "linear":  # what the file records; a plain state dict has none
                        values = ACTIVATIONS[layer.activation](tensor.double().numpy())
                        tensor = torch.from_numpy(values).to(dtype)
                    out.append((tensor.float().numpy(), None))
                else:
                    initial = [torch.from_numpy(s).to(dtype) for s in states[layer.name]]
                    tensor, finals = _recurrent(torch, module, layer, tensor.to(dtype), initial)
                    out.append((tensor.float().numpy(), tuple(f.float().numpy() for f in finals)))
    except UnsupportedError as exc:
        return str(exc)
    return out


def _around(torch, layer, own: Mapping[str, Any], x: Any) -> Any:
    """One of the layers around the recurrent ones through torch's own functions, on batch-major ``x``, from
    the state dict's tensors ``own`` (checked against what the layer holds)."""
    from ..activations import ACTIVATIONS
    from ..adapters.torch import layer_state_arrays
    from ..errors import FormatError

    expected = set(layer_state_arrays(layer))
    if set(own) != expected:
        raise FormatError(f"{layer.name}: the state dict holds {sorted(own)}, expected {sorted(expected)}")
    functional = torch.nn.functional
    if layer.kind == "activation":
        return torch.from_numpy(ACTIVATIONS[layer.activation](x.double().numpy()))
    if layer.kind == "flatten":
        return x.reshape(x.shape[0], -1)
    if layer.kind == "pooling":
        return x.amax(1) if layer.mode == "max" else x.mean(1)
    if layer.kind == "layer_norm":
        return functional.layer_norm(x.to(own["weight"].dtype) if own else x, (layer.size,), own.get("weight"),
                                     own.get("bias"), eps=layer.epsilon)
    if layer.kind == "batch_norm":
        dtype = own["running_mean"].dtype
        channels = x.to(dtype).transpose(1, 2) if x.ndim == 3 else x.to(dtype)
        y = functional.batch_norm(channels, own["running_mean"], own["running_var"], own.get("weight"),
                                  own.get("bias"), training=False, eps=layer.epsilon)
        return y.transpose(1, 2) if x.ndim == 3 else y
    weight = own["weight"]
    pads = layer.pads(x.shape[1])
    y = functional.conv1d(functional.pad(x.to(weight.dtype).transpose(1, 2), pads), weight, own.get("bias"),
                          stride=layer.stride, dilation=layer.dilation, groups=layer.groups).transpose(1, 2)
    return y if layer.activation == "linear" else torch.from_numpy(ACTIVATIONS[layer.activation](y.double().numpy()))


def _recurrent(torch, module: Any, layer, x: Any, initial: list) -> tuple:
    lstm = layer.kind == "lstm"
    if not layer.cell:
        seq, finals = module(x, tuple(initial) if lstm else initial[0])
        return seq, (finals if lstm else (finals,))
    state = tuple(s[0] for s in initial) if lstm else initial[0][0]
    outputs = []
    for t in range(x.shape[1]):  # a cell takes one step at a time
        state = module(x[:, t], state)
        outputs.append(state[0] if lstm else state)
    finals = tuple(s[None] for s in state) if lstm else (state[None],)
    return torch.stack(outputs, 1), finals


def _notes(model, module: bool) -> list[str]:
    semantics = model.semantics()
    if not semantics or module:
        return []
    kept = f"the state dict keeps every weight exactly, but not what the model computes around them " \
        f"({'; '.join(semantics)})"
    recorded = "(lstm_convert records it in the file, so verify and convert read it back)"
    return [Note(f"{kept}; pass module= for a module file that does {recorded}",
                 cli=f"{kept}; pass --module FILE.py for a module that does {recorded}")]


FORMAT = Format(
    name="torch", title="PyTorch state dict", suffixes=(".pt", ".pth", ".safetensors"), layouts="torch",
    holds="a state dict: `.pt` read as data (tensors and dicts, without PyTorch; anything else only through "
          "`torch.load(weights_only=True)`) and written in `torch.save`'s format without PyTorch; "
          "`.safetensors` in PyTorch's layout, for `safetensors.torch.load_file`",
    recognise=_recognise, read=_read, write=_write, check_layer=check_layer, check_model=check_model,
    run=lambda path, model, calls: run_state(path, model, calls, lambda: load_state(path)),
    run_layers=lambda path, model, x, states: run_state_layers(model, x, states, lambda: load_state(path)),
    module_source=_module_source, notes=_notes,
    runtime="PyTorch: the module `--module` writes, `load_state_dict(strict=True)`",
)
