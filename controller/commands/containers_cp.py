"""`cp`: files between a container and the local filesystem, as tar streams (`-` for stdin/stdout).

The container side is the agent's (resolved by directory fd inside the container's root); this side packs
a local path into a spooled tar, or unpacks one by Docker's rule for the destination.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tarfile
import tempfile
from collections.abc import AsyncIterator
from typing import IO

import click

from controller.api.containers import ContainersApi
from controller.app import App, HostOutput
from controller.client import AgentClient
from controller.commands.containers_common import single
from controller.errors import UsageError

CHUNK = 1 << 20


def split_target(arg: str) -> tuple[str | None, str]:
    """`CTR:/path` → ("CTR", "/path"); a local path (absolute, ./relative, or without a colon) → (None, p)."""
    if arg.startswith(("/", ".")) or ":" not in arg:
        return None, arg
    ctr, _, path = arg.partition(":")
    return ctr, path


def local_tar(src: str) -> IO[bytes]:
    """`src` (a file or a tree) as a tar in a temporary file, named by its last path component."""
    spool: IO[bytes] = tempfile.TemporaryFile()
    with tarfile.open(fileobj=spool, mode="w") as tar:
        tar.add(src, arcname=os.path.basename(os.path.normpath(src)) or ".")
    spool.seek(0)
    return spool


def extract_local(spool: IO[bytes], dest: str) -> None:
    """Docker's rule: into DEST when it is a directory, else as DEST (its parent must exist)."""
    with tarfile.open(fileobj=spool, mode="r") as tar:
        if os.path.isdir(dest):
            tar.extractall(dest, filter="tar")
            return
        parent = os.path.dirname(os.path.abspath(dest))
        if not os.path.isdir(parent):
            raise UsageError(f"the destination directory {parent} does not exist")
        rename = os.path.basename(dest)
        for member in tar.getmembers():
            _, sep, rest = member.name.lstrip("./").partition("/")
            member.name = rename + (sep + rest if sep else "")
            tar.extract(member, parent, filter="tar")


async def _chunks(spool: IO[bytes]) -> AsyncIterator[bytes]:
    while chunk := await asyncio.to_thread(spool.read, CHUNK):
        yield chunk


@click.command()
@click.argument("source")
@click.argument("destination")
@click.pass_obj
def cp(app: App, source: str, destination: str) -> None:
    """Copy files between a container and the local filesystem (CTR:PATH on one side; - for a tar stream)."""
    single(app, "cp")
    src_ctr, src_path = split_target(source)
    dst_ctr, dst_path = split_target(destination)
    if (src_ctr is None) == (dst_ctr is None):
        raise UsageError("exactly one of SOURCE and DESTINATION must be CONTAINER:PATH")
    if dst_ctr is not None:
        to_ctr = dst_ctr
        if not dst_path.startswith("/"):
            dst_path = "/" + dst_path
        if src_path != "-" and not os.path.lexists(src_path):
            raise UsageError(f"no such local file or directory: {src_path}")

        async def upload(client: AgentClient, out: HostOutput) -> None:
            spool = sys.stdin.buffer if src_path == "-" else await asyncio.to_thread(local_tar, src_path)
            try:
                await ContainersApi(client).copy_to(to_ctr, dst_path, _chunks(spool))
            finally:
                if spool is not sys.stdin.buffer:
                    spool.close()

        app.run(upload)
        return
    assert src_ctr is not None
    from_ctr = src_ctr
    path = src_path if src_path.startswith("/") else "/" + src_path

    async def download(client: AgentClient, out: HostOutput) -> None:
        tar = ContainersApi(client).copy_from(from_ctr, path)
        if dst_path == "-":
            async for data in tar:
                sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
            return
        with tempfile.TemporaryFile() as spool:
            async for data in tar:
                spool.write(data)
            spool.seek(0)
            await asyncio.to_thread(extract_local, spool, dst_path)

    app.run(download)
