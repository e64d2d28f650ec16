"""Times Prefect's own put_directory / get_directory for the benchmark command.

    python prefect_put_get.py put|get LOCAL_DIR BASEPATH REMOTE_PATH [S3_ENDPOINT]

BASEPATH is a folder (LocalFileSystem) or s3://bucket/prefix (RemoteFileSystem over s3fs,
with S3_ENDPOINT as the endpoint and any keys, as moto takes). Prints the seconds spent
inside the call only, so Python's start-up and imports are not counted against Prefect.
"""

import asyncio
import inspect
import sys
import time


def block(basepath, endpoint):
    if basepath.startswith("s3://"):
        from prefect.filesystems import RemoteFileSystem

        return RemoteFileSystem(
            basepath=basepath,
            settings={
                "key": "bench",
                "secret": "bench",
                "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
            },
        )
    from prefect.filesystems import LocalFileSystem

    return LocalFileSystem(basepath=basepath)


def call(result):
    # Prefect 3 methods are sync-or-async depending on the caller; run a coroutine if given.
    if inspect.isawaitable(result):
        return asyncio.run(result)
    return result


def main():
    op, local, basepath, remote = sys.argv[1:5]
    endpoint = sys.argv[5] if len(sys.argv) > 5 else None
    fs = block(basepath, endpoint)
    started = time.perf_counter()
    if op == "put":
        call(fs.put_directory(local_path=local, to_path=remote))
    elif op == "get":
        call(fs.get_directory(from_path=remote, local_path=local))
    else:
        sys.exit(f"unknown op {op}")
    print(f"{time.perf_counter() - started:.6f}")


if __name__ == "__main__":
    main()
