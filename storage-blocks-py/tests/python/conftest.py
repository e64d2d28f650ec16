"""Fixtures of the unit tests: each test gets its own blockctl home (registry, local/default
storage and caches), and a small project folder to ship."""

import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def blockctl_home(tmp_path, monkeypatch):
    home = tmp_path / "blockctl-home"
    home.mkdir()
    monkeypatch.setenv("BLOCKCTL_HOME", str(home))
    return home


@pytest.fixture
def project(tmp_path) -> Path:
    root = tmp_path / "project"
    (root / "flows").mkdir(parents=True)
    (root / "flows" / "etl.py").write_text("def main():\n    return 'v1'\n")
    (root / "sql").mkdir()
    (root / "sql" / "q.sql").write_text("select 1;\n")
    (root / "README.md").write_text("# etl\n")
    return root


def tree(root: Path) -> dict:
    """Relative path -> bytes of every file under root."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def pytest_configure(config):
    # The tests read their own files only; never write bytecode into the checkout.
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
