"""The long fuzz run, in chunks that can be stopped and resumed: each structure-aware fuzz test is run in
chunks of cases, each chunk with its own seed, and every finished chunk is appended to a results file as
one JSON line (test, seed, cases, seconds, passed, the commit). A later run skips the chunks already done
for the same commit, so the 100,000 cases per test add up across sessions.

    python scripts/fuzz_long.py                                  # every test, 10 chunks of 10,000 each
    python scripts/fuzz_long.py --tests h5 keras --chunks 10 --cases 10000 --results fuzz-results.jsonl
    python scripts/fuzz_long.py --summary                        # cases done per test, and findings

Different seeds give different random cases, so ten chunks of 10,000 are 100,000 cases (hypothesis'
shrinking and its search for new behaviour work within a chunk). A failing chunk keeps its finding
under tests/corpus/ (as the test itself does) and is recorded as not passed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = {"archive": "test_safetensors_headers and archive", "torch-safetensors": "test_safetensors_headers and torch",
         "keras": "test_keras_zip_members_and_weights", "h5": "test_h5_groups_datasets_and_attributes",
         "pt": "test_pt_pickle_opcodes_and_zip_members",
         "npz": "test_npz_headers_and_members", "onnx": "test_onnx_protobuf_fields"}


def commit() -> str:
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def done_chunks(results: Path, head: str) -> set[tuple[str, int, int]]:
    if not results.exists():
        return set()
    out = set()
    for line in results.read_text().splitlines():
        row = json.loads(line)
        if row["commit"] == head:
            out.add((row["test"], row["seed"], row["cases"]))
    return out


def run_chunk(test: str, seed: int, cases: int, findings: Path) -> tuple[bool, float, str]:
    env = dict(os.environ, LSTM_CONVERT_FUZZ_EXAMPLES=str(cases), LSTM_CONVERT_FUZZ_FINDINGS=str(findings),
               TF_CPP_MIN_LOG_LEVEL="3", TF_ENABLE_ONEDNN_OPTS="0")
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pytest", "tests/test_fuzz_structured.py", "-p", "no:cacheprovider",
                           "-q", "-k", TESTS[test], f"--hypothesis-seed={seed}"],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-3:])
    return done.returncode == 0, time.monotonic() - start, tail


def summary(results: Path) -> None:
    rows = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    by: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        by.setdefault((row["test"], row["commit"][:7]), []).append(row)
    for (test, head), chunks in sorted(by.items()):
        cases = sum(r["cases"] for r in chunks)
        failed = [r["seed"] for r in chunks if not r["passed"]]
        hours = sum(r["seconds"] for r in chunks) / 3600
        print(f"{test:<18} commit {head}: {cases:>7} cases in {len(chunks)} chunks, {hours:.1f} h, "
              + (f"findings in seeds {failed}" if failed else "no finding"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tests", nargs="+", choices=list(TESTS), default=list(TESTS))
    parser.add_argument("--chunks", type=int, default=10)
    parser.add_argument("--cases", type=int, default=10000, help="cases per chunk")
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--results", type=Path, default=ROOT / "fuzz-results.jsonl")
    parser.add_argument("--findings", type=Path, default=ROOT / "fuzz-findings")
    parser.add_argument("--summary", action="store_true")
    args = parser.parse_args()
    if args.summary:
        summary(args.results)
        return 0
    head = commit()
    skip = done_chunks(args.results, head)
    for test in args.tests:
        for seed in range(args.first_seed, args.first_seed + args.chunks):
            if (test, seed, args.cases) in skip:
                continue
            passed, seconds, tail = run_chunk(test, seed, args.cases, args.findings)
            row = {"test": test, "seed": seed, "cases": args.cases, "seconds": round(seconds, 1), "passed": passed,
                   "commit": head}
            with open(args.results, "a") as out:
                out.write(json.dumps(row) + "\n")
            print(f"{test} seed {seed}: {'passed' if passed else 'FAILED'} in {seconds:.0f} s"
                  + ("" if passed else f"\n{tail}"), flush=True)
    summary(args.results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
