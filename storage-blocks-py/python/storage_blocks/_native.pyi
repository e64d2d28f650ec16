"""Type hints of the Rust extension module (storage-blocks-py/src)."""

import os
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple, Union

_Path = Union[str, os.PathLike[str]]

__version__: str

class StorageBlocksError(Exception):
    """Any failure; ``exit_code`` is the code blockctl exits with for it."""

    exit_code: int

class BackendError(StorageBlocksError):
    """Exit 1: the storage or a local file operation failed."""

class UsageError(StorageBlocksError):
    """Exit 2: bad arguments, slug or block configuration, or not supported by the backend."""

class NotFound(StorageBlocksError):
    """Exit 3: the block, path or version does not exist."""

class AuthError(StorageBlocksError):
    """Exit 4: authentication failed or permission was denied."""

class IntegrityError(StorageBlocksError):
    """Exit 5: a checksum did not match, or an archive was unsafe."""

class Conflict(StorageBlocksError):
    """Exit 6: the destination is not empty, or ``if_version`` did not hold."""

class TrustError(StorageBlocksError):
    """Exit 7: what was read is not trusted (unsigned, an untrusted key, changed after
    signing, expired, signed for another path, or rolled back)."""

class PutReport:
    @property
    def version(self) -> Optional[str]: ...
    @property
    def layout(self) -> Literal["package", "files"]: ...
    @property
    def files(self) -> int: ...
    @property
    def bytes(self) -> int: ...
    @property
    def skipped(self) -> bool: ...
    @property
    def warnings(self) -> List[str]: ...
    @property
    def record(self) -> Dict[str, Any]:
        """``message``, ``author``, ``labels`` (a dict) and ``source`` (``commit``,
        ``branch``, ``dirty``, ``origin``; ``None`` outside a git work tree)."""

class GetReport:
    @property
    def version(self) -> Optional[str]: ...
    @property
    def layout(self) -> Literal["package", "files"]: ...
    @property
    def files(self) -> int: ...
    @property
    def bytes(self) -> int: ...

class VersionInfo:
    @property
    def version(self) -> str: ...
    @property
    def created(self) -> str: ...
    @property
    def files(self) -> int: ...
    @property
    def bytes(self) -> int: ...
    @property
    def current(self) -> bool: ...
    @property
    def record(self) -> Dict[str, Any]:
        """``message``, ``author``, ``labels`` and ``source``, as ``PutReport.record``."""

class ListedFile:
    @property
    def path(self) -> str: ...
    @property
    def kind(self) -> Literal["file", "dir", "symlink"]: ...
    @property
    def size(self) -> int: ...

class RollbackReport:
    @property
    def version(self) -> str: ...
    @property
    def previous(self) -> Optional[str]: ...

def put_directory(
    local_path: _Path,
    slug: str,
    *,
    layout: Literal["package", "files"] = "package",
    ignore_file: Optional[_Path] = None,
    if_version: Optional[str] = None,
    follow_symlinks: bool = False,
    no_default_ignores: bool = False,
    message: Optional[str] = None,
    author: Optional[str] = None,
    labels: Optional[Dict[str, str]] = None,
) -> PutReport:
    """Upload the folder ``local_path`` to ``slug``. ``if_version`` replaces the current
    version only if it is that id (or unique prefix); ``"none"``: only if there is none.
    ``message``, ``author`` (default user@host) and ``labels`` are recorded in the version
    with the folder's git provenance; ``PutReport.record`` returns them."""

def get_directory(
    slug: str,
    local_path: _Path,
    *,
    version: Optional[str] = None,
    mode: Literal["empty", "replace", "merge"] = "empty",
    only: Optional[List[str]] = None,
    allow_rollback: bool = False,
) -> GetReport:
    """Download ``slug`` (the current version, or ``version``) into ``local_path``: it must be
    missing or empty (``"empty"``), becomes exactly the version (``"replace"``), or keeps
    files the version does not have (``"merge"``). ``only`` keeps the files matching one of
    its globs (``*`` stays in one folder, ``**`` crosses folders) and fetches only the frames
    that hold them; none matching raises ``NotFound``. A block with ``trusted_keys`` raises
    ``TrustError`` for a signed HEAD older than one this agent accepted, unless
    ``allow_rollback``."""

def rollback(
    slug: str,
    *,
    to: Optional[str] = None,
    if_version: Optional[str] = None,
    valid_for: Optional[float] = None,
) -> RollbackReport:
    """Make an older stored version of ``slug`` current again: ``to`` (an id or unique
    prefix), by default the one current before. ``if_version``: only if the current version
    is that one. A signing block signs the new HEAD, valid for ``valid_for`` seconds
    (default 30 days)."""

def read_path(slug: str) -> bytes:
    """One file's bytes: ``slug`` is ``TYPE/NAME/PATH/FILE``."""

def list_versions(slug: str) -> List[VersionInfo]:
    """Versions stored at ``slug``, newest first."""

def list_files(slug: str) -> List[ListedFile]:
    """Files of the current version (or of the mirror) at ``slug``."""

def check(slug: str) -> None:
    """Reach the storage of the block ``slug`` names and check its credentials."""

def import_prefect(
    api_url: str,
    api_key: Optional[str] = None,
    *,
    overwrite: bool = False,
    dry_run: bool = False,
) -> Tuple[List[Tuple[str, str]], List[Tuple[str, str]]]:
    """Import the storage blocks saved on the Prefect server at ``api_url``: returns the
    ``(blockctl id, Prefect block)`` pairs imported and ``(Prefect block, reason)`` skipped."""

def run_cli(args: Sequence[str]) -> int:
    """Run blockctl with ``args`` (program name first); return its exit code."""
