"""The environment the tests run in is the one `constraints.txt` pins: a dependency added to
pyproject.toml without `make lock`, or an install that ignored the pins, fails here, not months
later on a fresh machine that resolved something newer."""

from __future__ import annotations

from collections.abc import Callable
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


def required_distributions(pins: dict[str, str], root: str = "namelang",
                           extras: frozenset[str] = frozenset({"dev"}),
                           requires_of: Callable[[str], list[str] | None] = lambda name: distribution(name).requires
                           ) -> set[str]:
    """What `pip install -e '.[dev]'` needs, recursively, for this interpreter and platform. Of torch's
    own requirements, only the pinned: PyPI's CUDA build (a GPU machine's) adds its CUDA libraries,
    which `make setup` installs with torch==2.13.0, first and alone (constraints.txt leaves them free)."""
    environment = default_environment()
    needed: set[str] = set()
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [(root, extras)]
    while todo:
        name, wanted = todo.pop()
        if (name, wanted) in seen:
            continue
        seen.add((name, wanted))
        for text in requires_of(name) or []:
            requirement = Requirement(text)
            if requirement.marker is not None and not any(
                    requirement.marker.evaluate({**environment, "extra": extra}) for extra in (wanted or {""})):
                continue
            key = canonicalize_name(requirement.name)
            if name == "torch" and key not in pins:
                continue
            needed.add(key)
            todo.append((key, frozenset(requirement.extras)))
    return needed


def test_every_package_namelang_needs_is_pinned_and_installed_at_its_pin():
    pins = pinned_versions()
    needed = required_distributions(pins)
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


# torch 2.13.0's requirements as PyPI's CUDA build for Linux x86_64 states them (pip install --dry-run --report)
CUDA_TORCH_REQUIRES = [
    "filelock", "typing-extensions>=4.10.0", "setuptools>=77.0.3", "sympy>=1.13.3", "networkx>=2.5.1", "jinja2",
    "fsspec>=0.8.5",
    'cuda-toolkit[cublas,cudart,cufft,cufile,cupti,curand,cusolver,cusparse,nvjitlink,nvrtc,nvtx]==13.0.3; '
    'platform_system == "Linux"',
    'cuda-bindings<14,>=13.0.3; platform_system == "Linux" and python_version < "3.15"',
    'nvidia-cudnn-cu13==9.20.0.48; platform_system == "Linux"',
    'nvidia-cusparselt-cu13==0.8.1; platform_system == "Linux"',
    'nvidia-nccl-cu13==2.29.7; platform_system == "Linux"',
    'nvidia-nvshmem-cu13==3.4.5; platform_system == "Linux"',
    'triton==3.7.1; platform_system == "Linux" and python_version < "3.15"',
    'optree>=0.13.0; extra == "optree"', 'opt-einsum>=3.3; extra == "opt-einsum"', 'pyyaml; extra == "pyyaml"',
]


def test_a_gpu_machines_torch_needs_no_other_pins():
    """On a GPU machine `make setup` installs PyPI's CUDA build of torch, whose CUDA libraries no
    constraints.txt made on a CPU machine pins: the test above failed there, on `make test`."""
    pins = pinned_versions()

    def on_a_gpu_machine(name: str) -> list[str] | None:
        return CUDA_TORCH_REQUIRES if name == "torch" else distribution(name).requires

    assert required_distributions(pins, requires_of=on_a_gpu_machine) == required_distributions(pins)
    cpu_torch = {canonicalize_name(Requirement(text).name) for text in distribution("torch").requires or []
                 if Requirement(text).marker is None}
    assert cpu_torch <= pins.keys()  # what both builds need is pinned, and checked, as ever


def test_a_logged_models_code_imports_only_what_its_requirements_install():
    """A model version carries the `pipeline` package, and its requirements.txt lists what an environment
    built for it installs (`mlflow models serve --env-manager virtualenv`, `mlflow models build-docker`).
    The code imported httpx (normalize -> ingest's downloads), which none of them brings: such an
    environment could not load the model."""
    import subprocess
    import sys
    from importlib.metadata import packages_distributions

    from pipeline.tracking import _requirements

    pins = pinned_versions()
    roots = [canonicalize_name(line.split("==")[0]) for line in _requirements()]
    installed = set(roots).union(*(required_distributions(pins, root, frozenset()) for root in roots))
    ours = {"pipeline", "flows", "tests", "bench"}
    blocked = sorted(module for module, dists in packages_distributions().items()
                     if module not in ours and module not in sys.stdlib_module_names
                     and not any(canonicalize_name(d) in installed for d in dists))
    assert "httpx" in blocked and "psutil" in blocked and "torch" not in blocked  # what the check stands on
    loads = subprocess.run([sys.executable, "-c", f"import sys; sys.modules.update(dict.fromkeys({blocked!r}))\n"
                            "import pipeline.pyfunc, pipeline.pyfunc_entry"], cwd=ROOT, capture_output=True,
                           text=True, timeout=120)
    assert loads.returncode == 0, loads.stderr[-3000:]
