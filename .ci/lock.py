"""requirements.lock: every third-party dependency of the workspace, pinned by pip-tools.

The inputs are the dependencies of every pyproject.toml (libs with all its extras, the services,
the cli, the root's dependency groups) and the CPU build of torch; workspace packages themselves
are left out (`make install` installs them editable, without dependencies, after the lock). The
lock's first line records a digest of those inputs, so a test fails when a pyproject's
dependencies change without the lock being made again (`make lock`).

pip-compile runs with pip's configuration of this machine: it finds the CPU build of torch there,
which a resolver that ignores pip's configuration (uv) would replace with a multi-GB CUDA build.

    python .ci/lock.py           # re-resolve requirements.lock, keeping the pins still allowed
    python .ci/lock.py --upgrade # re-resolve from scratch: the newest versions allowed
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
# torch first and pinned everywhere (the Makefile, the Dockerfile): its CPU build.
TORCH = "torch==2.13.0"
DIGEST_LINE = re.compile(r"^# inputs-sha256: ([0-9a-f]{64})$", re.MULTILINE)


def pyprojects() -> list[Path]:
    return [
        ROOT / "pyproject.toml",
        ROOT / "libs" / "pyproject.toml",
        *sorted((ROOT / "services").glob("*/pyproject.toml")),
    ]


def _requirements(path: Path) -> Iterator[str]:
    data = tomllib.loads(path.read_text())
    project = data.get("project", {})
    yield from project.get("dependencies", [])
    for extra in project.get("optional-dependencies", {}).values():
        yield from extra
    for group in data.get("dependency-groups", {}).values():
        yield from (item for item in group if isinstance(item, str))


def inputs() -> str:
    """The third-party requirements of the workspace, one a line, sorted: pip-compile's input."""
    lines = {TORCH}
    for path in pyprojects():
        lines.update(r for r in _requirements(path) if not r.startswith("kubemate-"))
    return "".join(f"{line}\n" for line in sorted(lines, key=str.lower))


def inputs_digest() -> str:
    return hashlib.sha256(inputs().encode()).hexdigest()


def recorded_digest(lock: Path = LOCK) -> str | None:
    """The digest of the inputs the lock was made from, or None without a lock."""
    if not lock.exists():
        return None
    match = DIGEST_LINE.search(lock.read_text())
    return match.group(1) if match else None


def compile_lock(extra_args: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "requirements.in"
        source.write_text(inputs())
        subprocess.run(
            [
                sys.executable,
                "-m",
                "piptools",
                "compile",
                "--quiet",
                "--allow-unsafe",  # pin setuptools too: "every dependency"
                "--strip-extras",  # a constraints file (the Dockerfile's) may not carry extras
                "--no-emit-index-url",
                "--no-emit-find-links",
                "--output-file",
                str(LOCK),
                *extra_args,
                str(source),
            ],
            check=True,
            cwd=ROOT,
            env={**os.environ, "CUSTOM_COMPILE_COMMAND": "make lock"},  # the header's "made by"
        )
    text = DIGEST_LINE.sub("", LOCK.read_text()).lstrip("\n")
    # pip-compile names the temporary input in its "via" comments; name what it stands for.
    text = text.replace(str(source), "pyproject.toml files")
    LOCK.write_text(f"# inputs-sha256: {inputs_digest()}\n{text}")


if __name__ == "__main__":
    compile_lock(sys.argv[1:])
