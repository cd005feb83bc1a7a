"""Rendering of the container's /etc files and in-place updates (bind mounts pin the inode)."""

from __future__ import annotations

import os
from ipaddress import IPv4Address
from pathlib import Path

from agent.network.etcfiles import (
    EtcPaths,
    HostEntry,
    render_hosts,
    render_resolv_conf,
    update_hosts,
    write_all,
)


def test_render_hosts_own_first_then_peers_without_duplicates() -> None:
    peer = HostEntry(IPv4Address("10.232.0.3"), ("db", "database"))
    text = render_hosts([HostEntry(IPv4Address("10.232.0.2"), ("web", "web", ""))], [peer, peer])
    lines = text.splitlines()
    assert lines[0] == "127.0.0.1\tlocalhost"
    assert lines[-2:] == ["10.232.0.2\tweb", "10.232.0.3\tdb database"]


def test_resolv_conf_drops_loopback_nameservers() -> None:
    host = "# generated\nnameserver 127.0.0.53\nnameserver 10.0.0.2\nnameserver ::1\nsearch example.test\n"
    assert render_resolv_conf(host) == "# generated\nnameserver 10.0.0.2\nsearch example.test\n"


def test_updates_keep_the_inode(tmp_path: Path) -> None:
    paths = EtcPaths(tmp_path / "hosts", tmp_path / "hostname", tmp_path / "resolv.conf")
    for p in (paths.hosts, paths.hostname, paths.resolv_conf):
        p.write_text("old\n")
    inode = os.stat(paths.hosts).st_ino
    write_all(paths, "host1", "long content\n" * 10, "nameserver 10.0.0.2\n")
    update_hosts(paths.hosts, "short\n")
    assert paths.hosts.read_text() == "short\n"
    assert os.stat(paths.hosts).st_ino == inode
    assert paths.hostname.read_text() == "host1\n"
    assert paths.resolv_conf.read_text() == "nameserver 10.0.0.2\n"
    update_hosts(tmp_path / "gone", "x")  # a removed container's file is skipped, not created
    assert not (tmp_path / "gone").exists()
