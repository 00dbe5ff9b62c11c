"""Examining weights: statistics gate by gate against NumPy computed here, the difference between two files
(itself, a converted copy, a copy with one gate changed), pictures rendered for real, and HTML in notebooks."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

import lstm_convert as lc
from lstm_convert import files
from lstm_convert.cli import main
from lstm_convert.diff import diff
from lstm_convert.stats import layer_stats, model_stats, spectral_norm, tensor_stats

from conftest import random_torch_lstm


def _numpy_stats(array):
    values = np.asarray(array, np.float64).reshape(-1)
    finite = values[np.isfinite(values)]
    return {"mean": finite.mean(), "std": finite.std(), "min": finite.min(), "max": finite.max(),
            "l2": np.sqrt((finite ** 2).sum()), "zeros": float((values == 0).mean()),
            "nan": int(np.isnan(values).sum()), "inf": int(np.isinf(values).sum())}


def test_tensor_statistics_are_numpys_in_one_pass_over_pieces(rng):
    big = rng.normal(loc=3.0, scale=0.01, size=(2_500_001,)).astype(np.float32)  # three pieces, a large mean
    big[[5, 1_500_000]] = [np.nan, np.inf]
    big[10:20] = 0.0
    ours = tensor_stats(big)
    want = _numpy_stats(big)
    assert ours["shape"] == [2_500_001] and ours["nan"] == 1 and ours["inf"] == 1
    for key in ("mean", "std", "min", "max", "l2", "zeros"):
        assert ours[key] == pytest.approx(want[key], rel=1e-9, abs=1e-12), key
    empty = tensor_stats(np.zeros((0, 3), np.float32))
    assert empty["mean"] is None and empty["l2"] == 0.0 and empty["zeros"] == 0.0


@pytest.mark.parametrize("shape", [(7, 7), (300, 300), (260, 400), (1024, 1024), "orthogonal", "rank one"])
def test_spectral_norm_is_the_largest_singular_value(shape, rng):
    if shape == "orthogonal":  # every singular value the same: the iteration stops at once, exactly
        w = np.linalg.qr(rng.normal(size=(512, 512)))[0] * 3.0
    elif shape == "rank one":
        w = np.outer(rng.normal(size=400), rng.normal(size=300))
    else:
        w = rng.normal(size=shape)
    assert spectral_norm(w) == pytest.approx(np.linalg.norm(w, 2), rel=1e-9)
    assert math.isnan(spectral_norm(np.full((3, 3), np.nan)))


def test_layer_statistics_name_every_gate_and_role(rng):
    layer = lc.from_torch(random_torch_lstm(rng, input_size=5, hidden_size=3, num_layers=2, bidirectional=True))
    stats = layer_stats(layer)
    assert [row["tensor"] for row in stats["tensors"]] == [name for name, _ in layer.tensors()]
    for row, (name, array) in zip(stats["tensors"], layer.tensors()):
        want = _numpy_stats(array)
        assert row["shape"] == list(array.shape)
        for key in want:
            assert row[key] == pytest.approx(want[key], rel=1e-9, abs=1e-12), (name, key)
    keys = [(g["layer"], g["direction"], g["gate"]) for g in stats["gates"]]
    assert keys == layer.keys()
    for gate in stats["gates"]:
        g = layer.gates[(gate["layer"], gate["direction"], gate["gate"])]
        applied = g.b_x.astype(np.float64) + g.b_h
        assert gate["bias"]["mean"] == pytest.approx(applied.mean()) and gate["bias"]["max"] == pytest.approx(applied.max())
        assert gate["spectral_norm_W_h"] == pytest.approx(np.linalg.norm(g.W_h.astype(np.float64), 2), rel=1e-9)


def test_inspect_stats_prints_and_json_holds_them(tmp_path, capsys, rng):
    import jsonschema

    layer = lc.from_torch(random_torch_lstm(rng, input_size=5, hidden_size=3))
    path = tmp_path / "m.safetensors"
    files.write(lc.Model((layer,)), path)
    assert main(["inspect", str(path), "--stats"]) == 0
    out = capsys.readouterr().out
    assert "statistics of lstm" in out and "spectral norm of W_h" in out
    assert out.count("  forget  ") >= 5  # four roles, and the gate's bias and spectral norm
    assert main(["inspect", str(path), "--stats", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    schema = json.loads((Path(lc.__file__).parent / "schemas.json").read_text())
    jsonschema.validate(info, {**schema["inspect"], "definitions": schema["definitions"]})
    assert info["stats"] == json.loads(json.dumps(model_stats(files.read(path))))


def _seed(tmp_path):
    assert main(["demo", "--out", str(tmp_path / "demo"), "-q"]) == 0
    return tmp_path / "demo" / "seed.keras"


def test_diff_of_a_file_with_itself_and_with_converted_copies(tmp_path, capsys):
    seed = _seed(tmp_path)
    capsys.readouterr()
    assert main(["diff", str(seed), str(seed)]) == 0
    assert capsys.readouterr().out.rstrip().endswith("identical: all 18 tensors bit for bit, and what the layers compute")
    for target in ("seed.pt", "seed.onnx", "seed.safetensors", "seed.tflite"):
        assert main(["convert", str(seed), str(tmp_path / target), "-q"]) == 0
        capsys.readouterr()
        assert main(["diff", str(seed), str(tmp_path / target)]) == 0, target
        assert "identical" in capsys.readouterr().out.splitlines()[-1], target


def test_diff_names_the_one_gate_that_changed(tmp_path, capsys):
    seed = _seed(tmp_path)
    model = files.read(seed)
    lstm = model.layers[0]
    key = (0, "forward", "forget")
    gates = dict(lstm.gates)
    w_h = gates[key].W_h.copy()
    w_h[1, 0] += 0.25
    gates[key] = dataclasses.replace(gates[key], W_h=w_h)
    changed = dataclasses.replace(model, layers=(dataclasses.replace(lstm, gates=gates), *model.layers[1:]))
    files.write(changed, tmp_path / "changed.safetensors")
    result = diff(model, files.read(tmp_path / "changed.safetensors"))
    differing = [row for row in result.tensors if row["status"] == "differs"]
    assert [row["tensor"] for row in differing] == ["lstm.l0.forward.forget.W_h"]
    assert differing[0]["max_abs"] == pytest.approx(0.25, rel=1e-6) and not result.identical
    assert not result.settings and not result.structure
    capsys.readouterr()
    assert main(["diff", str(seed), str(tmp_path / "changed.safetensors")]) == 1
    out = capsys.readouterr().out
    assert out.rstrip().endswith("DIFFERENT: 1 tensors differ (lstm.l0.forward.forget.W_h)")
    assert main(["diff", str(seed), str(tmp_path / "changed.safetensors"), "--atol", "0.3"]) == 0
    capsys.readouterr()
    assert main(["diff", str(seed), str(tmp_path / "changed.safetensors"), "--json"]) == 1
    info = json.loads(capsys.readouterr().out)
    assert not info["identical"] and [r["tensor"] for r in info["tensors"] if r["status"] == "differs"] == \
        ["lstm.l0.forward.forget.W_h"]


def test_diff_names_settings_and_structure_that_differ(tmp_path, rng):
    layer = lc.from_torch(random_torch_lstm(rng, input_size=5, hidden_size=3))
    a = lc.Model((layer,))
    b = lc.Model((dataclasses.replace(layer, return_sequences=False, cell_clip=3.0),))
    result = diff(a, b)
    assert {(row["layer"], row["key"]) for row in result.settings} == {("lstm", "return_sequences"),
                                                                       ("lstm", "cell_clip"), ("lstm", "cell_features")}
    assert all(row["status"] == "bit-identical" for row in result.tensors) and not result.identical
    dense = lc.Dense(name="head", weight=rng.normal(size=(2, 3)).astype(np.float32))
    other = diff(a, lc.Model((layer, dense)))
    assert other.structure and not other.identical
    nan = dict(layer.gates)
    w = nan[(0, "forward", "input")].W_x.copy()
    w[0, 0] = np.nan
    nan[(0, "forward", "input")] = dataclasses.replace(nan[(0, "forward", "input")], W_x=w)
    found = diff(a, lc.Model((dataclasses.replace(layer, gates=nan),)))
    row = next(r for r in found.tensors if r["tensor"] == "lstm.l0.forward.input.W_x")
    assert row["status"] == "differs" and math.isinf(row["max_abs"])


# -- pictures and HTML --------------------------------------------------------------------------------------


def _changed_forget(model, factor=0.5):
    """``model`` with its forget gate's W_h scaled (inside the old range, so the shared scales stay)."""
    lstm = model.layers[0]
    gates = dict(lstm.gates)
    key = (0, "forward", "forget")
    gates[key] = dataclasses.replace(gates[key], W_h=(gates[key].W_h * factor).astype(gates[key].W_h.dtype))
    return dataclasses.replace(model, layers=(dataclasses.replace(lstm, gates=gates), *model.layers[1:]))


