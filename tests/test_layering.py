"""Dependencies point one way (inr <- codec <- train <- eval) and decoding never needs training libraries."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["inr", "codec", "train", "eval"]
FORBIDDEN_THIRD_PARTY = {"inr": {"optax", "orbax"}, "codec": {"optax", "orbax", "pickle"}}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", ORDER)
def test_packages_import_only_packages_below_them(package):
    above = set(ORDER[ORDER.index(package) + 1:])
    bad_third = FORBIDDEN_THIRD_PARTY.get(package, set())
    for path in (ROOT / package).rglob("*.py"):
        if path.name == "cli.py" and package == "eval":
            continue   # the `nerva` dispatcher sits on top and imports handlers lazily
        wrong = _imports(path) & (above | bad_third)
        assert not wrong, f"{path.relative_to(ROOT)} imports {sorted(wrong)}"


def test_packages_resolve_inside_this_repository():
    import codec
    import eval as eval_pkg
    import inr
    import train
    for mod in (inr, codec, train, eval_pkg):
        assert Path(mod.__file__).resolve().is_relative_to(ROOT)
