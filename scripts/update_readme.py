"""Re-run the commands shown in README.md and put their real output under them.

    python scripts/update_readme.py

Runs ``lstm-convert demo --out demo`` in a temporary directory, then every
``$ lstm-convert ...`` line of the README's ``text`` blocks there (a picture that
``lstm-convert plot`` draws is copied into docs/), and the demo output under the Quick start, and the
worked example of docs/archive-format.md; writes the format table from the registry and the
gate tables from gates.py. tests/test_cli.py checks that the outputs that
hold no floating-point figures still match.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from lstm_convert import formats
from lstm_convert.gates import GATES, gate_table

README = Path(__file__).resolve().parents[1] / "README.md"
DOCS = README.parent / "docs"


def run(command: str, cwd: str) -> str:
    args = [sys.executable, "-m", "lstm_convert", *command.split()[1:]]
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    return (done.stdout + done.stderr).rstrip("\n")


def main() -> None:
    text = README.read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory() as tmp:
        demo = run("lstm-convert demo --out demo", tmp)
        for code in re.findall(r"```python\n(.*?)```", text, re.S):  # the files the examples make, as the test does
            subprocess.run([sys.executable, "-c", code], cwd=tmp, capture_output=True, text=True)

        def block(match: re.Match) -> str:
            lines = match.group(1).splitlines()
            if not any(line.startswith("$ lstm-convert") for line in lines):
                return f"```text\n{demo}\n```"  # the Quick start's demo output
            out = []
            for line in lines:
                if line.startswith("$ lstm-convert"):
                    out += [line, run(line[2:], tmp)]
                    words = line.split()
                    if words[2:3] == ["plot"] and "-o" in words:  # the picture the README shows, kept in docs/
                        picture = Path(tmp) / words[words.index("-o") + 1]
                        DOCS.mkdir(exist_ok=True)
                        shutil.copyfile(picture, DOCS / picture.name)
            return "```text\n" + "\n".join(out) + "\n```"

        text = re.sub(r"```text\n(.*?)```", block, text, flags=re.S)
    text = re.sub(r"^\| format \| files \| holds \|.*?(?=\n\n)", lambda _: formats.table(), text, flags=re.S | re.M)
    head = r"\| canonical gate \|[^\n]*"  # a table of any kind, whichever columns it had
    first = {GATES[kind][0]: kind for kind in GATES}  # which table it is, by its first gate

    def gates(match: re.Match) -> str:
        gate = match.group(0).split("\n")[2].split("|")[1].strip()
        return gate_table(first[gate])

    text = re.sub(rf"^{head}\n.*?(?=\n\n)", gates, text, flags=re.S | re.M)  # the gate tables, from gates.py
    README.write_text(text, encoding="utf-8")
    spec_example()


def spec_example() -> None:
    """The archive specification's worked example: the seed model's archive as scripts/read_archive.py lays it out."""
    doc = DOCS / "archive-format.md"
    text = doc.read_text(encoding="utf-8")
    command = "python scripts/read_archive.py demo/seed.safetensors --layout"
    with tempfile.TemporaryDirectory() as tmp:
        run("lstm-convert demo --out demo", tmp)
        run("lstm-convert convert demo/seed.keras demo/seed.safetensors", tmp)
        done = subprocess.run([sys.executable, str(README.parent / "scripts" / "read_archive.py"),
                               "demo/seed.safetensors", "--layout"], cwd=tmp, capture_output=True, text=True, check=True)
    block = f"<!-- example -->\n```text\n$ {command}\n{done.stdout}```"
    doc.write_text(re.sub(r"<!-- example -->\n```text\n.*?```", lambda _: block, text, flags=re.S), encoding="utf-8")


if __name__ == "__main__":
    main()
