"""storage blocks from Python: ship a flow-project folder to storage and pull that exact
version back, addressed by slugs such as ``local/default/etl`` or ``s3/prod-flows/etl``.

Blocks are the ones ``blockctl`` saves (``$BLOCKCTL_HOME/blocks.toml``). Every function runs
in Rust with the GIL released; the ``a``-prefixed twins run it on a worker thread, so they
can be awaited from asyncio while other tasks go on. A failure raises the subclass of
:class:`StorageBlocksError` that matches blockctl's exit code, with blockctl's message.
"""

import asyncio
import os
from typing import Dict, List, Optional, Union

from ._native import (
    AuthError,
    BackendError,
    Conflict,
    GetReport,
    IntegrityError,
    ListedFile,
    NotFound,
    PutReport,
    RollbackReport,
    StorageBlocksError,
    TrustError,
    UsageError,
    VersionInfo,
    __version__,
    check,
    get_directory,
    list_files,
    list_versions,
    put_directory,
    read_path,
    rollback,
)

__all__ = [
    "AuthError",
    "BackendError",
    "Conflict",
    "GetReport",
    "IntegrityError",
    "ListedFile",
    "NotFound",
    "PutReport",
    "RollbackReport",
    "StorageBlocksError",
    "TrustError",
    "UsageError",
    "VersionInfo",
    "__version__",
    "acheck",
    "aget_directory",
    "alist_files",
    "alist_versions",
    "aput_directory",
    "aread_path",
    "arollback",
    "check",
    "get_directory",
    "list_files",
    "list_versions",
    "put_directory",
    "read_path",
    "rollback",
]

PathLike = Union[str, "os.PathLike[str]"]


async def aput_directory(
    local_path: PathLike,
    slug: str,
    *,
    layout: str = "package",
    ignore_file: Optional[PathLike] = None,
    if_version: Optional[str] = None,
    follow_symlinks: bool = False,
    no_default_ignores: bool = False,
    message: Optional[str] = None,
    author: Optional[str] = None,
    labels: Optional[Dict[str, str]] = None,
) -> PutReport:
    """:func:`put_directory` on a worker thread."""
    return await asyncio.to_thread(
        put_directory,
        local_path,
        slug,
        layout=layout,
        ignore_file=ignore_file,
        if_version=if_version,
        follow_symlinks=follow_symlinks,
        no_default_ignores=no_default_ignores,
        message=message,
        author=author,
        labels=labels,
    )


async def aget_directory(
    slug: str,
    local_path: PathLike,
    *,
    version: Optional[str] = None,
    mode: str = "empty",
    only: Optional[List[str]] = None,
    allow_rollback: bool = False,
) -> GetReport:
    """:func:`get_directory` on a worker thread."""
    return await asyncio.to_thread(
        get_directory,
        slug,
        local_path,
        version=version,
        mode=mode,
        only=only,
        allow_rollback=allow_rollback,
    )


async def arollback(
    slug: str,
    *,
    to: Optional[str] = None,
    if_version: Optional[str] = None,
    valid_for: Optional[float] = None,
) -> RollbackReport:
    """:func:`rollback` on a worker thread."""
    return await asyncio.to_thread(
        rollback, slug, to=to, if_version=if_version, valid_for=valid_for
    )


async def aread_path(slug: str) -> bytes:
    """:func:`read_path` on a worker thread."""
    return await asyncio.to_thread(read_path, slug)


async def alist_versions(slug: str) -> List[VersionInfo]:
    """:func:`list_versions` on a worker thread."""
    return await asyncio.to_thread(list_versions, slug)


async def alist_files(slug: str) -> List[ListedFile]:
    """:func:`list_files` on a worker thread."""
    return await asyncio.to_thread(list_files, slug)


async def acheck(slug: str) -> None:
    """:func:`check` on a worker thread."""
    await asyncio.to_thread(check, slug)
