"""storage_blocks.prefect without a server: the runner-storage protocol and the steps
called directly (tests/e2e runs them through Prefect's step runner, against a server)."""

import asyncio
from pathlib import Path

import pytest

from prefect.runner.storage import RunnerStorage

import storage_blocks as sb
from conftest import tree
from storage_blocks.prefect import BlockStorage, pull_project, push_project


def test_block_storage_is_prefect_runner_storage(tmp_path):
    storage = BlockStorage("s3/prod-flows/etl")
    assert isinstance(storage, RunnerStorage)
    storage.set_base_path(tmp_path)
    assert storage.destination == tmp_path / "s3" / "prod-flows" / "etl"
    assert storage.pull_interval == 60
    assert storage.to_pull_step() == {
        "storage_blocks.prefect.pull_project": {"slug": "s3/prod-flows/etl"}
    }
    pinned = BlockStorage("s3/prod-flows/etl", version="3f9a1c")
    assert pinned.pull_interval is None
    assert pinned.to_pull_step()["storage_blocks.prefect.pull_project"]["version"] == "3f9a1c"
    assert pinned == BlockStorage("s3/prod-flows/etl", version="3f9a1c") != storage


def test_pull_code_gets_the_current_version_and_refreshes_it(project, tmp_path):
    sb.put_directory(project, "local/default/etl")
    storage = BlockStorage("local/default/etl")
    storage.set_base_path(tmp_path / "base")
    asyncio.run(storage.pull_code())
    assert tree(storage.destination) == tree(project)
    (project / "flows" / "etl.py").write_text("def main():\n    return 'v2'\n")
    sb.put_directory(project, "local/default/etl")
    asyncio.run(storage.pull_code())
    assert tree(storage.destination) == tree(project)


def test_push_and_pull_steps_pin_a_version(project, tmp_path, monkeypatch):
    monkeypatch.chdir(project)
    pushed = push_project("local/default/etl")
    assert pushed["version"] and pushed["files"] == 3 and not pushed["skipped"]
    (project / "flows" / "etl.py").write_text("def main():\n    return 'v2'\n")
    push_project("local/default/etl", directory=str(project))

    monkeypatch.chdir(tmp_path)
    out = pull_project("local/default/etl", version=pushed["version"])
    assert out["version"] == pushed["version"]
    assert b"v1" in (Path(out["directory"]) / "flows" / "etl.py").read_bytes()
    # A second run in the same folder gets the current version over the old one.
    out = pull_project("local/default/etl")
    assert b"v2" in (Path(out["directory"]) / "flows" / "etl.py").read_bytes()



def test_the_pull_step_takes_only_the_folders_it_names(project, tmp_path, monkeypatch):
    monkeypatch.chdir(project)
    push_project("local/default/etl")
    monkeypatch.chdir(tmp_path)
    out = pull_project("local/default/etl", only="flows/**")
    assert tree(Path(out["directory"])) == {"flows/etl.py": (project / "flows" / "etl.py").read_bytes()}
    out = pull_project("local/default/etl", only=["sql/*", "README.md"])
    assert sorted(tree(Path(out["directory"]))) == ["README.md", "sql/q.sql"]
    with pytest.raises(sb.NotFound):
        pull_project("local/default/etl", only=["nothing/**"])
    assert sorted(tree(Path(out["directory"]))) == ["README.md", "sql/q.sql"]
