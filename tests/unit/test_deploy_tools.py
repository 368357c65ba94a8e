"""A missing Debian tool (promtool, amtool, prometheus, alertmanager) fails its tests where it
could have been installed (CI, or root with apt-get), and skips them only elsewhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import deploy_tools


@pytest.fixture
def no_tools(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing found there
    monkeypatch.delenv("CI", raising=False)
    return monkeypatch


def test_found_on_the_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    tool = tmp_path / "promtool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert deploy_tools.promtool() == tool


def test_missing_in_ci_fails(no_tools: pytest.MonkeyPatch) -> None:
    no_tools.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="apt-get install prometheus"):
        deploy_tools.promtool()


def test_missing_where_root_has_apt_fails(no_tools: pytest.MonkeyPatch, tmp_path: Path) -> None:
    apt = tmp_path / "apt-get"
    apt.write_text("#!/bin/sh\n")
    apt.chmod(0o755)
    no_tools.setattr(deploy_tools.os, "geteuid", lambda: 0)
    with pytest.raises(pytest.fail.Exception, match="may not skip"):
        deploy_tools.debian_tool("amtool", "prometheus-alertmanager")


def test_missing_elsewhere_skips(no_tools: pytest.MonkeyPatch) -> None:
    no_tools.setattr(deploy_tools.os, "geteuid", lambda: 1000)
    with pytest.raises(pytest.skip.Exception):
        deploy_tools.promtool()
