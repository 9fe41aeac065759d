"""Write or check ``requirements.lock``: the exact version of every package ``cxr[dev]`` installs.

    python scripts/lock.py write [--lock requirements.lock]   # `make lock`: from the running environment
    python scripts/lock.py check [--lock requirements.lock]   # exit 1 listing every difference

The lock holds the dependency closure of ``cxr[dev]`` (demo, notebooks, tests; read from pyproject.toml) as
installed in the interpreter that runs this script, resolved from the installed packages' own metadata (so
stray packages installed by hand are not locked), plus pip itself. Local version labels are dropped (``torch==2.13.0``, not
``+cpu``) so the lock never decides between CPU and CUDA builds: ``constraints.txt`` and the dry-run guard in
``scripts/setup_venv.sh`` do. ``scripts/setup_venv.sh`` passes the lock as a pip constraint to every pip call.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import platform
import sys
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "cxr"
EXTRAS = ("dev",)
#: Requirements of a CUDA torch build (absent from the CPU build the lock is made with): never locked or checked.
BUILD_SPECIFIC = ("nvidia-", "cuda-", "triton")
HEADER = """# requirements.lock: every package `pip install -e ".[dev]"` installs, at the versions the README's demo and
# test numbers were measured with. Used as a pip constraint file by scripts/setup_venv.sh (with constraints.txt,
# which pins the CPU-safe torch). Refresh after changing dependencies: `make lock` (python scripts/lock.py write),
# then re-measure. `python scripts/lock.py check` (and tests/test_environment.py) compare the venv with it.
"""


def _installed() -> dict[str, md.Distribution]:
    return {canonicalize_name(d.metadata["Name"]): d for d in md.distributions() if d.metadata["Name"]}


def project_requirements(pyproject: Path = ROOT / "pyproject.toml", extras: tuple[str, ...] = EXTRAS) -> list[str]:
    """The requirement lines of ``cxr[extras]`` as the checkout's pyproject.toml states them now (not the
    metadata of an older editable install), with ``cxr[...]`` self-references expanded. Python 3.10 has no
    tomllib: there the installed cxr's metadata stands in."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        return _installed_project_requirements(extras)
    project = tomllib.loads(pyproject.read_text())["project"]
    optional = project.get("optional-dependencies", {})
    lines, todo, seen = list(project.get("dependencies", [])), list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for line in optional.get(extra, []):
            req = Requirement(line)
            if canonicalize_name(req.name) == canonicalize_name(PROJECT):
                todo.extend(req.extras)
            else:
                lines.append(line)
    return lines


def _installed_project_requirements(extras: tuple[str, ...]) -> list[str]:
    env = default_environment()
    lines = []
    for line in md.requires(PROJECT) or []:
        req = Requirement(line)
        if canonicalize_name(req.name) == canonicalize_name(PROJECT):
            continue  # cxr[demo,notebooks] inside dev: those extras' lines are listed under their own markers
        if req.marker is None or any(req.marker.evaluate({**env, "extra": e}) for e in ("", *extras,
                                                                                      "demo", "notebooks")):
            lines.append(str(req).split(";")[0].strip())
    return lines


def dependency_closure(installed: dict[str, md.Distribution], roots: list[str] | None = None) -> dict[str, str]:
    """``{name: version}`` of every package ``roots`` (requirement lines; default: cxr[dev] from pyproject.toml)
    need, transitively, from the installed packages' metadata.

    Raises ``LookupError`` naming a required package that is not installed (the closure would be incomplete).
    """
    env = default_environment()
    todo: list[tuple[str, frozenset[str]]] = []
    for line in project_requirements() if roots is None else roots:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate({**env, "extra": ""}):
            todo.append((canonicalize_name(req.name), frozenset(req.extras)))
    done: set[tuple[str, frozenset[str]]] = set()
    out: dict[str, str] = {}
    while todo:
        name, wanted = todo.pop()
        if (name, wanted) in done:
            continue
        done.add((name, wanted))
        dist = installed.get(name)
        if dist is None:
            raise LookupError(f"{name} is required but not installed (make setup)")
        out[name] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            marker_ok = req.marker is None or any(
                req.marker.evaluate({**env, "extra": extra}) for extra in ("", *wanted))
            dep = canonicalize_name(req.name)
            if marker_ok and not dep.startswith(BUILD_SPECIFIC):
                todo.append((dep, frozenset(req.extras)))
    return out


def _public(version: str) -> str:
    return Version(version).public  # 2.13.0+cpu -> 2.13.0


def read_lock(path: Path) -> dict[str, str]:
    """``{canonical name: version}`` from a lock file (``name==version`` lines, ``#`` comments)."""
    pins: dict[str, str] = {}
    for n, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep or not version.strip():
            raise ValueError(f"{path}:{n}: expected 'name==version', got {raw!r}")
        pins[canonicalize_name(name.strip())] = version.strip()
    return pins


def write_lock(path: Path) -> dict[str, str]:
    """Write the lock of the running environment; returns the pins."""
    installed = _installed()
    pins = {name: _public(v) for name, v in dependency_closure(installed).items()}
    pins["pip"] = _public(md.version("pip"))
    body = "".join(f"{installed[n].metadata['Name'] if n in installed else n}=={v}\n" for n, v in sorted(pins.items()))
    where = (f"# generated with Python {platform.python_version()} on {sys.platform}-{platform.machine()}\n"
             f"# python: {_python_minor()}\n")
    path.write_text(HEADER + where + body)
    return pins


def _python_minor() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def _lock_python(path: Path) -> str | None:
    for line in path.read_text().splitlines():
        if line.startswith("# python:"):
            return line.split(":", 1)[1].strip()
    return None


def check_lock(path: Path) -> list[str]:
    """Every difference between the running environment and the lock (empty: the lock is honoured).

    A package installed at another version than its pin is always a difference. A required package the lock
    does not name is one too, except under another Python minor version than the lock's, whose markers may
    pull packages (backports) the lock's Python does not need: those are printed as notes.
    """
    if not path.is_file():
        return [f"{path} not found (run `make lock`)"]
    pins = read_lock(path)
    same_python = _lock_python(path) == _python_minor()
    installed = _installed()
    problems = []
    try:
        closure = dependency_closure(installed)
    except LookupError as err:
        return [str(err)]
    closure["pip"] = md.version("pip")
    for name, version in sorted(closure.items()):
        if name not in pins:
            message = f"{name}=={version} is installed (required by cxr[dev]) but not in the lock"
            if same_python:
                problems.append(message)
            else:
                print(f"lock: note: {message} (lock made with Python {_lock_python(path)})", file=sys.stderr)
        elif _public(version) != _public(pins[name]):
            problems.append(f"{name}: installed {version}, lock {pins[name]}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["write", "check"])
    parser.add_argument("--lock", type=Path, default=ROOT / "requirements.lock")
    args = parser.parse_args(argv)
    if args.command == "write":
        pins = write_lock(args.lock)
        print(f"wrote {args.lock}: {len(pins)} packages")
        return 0
    problems = check_lock(args.lock)
    for p in problems:
        print(f"lock: {p}", file=sys.stderr)
    if problems:
        print(f"{len(problems)} difference(s) from {args.lock}; reinstall (make setup) or refresh it (make lock)",
              file=sys.stderr)
        return 1
    print(f"{args.lock}: honoured ({len(read_lock(args.lock))} packages)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
