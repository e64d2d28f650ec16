"""storage blocks under real Prefect: a server and a process worker started by the Rust
harness (tests/prefect.rs), which passes PREFECT_API_URL, E2E_POOL, E2E_S3_ENDPOINT (moto)
and the BLOCKCTL_HOME the worker shares. Each flow run executes code that exists only in
the version pushed to storage: the project folder is deleted before the run."""

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

import storage_blocks as sb
from storage_blocks.prefect import BlockStorage, import_prefect_blocks

POOL = os.environ["E2E_POOL"]
S3_ENDPOINT = os.environ["E2E_S3_ENDPOINT"]
SECRET = "e2e-SECRET-7f3kq9ZxWvB2"
TIMINGS = Path(os.environ["E2E_TIMINGS"])


def record(name: str, seconds: float) -> None:
    """Timings the Rust side prints at the end."""
    with TIMINGS.open("a") as f:
        f.write(json.dumps({"what": name, "seconds": round(seconds, 3)}) + "\n")


def blockctl(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["blockctl", *args], capture_output=True, text=True)
    if ok:
        assert done.returncode == 0, done.stderr
    return done


@pytest.fixture(scope="session")
def s3_block() -> str:
    """An S3 block on moto, bucket created through the block's own put."""
    bucket = "e2e-" + uuid.uuid4().hex[:8]
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"{S3_ENDPOINT}/{bucket}", method="PUT"))
    blockctl(
        "block", "create", "s3/e2e",
        "--set", f"bucket={bucket}",
        "--set", f"endpoint={S3_ENDPOINT}",
        "--set", "access_key_id=e2e",
        "--set", f"secret_access_key={SECRET}",
    )
    return "s3/e2e"


def make_project(root: Path, token: str) -> Path:
    """A flow whose result comes from a helper module beside it: `main(out)` writes the
    helper's token, and where it ran, to `out`."""
    (root / "flows").mkdir(parents=True)
    (root / "flows" / "etl.py").write_text(
        textwrap.dedent(
            """
            import os, sys
            from pathlib import Path
            from prefect import flow

            sys.path.insert(0, str(Path(__file__).parent))
            import helper

            @flow(name="etl")
            def main(out: str):
                Path(out).write_text(helper.TOKEN + "\\n" + os.getcwd())
            """
        )
    )
    (root / "flows" / "helper.py").write_text(f"TOKEN = {token!r}\n")
    return root


def run_and_read(deployment: str, out: Path) -> str:
    from prefect.deployments import run_deployment

    run = run_deployment(
        deployment, parameters={"out": str(out)}, timeout=300, poll_interval=1
    )
    assert run.state is not None and run.state.is_completed(), run.state
    return out.read_text().split("\n")[0]


@pytest.mark.parametrize("target", ["local", "s3"])
def test_from_source_deployment_runs_code_only_in_the_pushed_project(
    target, tmp_path, request
):
    slug = f"local/default/fs-{uuid.uuid4().hex[:8]}"
    if target == "s3":
        slug = request.getfixturevalue("s3_block") + f"/fs-{uuid.uuid4().hex[:8]}"
    token = uuid.uuid4().hex
    project = make_project(tmp_path / "project", token)
    sb.put_directory(project, slug)
    shutil.rmtree(project)

    from prefect import Flow

    started = time.monotonic()
    flow = Flow.from_source(BlockStorage(slug), "flows/etl.py:main")
    deployment_id = flow.deploy(f"from-source-{target}", work_pool_name=POOL, print_next_steps=False)
    record(f"from_source + deploy ({target})", time.monotonic() - started)
    assert deployment_id

    assert run_and_read(f"etl/from-source-{target}", tmp_path / "out.txt") == token


def test_push_step_deployment_stays_on_its_version(s3_block, tmp_path):
    slug = f"{s3_block}/pinned-{uuid.uuid4().hex[:8]}"
    token_a, token_b = uuid.uuid4().hex, uuid.uuid4().hex
    project = make_project(tmp_path / "project", token_a)
    (project / "prefect.yaml").write_text(
        textwrap.dedent(
            f"""
            name: e2e
            push:
              - storage_blocks.prefect.push_project:
                  id: push-code
                  slug: {slug}
            pull:
              - storage_blocks.prefect.pull_project:
                  slug: {slug}
                  version: "{{{{ push-code.version }}}}"
            deployments:
              - name: pinned
                entrypoint: flows/etl.py:main
                work_pool:
                  name: {POOL}
            """
        )
    )
    deploy = subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--name", "pinned"],
        cwd=project,
        capture_output=True,
        text=True,
    )
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    version_a = sb.list_versions(slug)[0].version

    # Version B becomes current; the deployment must still run A.
    (project / "flows" / "helper.py").write_text(f"TOKEN = {token_b!r}\n")
    version_b = sb.put_directory(project, slug).version
    assert version_b != version_a and sb.list_versions(slug)[0].version == version_b
    shutil.rmtree(project)

    assert run_and_read("etl/pinned", tmp_path / "out.txt") == token_a


