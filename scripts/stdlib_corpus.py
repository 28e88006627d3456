"""A real-text corpus that exists on every machine: sentences from the docstrings of Python's
standard library, one a line (for `lens corpus --prompts`).

    python scripts/stdlib_corpus.py build/stdlib.txt --n 3000
"""
from __future__ import annotations

import argparse
import ast
import random
import re
import sysconfig
from pathlib import Path


def sentences(root: Path):
    for path in sorted(root.glob("*.py")) + sorted(root.glob("*/*.py")):
        if "test" in path.parts[-2:][0] or path.name.startswith("test"):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if not doc:
                    continue
                text = re.sub(r"\s+", " ", doc.split("\n\n")[0]).strip()   # the first paragraph, one line
                for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", text):
                    if 30 <= len(s) <= 240:
                        yield s


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("output")
    ap.add_argument("--n", type=int, default=3000, help="sentences (a seeded sample; 0 for all)")
    args = ap.parse_args()
    found = list(dict.fromkeys(sentences(Path(sysconfig.get_paths()["stdlib"]))))
    if args.n:
        found = random.Random(0).sample(found, min(args.n, len(found)))
    Path(args.output).write_text("\n".join(found) + "\n", encoding="utf-8")
    print(f"{len(found)} sentences -> {args.output}")


if __name__ == "__main__":
    main()
