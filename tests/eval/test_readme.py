"""The README's two setup commands are the ones CI runs (.ci/run), so a green CI run is a run of the README."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _setup_commands() -> list[str]:
    """The bash blocks of the README's "Setup: two commands" section, in order."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Setup: two commands", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, re.S)]


def test_the_readme_gives_two_setup_commands_install_and_demo_then_the_tests():
    install, tests = _setup_commands()
    assert "\n" not in install and "\n" not in tests
    assert install.startswith("apt-get update && apt-get install -y") and install.endswith("&& .venv/bin/nerva demo")
    # Debian 12 has neither venv nor a browser by default, and Playwright's node driver links libatomic.so.1,
    # which a bare Debian 12 lacks (found by running the README's commands on a debootstrap'd bookworm)
    for package in ("python3", "python3-venv", "chromium", "libatomic1"):
        assert f" {package} " in f" {install.split('&& python3 -m venv')[0]} "
    assert tests == ".venv/bin/python -m pytest -q"


def test_ci_runs_the_readmes_install_without_the_demo_then_exactly_its_test_command():
    install, tests = _setup_commands()
    apt, venv = install.removesuffix(" && .venv/bin/nerva demo").split(" && python3 -m venv", 1)
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert apt.replace("apt-get", "$sudo apt-get") in lines
    assert "python3 -m venv" + venv in lines
    assert tests in lines
    assert lines.index("rm -rf .venv   # a fresh virtualenv: a green run on hand-installed packages proves nothing") \
        < lines.index("python3 -m venv" + venv) < lines.index(tests)
