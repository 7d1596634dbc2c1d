"""The environment the tests run in is the one `constraints.txt` pins: a dependency added to
pyproject.toml without `make lock`, or an install that ignored the pins, fails here, not months
later on a fresh machine that resolved something newer."""

from __future__ import annotations

from importlib.metadata import distribution
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def pinned_versions() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def required_distributions(root: str = "namelang", extras: frozenset[str] = frozenset({"dev"})) -> set[str]:
    """What `pip install -e '.[dev]'` needs, recursively, for this interpreter and platform."""
    environment = default_environment()
    needed: set[str] = set()
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [(root, extras)]
    while todo:
        name, wanted = todo.pop()
        if (name, wanted) in seen:
            continue
        seen.add((name, wanted))
        for text in distribution(name).requires or []:
            requirement = Requirement(text)
            if requirement.marker is not None and not any(
                    requirement.marker.evaluate({**environment, "extra": extra}) for extra in (wanted or {""})):
                continue
            key = canonicalize_name(requirement.name)
            needed.add(key)
            todo.append((key, frozenset(requirement.extras)))
    return needed


def test_every_package_namelang_needs_is_pinned_and_installed_at_its_pin():
    pins = pinned_versions()
    needed = required_distributions()
    assert {"torch", "prefect", "mlflow", "pandas", "pyarrow", "pytest", "sqlalchemy"} <= needed
    assert sorted(needed - pins.keys()) == [], "not in constraints.txt: run `make lock`"
    installed = {name: distribution(name).version for name in needed}
    # as pip reads a pin: torch==2.13.0 holds for the build 2.13.0+cpu (a local label), not for 2.13.1
    differ = {n: v for n, v in installed.items() if not SpecifierSet(f"=={pins[n]}").contains(v, prereleases=True)}
    assert differ == {}, "installed versions differ from the pins"


def test_torch_is_pinned_so_that_a_cuda_build_satisfies_it_too():
    """`make setup` installs torch==2.13.0 first: the CPU build here (2.13.0+cpu), PyPI's CUDA build on
    a GPU machine (2.13.0). A pin of 2.13.0+cpu refused the second, and the install stopped there."""
    pin = SpecifierSet(f"=={pinned_versions()['torch']}")
    assert pin.contains("2.13.0") and pin.contains("2.13.0+cpu") and pin.contains("2.13.0+cu128")
    assert not pin.contains("2.13.1")
