"""storage blocks for Prefect 3: runner storage for ``flow.from_source``, steps for
``prefect.yaml``, and an import of the storage blocks saved on a Prefect server.

Runner storage::

    from storage_blocks.prefect import BlockStorage

    flow.from_source(BlockStorage("s3/prod-flows/etl"), "flows/etl.py:main").deploy(
        "etl", work_pool_name="process"
    )

The deployment's pull step then gets ``s3/prod-flows/etl`` through storage blocks on the
worker, which needs this package and the block (``blockctl block create`` or
:func:`import_prefect_blocks`) on its side.

Steps, in ``prefect.yaml``; the pull step gets exactly the version the push step stored::

    push:
      - storage_blocks.prefect.push_project:
          id: push-code
          slug: s3/prod-flows/etl
    pull:
      - storage_blocks.prefect.pull_project:
          slug: s3/prod-flows/etl
          version: "{{ push-code.version }}"
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any, Dict, List, Optional, Union

from . import aget_directory, get_directory, put_directory

__all__ = [
    "BlockStorage",
    "ImportReport",
    "import_prefect_blocks",
    "pull_project",
    "push_project",
]


def _slug_folder(slug: str) -> PurePosixPath:
    """The folder a slug is pulled into, below a base path: the slug's own segments, so
    two slugs never share one (``s3/prod/etl`` -> ``s3/prod/etl``)."""
    return PurePosixPath(*[part for part in slug.split("/") if part])


class BlockStorage:
    """Prefect runner storage that pulls a slug through storage blocks.

    ``version`` pins one stored version (an id or a unique prefix); without it every pull
    gets the current one, refreshed every ``pull_interval`` seconds by a serving runner
    (``None``: pulled once).
    """

    def __init__(
        self,
        slug: str,
        version: Optional[str] = None,
        pull_interval: Optional[int] = 60,
    ) -> None:
        self._slug = slug
        self._version = version
        self._pull_interval = None if version else pull_interval
        self._base_path = Path.cwd()

    @property
    def slug(self) -> str:
        return self._slug

    @property
    def version(self) -> Optional[str]:
        return self._version

    def set_base_path(self, path: Path) -> None:
        self._base_path = Path(path)

    @property
    def pull_interval(self) -> Optional[int]:
        return self._pull_interval

    @property
    def destination(self) -> Path:
        return self._base_path / _slug_folder(self._slug)

    async def pull_code(self) -> None:
        """Gets the stored version into ``destination``: the first pull renames the
        verified tree into place; a later one (a serving runner refreshing every
        ``pull_interval``) overwrites files in place, as Prefect's own storages do, so
        runs started from the folder never have it swapped from under them."""
        self.destination.parent.mkdir(parents=True, exist_ok=True)
        await aget_directory(
            self._slug, self.destination, version=self._version, mode="merge"
        )

    def to_pull_step(self) -> Dict[str, Any]:
        step: Dict[str, Any] = {"slug": self._slug}
        if self._version:
            step["version"] = self._version
        return {"storage_blocks.prefect.pull_project": step}

    def __eq__(self, other: Any) -> bool:
        return (
            isinstance(other, BlockStorage)
            and self._slug == other._slug
            and self._version == other._version
        )

    def __hash__(self) -> int:
        return hash((self._slug, self._version))

    def __repr__(self) -> str:
        version = f", version={self._version!r}" if self._version else ""
        return f"BlockStorage({self._slug!r}{version})"


def push_project(
    slug: str,
    directory: Optional[str] = None,
    layout: str = "package",
    ignore_file: Optional[str] = None,
    if_version: Optional[str] = None,
    message: Optional[str] = None,
    labels: Optional[Dict[str, str]] = None,
    author: Optional[str] = None,
) -> Dict[str, Any]:
    """Push step: uploads ``directory`` (default: the project folder Prefect runs the step
    in) to ``slug``, recording ``message``, ``labels`` and ``author`` (default user@host)
    with the folder's git provenance. Returns ``version`` (the id to pin), ``slug``,
    ``files``, ``bytes``, ``skipped`` (nothing uploaded: that version was already stored)
    and ``record`` (``message``, ``author``, ``labels``, ``source``: ``commit``, ``branch``,
    ``dirty``, ``origin``), so a deployment's version can be set from it, e.g.
    ``version: "{{ push-code.record.source.commit }}"``."""
    report = put_directory(
        directory or os.getcwd(),
        slug,
        layout=layout,
        ignore_file=ignore_file,
        if_version=if_version,
        message=message,
        author=author,
        labels=labels,
    )
    return {
        "slug": slug,
        "version": report.version,
        "files": report.files,
        "bytes": report.bytes,
        "skipped": report.skipped,
        "record": dict(report.record),
    }


def pull_project(
    slug: str,
    version: Optional[str] = None,
    directory: Optional[str] = None,
    only: Optional[Union[str, List[str]]] = None,
) -> Dict[str, Any]:
    """Pull step: gets ``slug`` (the current version, or ``version``) into ``directory``
    (default: a folder named after the slug below the working directory), which becomes
    exactly that version, or with ``only`` (a glob or a list of them, e.g. ``flows/etl/**``)
    exactly the files of it that match: one repository, many deployments, each pulling
    its own folder. Returns ``directory``, where Prefect then runs the flow, and the
    ``version`` pulled."""
    dest = Path(directory) if directory else Path.cwd() / _slug_folder(slug)
    dest.parent.mkdir(parents=True, exist_ok=True)
    globs = [only] if isinstance(only, str) else list(only or [])
    # An empty string is what an unset template variable leaves: take it as "current".
    report = get_directory(
        slug,
        dest,
        version=version or None,
        mode="replace",
        only=[g for g in globs if g] or None,
    )
    return {"directory": str(dest), "version": report.version}


class ImportReport:
    """What :func:`import_prefect_blocks` did: ``imported`` lists ``(blockctl id, Prefect
    block)`` pairs, ``skipped`` the blocks left alone (``(Prefect block, reason)``: already in
    the registry, or a type or setting storage blocks cannot map). Never holds a secret."""

    def __init__(self, imported: List[tuple], skipped: List[tuple]) -> None:
        self.imported = imported
        self.skipped = skipped

    def __repr__(self) -> str:
        return f"ImportReport(imported={self.imported!r}, skipped={self.skipped!r})"


def import_prefect_blocks(
    api_url: Optional[str] = None,
    api_key: Optional[str] = None,
    *,
    overwrite: bool = False,
    dry_run: bool = False,
) -> ImportReport:
    """Imports the storage blocks saved on a Prefect server into blockctl's registry,
    secrets included (the registry is mode 0600); the same as ``blockctl block
    import-prefect``. The server is ``api_url``, else Prefect's own setting
    ``PREFECT_API_URL`` (environment or active profile); ``api_key`` likewise."""
    if api_url is None or api_key is None:
        try:
            from prefect.settings import PREFECT_API_KEY, PREFECT_API_URL
        except ImportError:
            pass
        else:
            api_url = api_url or PREFECT_API_URL.value()
            key = PREFECT_API_KEY.value()
            if hasattr(key, "get_secret_value"):
                key = key.get_secret_value()
            api_key = api_key or key
    if not api_url:
        from . import UsageError

        raise UsageError("no Prefect API URL: pass api_url or set PREFECT_API_URL")
    from ._native import import_prefect

    imported, skipped = import_prefect(
        api_url, api_key, overwrite=overwrite, dry_run=dry_run
    )
    return ImportReport(imported, skipped)