def test_pull_step_time_beside_prefects_git_clone(s3_block, tmp_path, monkeypatch):
    """One run of each on the same project: storage blocks' pull step from local/default
    and from S3 (moto) beside Prefect's own git_clone step from a file:// repository
    (pull_from_s3 needs prefect-aws, which these tests do not install)."""
    import asyncio

    from prefect.deployments.steps.core import run_steps

    project = make_project(tmp_path / "project", "timing")
    for i in range(200):
        folder = project / "data" / f"d{i // 50}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i}.txt").write_text(f"{i:08d}" * 512)
    local_slug, s3_slug = "local/default/timing", f"{s3_block}/timing"
    sb.put_directory(project, local_slug)
    sb.put_directory(project, s3_slug)
    repo = tmp_path / "repo.git"
    git = ["git", "-c", "user.name=e2e", "-c", "user.email=e2e@localhost"]
    subprocess.run([*git, "init", "-q", "-b", "main", str(project)], check=True)
    subprocess.run([*git, "-C", str(project), "add", "-A"], check=True)
    subprocess.run([*git, "-C", str(project), "commit", "-qm", "timing"], check=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(project), str(repo)], check=True)

    for name, step in [
        ("pull step: storage_blocks.prefect.pull_project (local/default)",
         {"storage_blocks.prefect.pull_project": {"slug": local_slug}}),
        ("pull step: storage_blocks.prefect.pull_project (s3 on moto)",
         {"storage_blocks.prefect.pull_project": {"slug": s3_slug}}),
        ("pull step: prefect.deployments.steps.git_clone (file:// repository)",
         {"prefect.deployments.steps.git_clone": {"repository": f"file://{repo}"}}),
    ]:
        run_dir = tmp_path / f"run-{len(name)}-{uuid.uuid4().hex[:6]}"
        run_dir.mkdir()
        monkeypatch.chdir(run_dir)
        started = time.monotonic()
        out = asyncio.run(run_steps([step]))
        record(name, time.monotonic() - started)
        assert (Path(out["directory"]) / "flows" / "helper.py").exists(), out


def test_import_brings_prefect_blocks_into_the_registry(s3_block, tmp_path):
    from prefect.blocks.system import Secret
    from prefect.filesystems import SMB, LocalFileSystem, RemoteFileSystem

    bucket = json.loads(blockctl("--json", "block", "inspect", s3_block).stdout)["fields"]["bucket"]
    suffix = uuid.uuid4().hex[:6]
    (tmp_path / "store").mkdir()
    LocalFileSystem(basepath=str(tmp_path / "store")).save(f"team-local-{suffix}")
    RemoteFileSystem(
        basepath=f"s3://{bucket}/imported",
        settings={"key": "AKIAIMPORT", "secret": SECRET,
                  "client_kwargs": {"endpoint_url": S3_ENDPOINT}},
    ).save(f"team-s3-{suffix}")
    SMB(share_path="/flows/team", smb_host="127.0.0.1", smb_username="deploy",
        smb_password=SECRET).save(f"team-smb-{suffix}")
    Secret(value=SECRET).save(f"not-storage-{suffix}")

    done = blockctl("block", "import-prefect")
    for text in (done.stdout, done.stderr):
        assert SECRET not in text
    assert f"imported s3/team-s3-{suffix}" in done.stdout
    assert f"imported local/team-local-{suffix}" in done.stdout
    assert f"imported smb/team-smb-{suffix}" in done.stdout
    assert f"Prefect block secret/not-storage-{suffix}" in done.stderr

    registry = Path(os.environ["BLOCKCTL_HOME"]) / "blocks.toml"
    assert stat.S_IMODE(registry.stat().st_mode) == 0o600
    assert SECRET in registry.read_text()
    inspect = blockctl("block", "inspect", f"smb/team-smb-{suffix}").stdout
    assert SECRET not in inspect and "********" in inspect

    blockctl("block", "check", f"s3/team-s3-{suffix}")
    blockctl("block", "check", f"local/team-local-{suffix}")
    project = make_project(tmp_path / "project", "imported")
    version = sb.put_directory(project, f"s3/team-s3-{suffix}/etl").version
    assert sb.list_versions(f"s3/team-s3-{suffix}/etl")[0].version == version

    # The Python function: the same import, already done, so everything is skipped.
    report = import_prefect_blocks()
    assert not any(suffix in block for block, _ in report.imported)
    assert SECRET not in repr(report)
    reasons = dict(report.skipped)
    assert "already in the registry" in reasons[f"remote-file-system/team-s3-{suffix}"]