def test_plot_draws_a_row_of_panels_per_gate_at_the_size_it_says(tmp_path, capsys):
    from PIL import Image

    from lstm_convert import plot

    seed = _seed(tmp_path)
    capsys.readouterr()
    assert main(["plot", str(seed), "-o", str(tmp_path / "seed.png")]) == 0
    assert capsys.readouterr().out == f"wrote {tmp_path / 'seed.png'}\n"
    fig = plot.figure(files.read(seed))
    with Image.open(tmp_path / "seed.png") as image:
        assert image.size == (round(fig.get_figwidth() * fig.dpi), round(fig.get_figheight() * fig.dpi))
    labels = [ax.get_label() for ax in fig.axes]
    gates = ("input", "forget", "cell", "output")
    assert labels == [f"lstm l0 forward {g} {panel}" for g in gates for panel in plot.COLUMNS] + ["lstm colour scale"]
    for suffix, magic in ((".svg", b"<?xml"), (".pdf", b"%PDF")):
        assert main(["plot", str(seed), "-o", str(tmp_path / f"seed{suffix}")]) == 0
        assert (tmp_path / f"seed{suffix}").read_bytes().startswith(magic)
    assert main(["plot", str(seed), "-o", str(tmp_path / "seed.png")]) == 1  # never replaced unasked
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert main(["plot", str(seed), "-o", str(tmp_path / "seed.gif")]) == 1
    assert "a picture is written as .png, .svg, .pdf" in capsys.readouterr().err


