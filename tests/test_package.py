"""Packaging promises: a framework-free import, lazy adapters, a named extra when one is missing."""

from __future__ import annotations

import subprocess
import sys

import lstm_convert


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_import_loads_no_framework():
    done = _python("import sys, lstm_convert\n"
                   "print(sorted(m for m in ('torch', 'tensorflow', 'keras', 'jax') if m in sys.modules))")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_public_api():
    for name in ("from_keras", "from_torch", "to_keras", "to_torch", "save", "load"):
        assert callable(getattr(lstm_convert, name))
    documented = {*lstm_convert.__all__, "__version__", "files", "verify", "reference", "describe", "batch", "stats",
                  "diff", "plot"}
    assert dir(lstm_convert) == sorted(documented)
    # What the module really holds, beyond what dir() shows: no helper leaks out under a public name.
    done = _python("import lstm_convert as lc, lstm_convert.cli\n"
                   "lc.Model, lc.files, lc.describe\n"
                   "print(sorted(n for n in vars(lc) if not n.startswith('_')))")
    assert done.returncode == 0, done.stderr
    held = set(eval(done.stdout))
    submodules = {"adapters", "formats", "canonical", "errors", "cli", "gates", "activations"}
    assert held - documented <= submodules, held - documented - submodules


def test_missing_framework_names_the_extra():
    done = _python(
        "import sys\n"
        "sys.modules['torch'] = None\nsys.modules['keras'] = None\n"
        "import lstm_convert\n"
        "for call in (lambda: lstm_convert.from_torch({}), lambda: lstm_convert.from_keras(None)):\n"
        "    try:\n        call()\n"
        "    except lstm_convert.MissingDependencyError as exc:\n        print(exc)\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "torch is needed for this and is not installed: pip install 'lstm-convert[torch]'",
        "keras is needed for this and is not installed: pip install 'lstm-convert[keras]'",
    ]


def test_archive_needs_no_framework(tmp_path):
    code = (
        "import sys\nfor m in ('torch', 'keras', 'tensorflow'): sys.modules[m] = None\n"
        "import numpy as np, lstm_convert as lc\n"
        "rng = np.random.default_rng(0)\n"
        "g = {(0, 'forward', n): lc.Gate(rng.normal(size=(2, 3)), rng.normal(size=(2, 2)),"
        " rng.normal(size=2), rng.normal(size=2)) for n in ('input', 'forget', 'cell', 'output')}\n"
        "w = lc.RecurrentLayer(kind='lstm', input_size=3, hidden_size=2, gates=g)\n"
        f"lc.save(w, {str(tmp_path / 'a.safetensors')!r})\n"
        f"print(lc.load({str(tmp_path / 'a.safetensors')!r}) == w)\n")
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"


def test_module_entry_point_help():
    done = subprocess.run([sys.executable, "-m", "lstm_convert", "--help"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and "demo" in done.stdout
