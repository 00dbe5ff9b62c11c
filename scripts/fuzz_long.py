"""The long fuzz run, in chunks that can be stopped and resumed: each structure-aware fuzz test is run in
chunks of cases, each chunk with its own seed, and every finished chunk is appended to a results file as
one JSON line (test, seed, the cases hypothesis ran and those asked for, seconds, passed, the commit, and the
code it ran: every file of the
package and of tests/ that the chunk's process imported, with their SHA-256 digest taken together). A chunk
counts for the checkout in hand while those files are unchanged in it (a change elsewhere, say to the ONNX
reader, leaves the .h5 test's chunks standing); a later run skips the chunks that still count, so the
100,000 cases per test add up across sessions and commits.

    python scripts/fuzz_long.py                                  # every test, 10 chunks of 10,000 each
    python scripts/fuzz_long.py --tests h5 keras --chunks 10 --cases 10000 --results fuzz-results.jsonl
    python scripts/fuzz_long.py --summary                        # cases done per test, and findings

Different seeds give different random cases, so ten chunks of 10,000 are 100,000 cases (hypothesis'
shrinking and its search for new behaviour work within a chunk). A failing chunk keeps its finding
under tests/corpus/ (as the test itself does) and is recorded as not passed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = {"archive": "test_safetensors_headers and archive", "torch-safetensors": "test_safetensors_headers and torch",
         "keras": "test_keras_zip_members_and_weights", "h5": "test_h5_groups_datasets_and_attributes",
         "pt": "test_pt_pickle_opcodes_and_zip_members",
         "npz": "test_npz_headers_and_members", "onnx": "test_onnx_protobuf_fields",
         "tf_checkpoint": "test_tf_checkpoint_entries_header_and_data", "flax": "test_flax_msgpack_trees_and_arrays",
         "equinox": "test_eqx_records_and_skeleton", "haiku": "test_haiku_npz_keys_and_members",
         "tflite": "test_tflite_tables_vectors_and_offsets"}


# Runs pytest in this process and then lists the project's modules it imported (the test's reach).
CHILD = """
import json, sys, pytest
rc = pytest.main(sys.argv[2:])
names = sorted({m.__file__ for m in list(sys.modules.values()) if getattr(m, "__file__", None)})
with open(sys.argv[1], "w") as out:
    json.dump(names, out)
