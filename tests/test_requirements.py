"""The dependency files keep their shape: direct dependencies in requirements.in and
requirements-dev.in, each pinned in the first part of its lock (requirements.txt,
requirements-dev.txt), and the second part holding exactly what those pull in."""

import importlib.metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO_ROOT = Path(__file__).resolve().parents[1]
# Left to pip and the venv, as pip-compile leaves them by default.
INSTALLER_PACKAGES = {"pip", "setuptools", "wheel"}


def unpinned(path):
    """Requirement per line of a .in file, comments and includes left out."""
    lines = (line.split("#")[0].strip() for line in (REPO_ROOT / path).read_text().splitlines())
    return [Requirement(line) for line in lines if line and not line.startswith("-")]


def lock_parts(path):
    """(direct pins, transitive pins) of a lock: the parts before and after its second comment
    block, each as canonical name -> (Requirement, version)."""
    parts, current = [], None
    for line in (REPO_ROOT / path).read_text().splitlines():
        if line.startswith("# Direct") or line.startswith("# Pulled in"):
            current = {}
            parts.append(current)
        elif line and not line.startswith(("#", "-")):
            requirement = Requirement(line)
            (version,) = [spec.version for spec in requirement.specifier if spec.operator == "=="]
            current[canonicalize_name(requirement.name)] = (requirement, version)
    direct, transitive = parts
    return direct, transitive


LOCKS = {"requirements.txt": "requirements.in", "requirements-dev.txt": "requirements-dev.in"}


@pytest.mark.parametrize("lock, listed", LOCKS.items())
def test_each_direct_dependency_is_pinned_in_the_first_part_of_its_lock(lock, listed):
    direct, transitive = lock_parts(lock)
    wanted = {canonicalize_name(r.name): r.extras for r in unpinned(listed)}
    assert {name: requirement.extras for name, (requirement, _) in direct.items()} == wanted
    assert not set(direct) & set(transitive)


def test_the_locks_pin_every_package_once_and_exactly_what_the_direct_ones_pull_in():
    runtime, runtime_pulled = lock_parts("requirements.txt")
    tools, tools_pulled = lock_parts("requirements-dev.txt")
    parts = [runtime, runtime_pulled, tools, tools_pulled]
    pinned = {name: pin for part in parts for name, pin in part.items()}
    assert len(pinned) == sum(len(part) for part in parts), "a package pinned twice"

    def pulled_in(roots):
        """Every package the roots need, through the installed packages' metadata."""
        seen, todo = set(), [requirement for requirement, _ in roots.values()]
        while todo:
            requirement = todo.pop()
            for extra in {"", *requirement.extras}:
                for line in importlib.metadata.requires(requirement.name) or []:
                    needed = Requirement(line)
                    name = canonicalize_name(needed.name)
                    if needed.marker and not needed.marker.evaluate({"extra": extra}):
                        continue
                    if name not in seen and name not in INSTALLER_PACKAGES:
                        seen.add(name)
                        todo.append(needed)
        return seen

    # The installed metadata says what each pinned version needs (`make install` installs the locks).
    for name, (_, version) in pinned.items():
        assert importlib.metadata.version(name) == version, f"{name} installed is not the pinned one"
    runtime_needs = pulled_in(runtime)
    assert set(runtime_pulled) == runtime_needs - set(runtime)
    assert set(tools_pulled) == pulled_in(tools) - set(runtime) - set(runtime_pulled) - set(tools)