def test_changing_one_gate_changes_its_panels_alone(tmp_path):
    from lstm_convert import plot

    model = files.read(_seed(tmp_path))
    before, boxes = plot.pixels_of(plot.figure(model))
    after, same_boxes = plot.pixels_of(plot.figure(_changed_forget(model)))
    assert boxes == same_boxes and before.shape == after.shape
    changed = {label for label, (x0, y0, x1, y1) in boxes.items()
               if not np.array_equal(before[y0:y1, x0:x1], after[y0:y1, x0:x1])}
    assert changed == {"lstm l0 forward forget W_h", "lstm l0 forward forget histogram"}
    outside = np.ones(before.shape[:2], bool)  # and nothing else moved: no scale, no other panel
    for label in changed:
        x0, y0, x1, y1 = boxes[label]
        outside[max(0, y0 - 3):y1 + 3, max(0, x0 - 3):x1 + 3] = False
    assert np.array_equal(before[outside], after[outside])


def test_diff_plots_the_difference_the_same_way(tmp_path, capsys):
    from PIL import Image

    from lstm_convert import plot

    seed = _seed(tmp_path)
    model = files.read(seed)
    files.write(_changed_forget(model), tmp_path / "changed.safetensors")
    capsys.readouterr()
    assert main(["diff", str(seed), str(tmp_path / "changed.safetensors"), "--plot", str(tmp_path / "d.png")]) == 1
    with Image.open(tmp_path / "d.png") as image:
        assert image.size[0] == round(13.0 * 100)
    delta = plot.difference(model, files.read(tmp_path / "changed.safetensors"))
    gates = delta.layers[0].gates
    assert np.any(gates[(0, "forward", "forget")].W_h != 0)
    assert all(not np.any(getattr(g, role)) for key, g in gates.items() for role in ("W_x", "W_h", "b_x", "b_h")
               if key != (0, "forward", "forget"))


def test_a_missing_matplotlib_is_named_with_its_extra(tmp_path):
    import subprocess
    import sys

    seed = _seed(tmp_path)
    code = ("import sys\nsys.modules['matplotlib'] = None\nfrom lstm_convert.cli import main\n"
            f"raise SystemExit(main(['plot', {str(seed)!r}, '-o', {str(tmp_path / 'p.png')!r}]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr == "lstm-convert: error: matplotlib is needed for this and is not installed: " \
                          "pip install 'lstm-convert[plot]'\n"
    assert not (tmp_path / "p.png").exists()


def test_layers_and_models_show_their_gate_tables_in_notebooks(rng):
    layer = lc.from_torch(random_torch_lstm(rng, input_size=5, hidden_size=3, bidirectional=True))
    layer = dataclasses.replace(layer, name="enc<oder>")
    html = layer._repr_html_()
    assert "enc&lt;oder&gt;" in html and "enc<oder>" not in html
    for direction in ("forward", "reverse"):
        for gate in ("input", "forget", "cell", "output"):
            assert f"<td style=\"border:1px solid #ccc;padding:2px 6px;text-align:left\">{direction}</td>" in html
            assert f"<b>{gate}</b>" in html
    assert html.count("(3, 5)") == 8 and html.count("(3, 3)") == 8
    dense = lc.Dense(name="head", weight=rng.normal(size=(2, 6)).astype(np.float32))
    model_html = lc.Model((layer, dense))._repr_html_()
    assert "<b>head</b>" in model_html and html in model_html


def test_the_readmes_picture_is_what_its_command_draws(tmp_path, capsys):
    """docs/seed_weights.png, shown in the README, is what the README's command draws from the seed model."""
    from PIL import Image

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    command = "$ lstm-convert plot demo/seed.keras -o demo/seed_weights.png"
    assert command in readme and "![The seed model's LSTM, gate by gate](docs/seed_weights.png)" in readme
    seed = _seed(tmp_path)
    assert main(["plot", str(seed), "-o", str(tmp_path / "seed_weights.png")]) == 0
    committed = Path(__file__).resolve().parents[1] / "docs" / "seed_weights.png"
    with Image.open(committed) as old, Image.open(tmp_path / "seed_weights.png") as new:
        assert old.size == new.size
        assert np.array_equal(np.asarray(old), np.asarray(new))
