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


def _docstrings(tree) -> set[int]:
    """ids of the docstring nodes of a module, its classes and functions (prose may cite the papers)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def _hook(node) -> str | None:
    """The ModelSpec field `node` reads, for `spec.<field>` / `<anything>.spec.<field>`, else None."""
    import dataclasses

    from inr.registry import ModelSpec
    hooks = {f.name for f in dataclasses.fields(ModelSpec)} - {"name", "model_id"}
    if isinstance(node, ast.Attribute) and node.attr in hooks:
        base = node.value
        named = base.id if isinstance(base, ast.Name) else base.attr if isinstance(base, ast.Attribute) else ""
        if "spec" in named:
            return node.attr
    return None


def _family_branches(tree) -> list[str]:
    """Tests of a ModelSpec hook's presence: `spec.x is (not) None`, `if spec.x`, `spec.x and ...`."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(isinstance(op, (ast.Is, ast.IsNot, ast.Eq, ast.NotEq))
                                                 for op in node.ops):
            found += [f"line {node.lineno}: compares spec.{h}" for h in map(_hook, [node.left, *node.comparators]) if h]
        tests = [node.test] if isinstance(node, (ast.If, ast.IfExp, ast.While)) else \
            node.values if isinstance(node, ast.BoolOp) else []
        found += [f"line {node.lineno}: tests spec.{h}" for h in map(_hook, tests) if h]
    return found


@pytest.mark.parametrize("package", ["codec", "train"])
def test_codec_and_train_name_no_model_family_and_never_branch_on_a_family_hook(package):
    """No identifier or string in the code of codec/ and train/ names a registered family (their comments
    and docstrings may cite the papers), and no code tests whether a family has a ModelSpec hook: every
    family is a plain implementation of the one protocol."""
    import re

    import inr
    families = re.compile(r"(?<![a-z0-9])(" + "|".join(sorted(inr.registry.names(listed_only=False), key=len, reverse=True)) + r")(?![a-z0-9])",
                          re.IGNORECASE)
    problems = []
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text())
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            text = node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                id(node) not in docs else node.id if isinstance(node, ast.Name) else \
                node.attr if isinstance(node, ast.Attribute) else node.name if isinstance(
                    node, (ast.FunctionDef, ast.ClassDef)) else None
            if text and families.search(text.replace("_", " ")):
                problems.append(f"{path.relative_to(ROOT)}:{node.lineno}: names a family: {text[:60]!r}")
        problems += [f"{path.relative_to(ROOT)}: {p}" for p in _family_branches(tree)]
    assert not problems, "\n".join(problems)


def test_the_family_check_sees_a_hook_branch_and_a_family_name():
    tree = ast.parse("if spec.finalize is not None:\n    x = spec.rate_symbols and 1\nif self.spec.schedule:\n    pass\n")
    assert len(_family_branches(tree)) == 3
