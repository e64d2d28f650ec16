"""The Python API against the built-in local/default block: what each function returns, the
modes and versions of a get, rollback (signed, too), and the async twins."""

import asyncio
import json
import subprocess
import time

import pytest

import storage_blocks as sb
from conftest import tree


def test_put_directory_returns_the_report_of_the_stored_version(project):
    report = sb.put_directory(project, "local/default/etl")
    assert isinstance(report, sb.PutReport)
    assert report.layout == "package"
    assert len(report.version) == 64
    assert (report.files, report.skipped) == (3, False)
    assert report.bytes == sum(len(b) for b in tree(project).values())


def test_an_unchanged_put_uploads_nothing(project):
    first = sb.put_directory(project, "local/default/etl")
    again = sb.put_directory(str(project), "local/default/etl")
    assert (again.version, again.skipped) == (first.version, True)


def test_get_directory_brings_back_the_exact_tree(project, tmp_path):
    put = sb.put_directory(project, "local/default/etl")
    got = sb.get_directory("local/default/etl", tmp_path / "run")
    assert isinstance(got, sb.GetReport)
    assert (got.version, got.files, got.layout) == (put.version, 3, "package")
    assert tree(tmp_path / "run") == tree(project)


def test_get_directory_of_a_subfolder(project, tmp_path):
    sb.put_directory(project, "local/default/etl")
    sb.get_directory("local/default/etl/sql", tmp_path / "sql")
    assert tree(tmp_path / "sql") == {"q.sql": b"select 1;\n"}


def test_get_directory_modes(project, tmp_path):
    sb.put_directory(project, "local/default/etl")
    dest = tmp_path / "run"
    dest.mkdir()
    (dest / "stale.txt").write_text("old")
    with pytest.raises(sb.Conflict):
        sb.get_directory("local/default/etl", dest)
    sb.get_directory("local/default/etl", dest, mode="merge")
    assert (dest / "stale.txt").exists() and (dest / "README.md").exists()
    sb.get_directory("local/default/etl", dest, mode="replace")
    assert tree(dest) == tree(project)


def test_get_directory_of_an_old_version_by_prefix(project, tmp_path):
    v1 = sb.put_directory(project, "local/default/etl").version
    (project / "flows" / "etl.py").write_text("def main():\n    return 'v2'\n")
    v2 = sb.put_directory(project, "local/default/etl").version
    assert v1 != v2
    sb.get_directory("local/default/etl", tmp_path / "old", version=v1[:12])
    assert b"v1" in (tmp_path / "old" / "flows" / "etl.py").read_bytes()
    sb.get_directory("local/default/etl", tmp_path / "new")
    assert b"v2" in (tmp_path / "new" / "flows" / "etl.py").read_bytes()


def test_list_versions_is_newest_first_and_marks_the_current_one(project):
    v1 = sb.put_directory(project, "local/default/etl").version
    time.sleep(1.1)  # creation times have one-second resolution
    (project / "new.txt").write_text("x")
    v2 = sb.put_directory(project, "local/default/etl").version
    versions = sb.list_versions("local/default/etl")
    assert [v.version for v in versions] == [v2, v1]
    assert [v.current for v in versions] == [True, False]
    assert versions[0].files == 4 and isinstance(versions[0], sb.VersionInfo)


def test_read_path_returns_one_files_bytes(project):
    sb.put_directory(project, "local/default/etl")
    assert sb.read_path("local/default/etl/sql/q.sql") == b"select 1;\n"


def test_list_files_lists_the_current_version(project):
    sb.put_directory(project, "local/default/etl")
    files = {f.path: (f.kind, f.size) for f in sb.list_files("local/default/etl")}
    assert files["sql/q.sql"] == ("file", 10)
    assert files["sql"][0] == "dir"


def test_check_reaches_the_block():
    assert sb.check("local/default") is None


def test_files_layout_has_no_version(project, tmp_path):
    report = sb.put_directory(project, "local/default/mirror", layout="files")
    assert (report.version, report.layout) == (None, "files")
    assert (tmp_path / "blockctl-home" / "storage" / "mirror" / "sql" / "q.sql").exists()


def test_if_version_is_a_compare_and_swap(project):
    v1 = sb.put_directory(project, "local/default/etl", if_version="none").version
    (project / "new.txt").write_text("x")
    with pytest.raises(sb.Conflict):
        sb.put_directory(project, "local/default/etl", if_version="none")
    v2 = sb.put_directory(project, "local/default/etl", if_version=v1).version
    with pytest.raises(sb.Conflict):
        sb.put_directory(project, "local/default/etl", if_version=v1)
    assert sb.list_versions("local/default/etl")[0].version == v2


