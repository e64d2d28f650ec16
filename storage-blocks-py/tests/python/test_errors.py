"""Every exception class: its exit code, its place under StorageBlocksError, and a message
as blockctl prints it, with no secret in it."""

import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import storage_blocks as sb

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYzz9sEcReT"

CLASSES = {
    sb.BackendError: 1,
    sb.UsageError: 2,
    sb.NotFound: 3,
    sb.AuthError: 4,
    sb.IntegrityError: 5,
    sb.Conflict: 6,
    sb.TrustError: 7,
}


def test_every_class_has_its_exit_code_under_one_base():
    assert sb.StorageBlocksError.exit_code == 1
    assert issubclass(sb.StorageBlocksError, Exception)
    for cls, code in CLASSES.items():
        assert issubclass(cls, sb.StorageBlocksError)
        assert cls.exit_code == code
        assert cls.__module__ == "storage_blocks"


class _Answer(BaseHTTPRequestHandler):
    """Answers every request with the server's fixed status and S3-style error body."""

    def _reply(self):
        status, code = self.server.answer
        body = f"<Error><Code>{code}</Code><Message>no</Message></Error>".encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _reply

    def log_message(self, *args):
        pass


@pytest.fixture
def s3_answering():
    """An S3 block (with a secret key) whose endpoint answers every request with one
    status: a real HTTP exchange with a server that refuses."""
    servers = []

    def make(status, code):
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
        server.answer = (status, code)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        name = f"refuses-{status}"
        blockctl(
            "block", "create", f"s3/{name}",
            "--set", "bucket=flows",
            "--set", f"endpoint=http://127.0.0.1:{server.server_address[1]}",
            "--set", "access_key_id=AKIAEXAMPLE",
            "--set", f"secret_access_key={SECRET}",
        )
        return f"s3/{name}"

    yield make
    for server in servers:
        server.shutdown()


def blockctl(*args):
    done = subprocess.run(["blockctl", *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done


def raised(cls, call, *args, **kwargs):
    with pytest.raises(cls) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert type(info.value) is cls
    assert "\n" not in message and not message.startswith("blockctl:")
    assert SECRET not in message
    return message


def test_backend_error_for_a_failed_local_operation(project, tmp_path):
    sb.put_directory(project, "local/default/etl")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    message = raised(sb.BackendError, sb.get_directory, "local/default/etl", blocker / "run")
    assert "a-file" in message


def test_backend_error_for_a_refusing_server(s3_answering, tmp_path):
    slug = s3_answering(400, "InvalidRequest")
    raised(sb.BackendError, sb.get_directory, f"{slug}/etl", tmp_path / "run")


def test_usage_error_for_a_bad_slug_and_bad_options(project, tmp_path):
    raised(sb.UsageError, sb.list_versions, "no-slash")
    raised(sb.UsageError, sb.read_path, "local/default/../etc")
    raised(sb.UsageError, sb.put_directory, project, "local/default/etl", layout="zip")
    raised(sb.UsageError, sb.get_directory, "local/default/etl", tmp_path / "r", mode="x")
    raised(sb.UsageError, sb.read_path, "local/default")


def test_not_found_for_a_missing_block_path_or_version(project, tmp_path):
    assert "s3/nowhere" in raised(sb.NotFound, sb.check, "s3/nowhere")
    message = raised(sb.NotFound, sb.get_directory, "local/default/none", tmp_path / "r")
    assert "local/default/none" in message
    sb.put_directory(project, "local/default/etl")
    raised(sb.NotFound, sb.get_directory, "local/default/etl", tmp_path / "r", version="ffff")


def test_auth_error_for_a_refused_key(s3_answering, tmp_path):
    slug = s3_answering(403, "AccessDenied")
    message = raised(sb.AuthError, sb.get_directory, f"{slug}/etl", tmp_path / "run")
    assert slug in message
    raised(sb.AuthError, sb.check, slug)


def test_integrity_error_for_a_corrupted_package(project, tmp_path, blockctl_home):
    sb.put_directory(project, "local/default/etl")
    # Format 3 keeps the frames in packs: damage the largest one.
    packs = blockctl_home / "storage" / "etl" / ".blocks" / "packs"
    frame = max(packs.iterdir(), key=lambda f: f.stat().st_size)
    data = bytearray(frame.read_bytes())
    data[len(data) // 2] ^= 0xFF
    frame.write_bytes(bytes(data))
    raised(sb.IntegrityError, sb.get_directory, "local/default/etl", tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_conflict_for_a_non_empty_destination(project, tmp_path):
    sb.put_directory(project, "local/default/etl")
    raised(sb.Conflict, sb.get_directory, "local/default/etl", project)


def test_the_console_script_exits_with_the_same_codes(project, tmp_path):
    ok = blockctl("--json", "put", str(project), "local/default/etl")
    assert '"version"' in ok.stdout
    done = subprocess.run(
        ["blockctl", "get", "local/default/etl", str(project)], capture_output=True, text=True
    )
    assert done.returncode == sb.Conflict.exit_code
    assert done.stderr.startswith("blockctl: ")
    done = subprocess.run(["blockctl", "--version"], capture_output=True, text=True)
    assert (done.returncode, done.stdout.strip()) == (0, f"blockctl {sb.__version__}")
    done = subprocess.run(["blockctl", "no-such-command"], capture_output=True, text=True)
    assert done.returncode == 2


def test_the_type_hints_cover_the_module():
    import ast
    import importlib.resources

    import storage_blocks._native as native

    package = importlib.resources.files("storage_blocks")
    assert package.joinpath("py.typed").is_file()
    stub = ast.parse(package.joinpath("_native.pyi").read_text())
    hinted = {
        node.name
        for node in stub.body
        if isinstance(node, (ast.FunctionDef, ast.ClassDef))
    }
    public = {name for name in dir(native) if not name.startswith("_")}
    assert public == hinted, public ^ hinted
