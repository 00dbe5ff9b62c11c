"""Keras 3 ``.keras`` files: read (:mod:`lstm_convert.adapters.keras_files`) and written
(:mod:`lstm_convert.adapters.keras_data`) without Keras, run through Keras. Keras' layouts: one summed
bias per gate (a GRU keeps two rows)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import Format, LayerVerdict, ReadOptions, Run, is_zip, judged, parsing, zip_errors, zip_names

if TYPE_CHECKING:
    import numpy as np

# What zipfile, zlib, h5py and json raise on damaged bytes. h5py turns HDF5's errors into OSError (a
# damaged file), KeyError (an object its index names but cannot open), TypeError (a dtype it cannot
# read) and RuntimeError (a damaged symbol table or link).
PARSER_ERRORS = (OSError, EOFError, ValueError, KeyError, TypeError, RuntimeError, NotImplementedError,
                 RecursionError)


def _recognise(path: Path, head: bytes) -> bool:
    return is_zip(head) and "config.json" in zip_names(path)


def _read(path: Path, options: ReadOptions):
    from ..adapters.keras_files import read_keras

    with parsing(path, "Keras file", PARSER_ERRORS + zip_errors()):
        return read_keras(path, only=options.only, inventory=options.inventory)


def _write(model, path: Path, before_rename) -> None:
    from ..adapters.keras_files import write_keras

    write_keras(model, path, before_rename=before_rename)


def check_layer(layer, module: bool) -> LayerVerdict:
    from ..adapters.keras import check_representable

    return judged(check_representable, layer)


def check_model(model, module: bool) -> None:
    from ..adapters.keras import check_chain
    from ..adapters.keras import check_model as check_keras_model

    check_chain(model)
    check_keras_model(model)


def load(path: Path, *, keras3: bool = True, model=None) -> tuple[Any, str, str]:
    """A Keras model loaded from ``path`` as a function of NumPy input, the loader's name, or why none
    could load it: Keras 3 (with ``keras3``), then tf_keras (legacy ``.h5``, ``.keras`` from tf.keras 2).
    When ``model`` holds a selection of the file's layers (``config["selected"]``), the function is those
    layers of the loaded model, one after the other (masks included: they are joined in a Sequential)."""
    import numpy as np

    why = []
    if keras3 and importlib.util.find_spec("keras") is not None:
        import keras

        try:
            loaded = _part(keras, keras.saving.load_model(path, compile=False), model)
            return (lambda x: keras.ops.convert_to_numpy(loaded(x))), "keras", ""
        except Exception as exc:  # noqa: BLE001 - Keras raises many types for files it cannot load
            why.append(f"Keras 3 cannot load it ({_first_line(exc)})")
    if importlib.util.find_spec("tf_keras") is not None:
        import tf_keras

        try:
            loaded = _part(tf_keras, tf_keras.models.load_model(path, compile=False), model)
            return (lambda x: np.asarray(loaded(x))), "tf_keras", ""
        except Exception as exc:  # noqa: BLE001 - as above
            why.append(f"tf_keras cannot load it ({_first_line(exc)})")
    elif not keras3:
        why.append("tf_keras, which loads it, is not installed")
    return None, "", "; ".join(why) or "no Keras is installed"


def _part(keras, loaded: Any, model) -> Any:
    """The loaded model, or the selected layers of it (``model.config["selected"]``) in a new Sequential."""
    if model is None or not model.config.get("selected"):
        return loaded
    from ..canonical import Embedding

    names = [layer.name for layer in model.layers]
    start = [layer.name for layer in loaded.layers].index(names[0])
    end = [layer.name for layer in loaded.layers].index(names[-1])
    first = model.layers[0]
    shape = (None,) if isinstance(first, Embedding) else (None, first.input_size)
    inputs = keras.Input(shape=shape, dtype="int32" if isinstance(first, Embedding) else "float32")
    return keras.Sequential([inputs, *loaded.layers[start:end + 1]])


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:120] if text else type(exc).__name__


def run(path: Path, model, calls: list, *, keras3: bool = True) -> Run | None:
    """The model, or its selected layers, on each input of ``calls`` in turn, by Keras 3 (``keras3``) or tf_keras."""
    import numpy as np

    loaded, runner, why = load(path, keras3=keras3, model=model)
    if loaded is None:
        return Run(None, "", (why,))
    return Run(np.concatenate([np.asarray(loaded(x)) for x in calls]), runner)


def _run_layers(path: Path, model, x: np.ndarray, states: dict) -> list | str | None:
    """Layer by layer through the model that ``keras.saving.load_model`` builds from the file."""
    import numpy as np

    if importlib.util.find_spec("keras") is None:
        return None
    import keras

    from ..adapters.keras import INFERENCE_IDENTITY

    try:
        loaded = keras.saving.load_model(path, compile=False)
    except Exception:  # noqa: BLE001 - Keras raises many types for files it cannot load
        return "Keras 3 cannot load it, so its layers are not run one by one"
    out = []
    wanted = {layer.name for layer in model.layers}
    for layer in loaded.layers:
        if type(layer).__name__ in ("InputLayer",) + INFERENCE_IDENTITY or layer.name not in wanted:
            continue
        if layer.name not in states:
            x = keras.ops.convert_to_numpy(layer(x))
            out.append((x, None))
            continue
        config = layer.get_config()
        bidirectional = isinstance(layer, keras.layers.Bidirectional)
        for inner in ([config["layer"]["config"], config["backward_layer"]["config"]] if bidirectional else [config]):
            inner.update(return_sequences=True, return_state=True, stateful=False)
        config["name"] = f"{layer.name}_verify"
        runner = type(layer).from_config(config)
        runner.build((None, None, x.shape[-1]))
        runner.set_weights(layer.get_weights())
        initial = states[layer.name]
        directions = 2 if bidirectional else 1
        flat = [s[d] for d in range(directions) for s in initial]  # Keras: forward states, then backward
        result = [keras.ops.convert_to_numpy(t) for t in runner(x, initial_state=flat)]
        x, rest = result[0], result[1:]
        count = len(initial)
        out.append((x, tuple(np.stack([rest[d * count + i] for d in range(directions)]) for i in range(count))))
    return out


FORMAT = Format(
    name="keras", title="Keras 3 model", suffixes=(".keras",), layouts="keras",
    holds="a Keras 3 model: read and written as data with zipfile, json and h5py (no Keras needed)",
    recognise=_recognise, read=_read, write=_write, check_layer=check_layer, check_model=check_model,
    run=run, run_layers=_run_layers, runs_stateful=True,
    runtime="`keras.saving.load_model` (tf_keras for a `.keras` from tf.keras 2)",
)