def test_async_twins_give_the_same_results(project, tmp_path):
    async def scenario():
        put = await sb.aput_directory(project, "local/default/etl")
        got = await sb.aget_directory("local/default/etl", tmp_path / "run")
        versions = await sb.alist_versions("local/default/etl")
        data = await sb.aread_path("local/default/etl/README.md")
        files = await sb.alist_files("local/default/etl")
        await sb.acheck("local/default")
        return put, got, versions, data, files

    put, got, versions, data, files = asyncio.run(scenario())
    assert got.version == put.version == versions[0].version
    assert data == b"# etl\n" and len(files) == 5


def test_async_twins_raise_the_same_exceptions(tmp_path):
    with pytest.raises(sb.NotFound):
        asyncio.run(sb.aget_directory("local/default/missing", tmp_path / "run"))


def test_the_event_loop_runs_during_a_transfer(tmp_path):
    # 64 MiB of incompressible data: long enough to observe, on any machine.
    big = tmp_path / "big"
    big.mkdir()
    for i in range(16):
        (big / f"f{i}").write_bytes(bytes(__import__("os").urandom(4 << 20)))

    async def scenario():
        ticks = 0
        done = asyncio.Event()

        async def ticker():
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0.001)

        task = asyncio.create_task(ticker())
        started = time.monotonic()
        await sb.aput_directory(big, "local/default/big")
        await sb.aget_directory("local/default/big", tmp_path / "back")
        took = time.monotonic() - started
        done.set()
        await task
        return ticks, took

    ticks, took = asyncio.run(scenario())
    # With the GIL held for the transfer, the loop would not tick at all meanwhile.
    assert ticks > 10, (ticks, took)
    assert tree(tmp_path / "back") == tree(big)


def test_concurrent_async_gets_of_two_slugs(project, tmp_path):
    sb.put_directory(project, "local/default/a")
    sb.put_directory(project / "sql", "local/default/b")

    async def scenario():
        return await asyncio.gather(
            sb.aget_directory("local/default/a", tmp_path / "a"),
            sb.aget_directory("local/default/b", tmp_path / "b"),
        )

    a, b = asyncio.run(scenario())
    assert (a.files, b.files) == (3, 1)


def test_rollback_makes_an_older_version_current(project, tmp_path):
    v1 = sb.put_directory(project, "local/default/etl").version
    (project / "flows" / "etl.py").write_text("def main():\n    return 'v2'\n")
    v2 = sb.put_directory(project, "local/default/etl").version
    back = sb.rollback("local/default/etl")
    assert isinstance(back, sb.RollbackReport)
    assert (back.version, back.previous) == (v1, v2)
    sb.get_directory("local/default/etl", tmp_path / "run")
    assert b"v1" in (tmp_path / "run" / "flows" / "etl.py").read_bytes()
    again = asyncio.run(
        sb.arollback("local/default/etl", to=v2[:12], if_version=v1[:12])
    )
    assert (again.version, again.previous) == (v2, v1)
    with pytest.raises(sb.Conflict):
        sb.rollback("local/default/etl", to=v1, if_version=v1[:12])
    with pytest.raises(sb.NotFound):
        sb.rollback("local/default/etl", to="deadbeef")
    with pytest.raises(sb.UsageError):
        sb.rollback("local/default/etl", to=v1, valid_for=-1)


def test_a_trusting_get_refuses_a_replayed_head_unless_allow_rollback(project, tmp_path):
    def blockctl(*args):
        done = subprocess.run(["blockctl", *args], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout

    key = json.loads(blockctl("--json", "key", "generate", "ci", "--unencrypted"))
    store = tmp_path / "store"
    blockctl(
        "block", "create", "local/signed",
        "--set", f"basepath={store}",
        "--set", f"signing_key={key['secret_key']}",
        "--set", f"trusted_keys={key['public_key']}",
    )
    slug, head = "local/signed/etl", store / "etl" / ".blocks" / "HEAD"
    v1 = sb.put_directory(project, slug).version
    signed_v1 = head.read_bytes()
    (project / "flows" / "etl.py").write_text("def main():\n    return 'v2'\n")
    v2 = sb.put_directory(project, slug).version
    assert sb.get_directory(slug, tmp_path / "seen").version == v2
    # Someone who can write to the store puts the older signed HEAD back.
    head.write_bytes(signed_v1)
    with pytest.raises(sb.TrustError, match="older"):
        sb.get_directory(slug, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    old = asyncio.run(sb.aget_directory(slug, tmp_path / "old", allow_rollback=True))
    assert old.version == v1
    # A signed rollback is a newer HEAD: taken without being told.
    back = sb.rollback(slug, to=v2[:12], valid_for=3600)
    assert (back.version, back.previous) == (v2, v1)
    assert sb.get_directory(slug, tmp_path / "new").version == v2