sys.exit(int(rc))
"""
ALWAYS = ("constraints.txt", "tests/test_fuzz_structured.py", "tests/conftest.py")


def code_files(imported: list[str]) -> list[str]:
    """The project files among ``imported`` (absolute paths), relative to ROOT, with those always counted."""
    out = set(ALWAYS)
    for name in imported:
        path = Path(name).resolve()
        if path.suffix == ".py" and path.is_relative_to(ROOT) and path.parts[len(ROOT.parts)] in ("lstm_convert",
                                                                                                    "tests"):
            out.add(path.relative_to(ROOT).as_posix())
    return sorted(out)


def digest(names: list[str]) -> str:
    """One SHA-256 over the names and contents of ``names`` in this checkout (a missing file counts as empty)."""
    total = hashlib.sha256()
    for name in names:
        path = ROOT / name
        data = path.read_bytes() if path.is_file() else b""
        total.update(f"{name}\0{len(data)}\0".encode() + data)
    return total.hexdigest()


def counts(row: dict) -> bool:
    """Whether a recorded chunk ran on the code this checkout has (rows without a file list: same commit)."""
    if "files" in row:  # a process killed before it listed its imports (the OOM killer) ran on no known code
        return "lstm_convert/__init__.py" in row["files"] and digest(row["files"]) == row["code"]
    return row["commit"] == commit()


def commit() -> str:
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def rows(results: Path) -> list[dict]:
    return [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []


def done_chunks(results: Path) -> set[tuple[str, int, int]]:
    return {(row["test"], row["seed"], row.get("requested", row["cases"])) for row in rows(results)
            if row["passed"] and counts(row)}


def run_chunk(test: str, seed: int, cases: int, findings: Path) -> tuple[bool, float, str, list[str]]:
    env = dict(os.environ, LSTM_CONVERT_FUZZ_EXAMPLES=str(cases), LSTM_CONVERT_FUZZ_FINDINGS=str(findings),
               TF_CPP_MIN_LOG_LEVEL="3", TF_ENABLE_ONEDNN_OPTS="0")
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        imported = Path(tmp) / "imported.json"
        done = subprocess.run([sys.executable, "-c", CHILD, str(imported), "tests/test_fuzz_structured.py",
                               "-p", "no:cacheprovider", "-q", "-k", TESTS[test], f"--hypothesis-seed={seed}",
                               "--hypothesis-show-statistics"],
                              cwd=ROOT, env=env, capture_output=True, text=True)
        names = json.loads(imported.read_text()) if imported.exists() else []
    tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-3:])
    files = code_files(names)
    if names and "lstm_convert/__init__.py" not in files:
        raise SystemExit(f"the chunk imported lstm_convert from outside {ROOT}; run with PYTHONPATH={ROOT}")
    return done.returncode == 0 and bool(names), time.monotonic() - start, tail, files, examples(done.stdout)


def examples(output: str) -> int:
    """The cases hypothesis ran, from its statistics: fewer than asked when a strategy has no more to give."""
    import re

    found = re.findall(r"(\d+) passing examples, (\d+) failing examples", output)
    return sum(int(a) + int(b) for a, b in found)


def summary(*results: Path) -> None:
    """Per test: the chunks that count for this checkout (cases, commits they ran on, findings), then the
    cases run on code since changed."""
    by: dict[str, list[dict]] = {}
    for row in (row for path in results for row in rows(path)):
        by.setdefault(row["test"], []).append(row)
    for test in TESTS:
        chunks = by.get(test, [])
        current = [r for r in chunks if counts(r)]
        stale = sum(r["cases"] for r in chunks if r not in current)
        cases = sum(r["cases"] for r in current)
        failed = [r["seed"] for r in current if not r["passed"]]
        heads = sorted({r["commit"][:7] for r in current})
        hours = sum(r["seconds"] for r in current) / 3600
        print(f"{test:<18} {cases:>7} cases on this code in {len(current)} chunks ({hours:.1f} h; commits "
              f"{', '.join(heads) or '-'}), " + (f"findings in seeds {failed}" if failed else "no finding")
              + (f"; {stale} cases on earlier code" if stale else ""))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tests", nargs="+", choices=list(TESTS), default=list(TESTS))
    parser.add_argument("--chunks", type=int, default=10)
    parser.add_argument("--cases", type=int, default=10000, help="cases per chunk")
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--results", type=Path, nargs="+", default=[ROOT / "fuzz-results.jsonl"],
                        help="where chunks are recorded (the first file); --summary counts them all")
    parser.add_argument("--findings", type=Path, default=ROOT / "fuzz-findings")
    parser.add_argument("--summary", action="store_true")
    args = parser.parse_args()
    if args.summary:
        summary(*args.results)
        return 0
    head = commit()
    skip = done_chunks(args.results[0])
    for test in args.tests:
        for seed in range(args.first_seed, args.first_seed + args.chunks):
            if (test, seed, args.cases) in skip:
                continue
            passed, seconds, tail, names, ran = run_chunk(test, seed, args.cases, args.findings)
            row = {"test": test, "seed": seed, "cases": ran, "requested": args.cases, "seconds": round(seconds, 1),
                   "passed": passed, "commit": head, "code": digest(names), "files": names}
            with open(args.results[0], "a") as out:
                out.write(json.dumps(row) + "\n")
            print(f"{test} seed {seed}: {'passed' if passed else 'FAILED'} ({ran} cases) in {seconds:.0f} s"
                  + ("" if passed else f"\n{tail}"), flush=True)
    summary(*args.results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
