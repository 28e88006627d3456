"""Print the README's model-coverage table from what the tests run: every family in lens's registry,
the tiny configurations `tests/test_families.py` checks against PyTorch (lens.testing.TINY), the
families whose AttnLRP it checks against lxt, those exported in float16 by the tests, and the real
models with tests of their own.

    python scripts/coverage_table.py > /tmp/table.md
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lens import families  # noqa: E402
from lens.testing import TINY  # noqa: E402

REAL = {"llama": "SmolLM2-135M (tests/test_smollm2.py)", "gemma3": "Gemma 3 270M (tests/test_gemma3.py)"}
LXT_BUILT_IN = ("gpt2", "llama")  # tests/test_attnlrp.py


def _tuple(test_file: str, name: str) -> set[str]:
    """The literal tuple a test module assigns to `name`."""
    tree = ast.parse((ROOT / "tests" / test_file).read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == name:
            return set(ast.literal_eval(node.value))
    return set()


def lxt_families() -> set[str]:
    return _tuple("test_families.py", "LXT") | set(LXT_BUILT_IN)


def float16_families() -> set[str]:
    """tests/test_precision.py's tiny float16 exports, and SmolLM2's (tests/test_smollm2.py)."""
    return _tuple("test_precision.py", "KINDS") | {"llama"}


def main() -> None:
    lxt, half = lxt_families(), float16_families()
    tested = {}
    for kind, (cls, _) in TINY.items():
        import transformers
        model_type = getattr(transformers, cls).model_type
        tested.setdefault(families.get(model_type).NAME, []).append(kind)
    print("| family | model types | example hub ids | tiny configurations tested against PyTorch "
          "(export, greedy tokens, taps, grad x input, gradient, logit lens) | AttnLRP vs lxt | `--dtype float16` tested "
          "| real weights |")
    print("|---|---|---|---|---|---|---|")
    for f in families.all_families():
        kinds = ", ".join(f"`{k}`" for k in tested.get(f.NAME, [])) or "none"
        print(f"| {f.NAME} | {', '.join(f.MODEL_TYPES)} | {', '.join(f.EXAMPLES[:2])} | {kinds} | "
              f"{'yes' if f.NAME in lxt else 'no (lxt lacks it)'} | {'yes' if f.NAME in half else 'no (validated at export)'} "
              f"| {REAL.get(f.NAME, 'random only')} |")


if __name__ == "__main__":
    main()
