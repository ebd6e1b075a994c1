"""A function's Python requirements, installed once into a folder its handler imports from.

What a Lambda layer or a `requirements.txt` deployment does: `requirements=["boto3", "s3fs"]`
on a function becomes a folder under `<home>/layers/`, named by a hash of the sorted
requirements and this Python's version, holding what pip installs for them (`pip install
--target`, from the package index pip is configured with). The worker puts it first on
`sys.path` for that function's calls. Requirements the running environment already satisfies
are not installed again (they are importable as they are); a layer is built in a temp folder
and renamed into place, so a half-built one is never used, and reused by every later start.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from headrace.errors import AppError

INSTALL_TIMEOUT = 900.0
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*)$")


def layer_key(requirements: tuple[str, ...]) -> str:
    text = "\n".join(sorted(requirements)) + f"\npython {sys.version_info[:2]}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _satisfied(requirement: str) -> bool:
    """True when this environment has the package in a version the specifier allows."""
    match = _NAME.match(requirement)
    if not match or match.group(2):
        return False  # extras: let pip decide what they need
    name, spec = match.group(1), match.group(3).strip()
    try:
        installed = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    if not spec:
        return True
    try:
        from packaging.specifiers import SpecifierSet
    except ImportError:
        return False
    try:
        return SpecifierSet(spec).contains(installed, prereleases=True)
    except Exception:  # an invalid specifier: pip will say what is wrong with it
        return False


def ensure_layer(home: Path, function: str, requirements: tuple[str, ...]) -> str:
    """The folder to import `function`'s requirements from ("" when nothing is missing).

    Raises AppError naming the function and pip's reason when they cannot be installed."""
    missing = [r for r in requirements if not _satisfied(r)]
    if not missing:
        return ""
    folder = home / "layers" / layer_key(tuple(missing))
    if folder.is_dir():
        return str(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    building = folder.parent / f".building-{folder.name}-{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-input",
        "--target",
        str(building),
        *missing,
    ]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        shutil.rmtree(building, ignore_errors=True)
        raise AppError(
            f"function {function!r}",
            f"installing requirements {missing} took over {INSTALL_TIMEOUT:.0f} s",
            "check the package index is reachable, or install them into the environment",
        ) from None
    if done.returncode != 0:
        shutil.rmtree(building, ignore_errors=True)
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        reason = " | ".join(lines[-4:]) or f"pip exited with {done.returncode}"
        raise AppError(
            f"function {function!r}",
            f"cannot install its requirements {missing}: {reason}",
            "fix the names or versions in requirements=, or install them into the environment",
        )
    try:
        os.rename(building, folder)
    except OSError:  # another coordinator built it first
        shutil.rmtree(building, ignore_errors=True)
    return str(folder)
