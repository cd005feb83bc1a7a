"""The two kernel switches container networking needs, written through /proc/sys.

- `net.ipv4.ip_forward`: containers' traffic is routed by the host. The kernel only has a global switch
  for IPv4 (forwarding is decided by the *incoming* interface's flag, and replies come in on the uplink),
  so like Docker and podman we turn it on; what may actually be forwarded into our subnets is limited by
  our nftables forward chain (replies, published ports, same-network traffic; see `nft.py`).
- `net.ipv4.conf.<bridge>.route_localnet`: lets packets from 127.0.0.1 that were DNATed to a container
  (a published port used via localhost) leave through the bridge. Set per bridge, never for "all", so
  loopback addresses stay martian on every other interface.
"""

from __future__ import annotations

from pathlib import Path

from agent.errors import NetworkSetup

PROC_SYS = Path("/proc/sys")


def _write(key: str, value: str) -> None:
    path = PROC_SYS / key.replace(".", "/")
    try:
        if path.read_text().strip() == value:
            return
        path.write_text(value + "\n")
    except OSError as exc:
        raise NetworkSetup(f"cannot set {key}={value}: {exc.strerror}") from exc


def enable_forwarding() -> None:
    _write("net.ipv4.ip_forward", "1")


def enable_route_localnet(bridge: str) -> None:
    # Interface names may contain dots, which sysctl keys cannot, so build this path by hand.
    path = PROC_SYS / "net" / "ipv4" / "conf" / bridge / "route_localnet"
    try:
        if path.read_text().strip() != "1":
            path.write_text("1\n")
    except OSError as exc:
        raise NetworkSetup(f"cannot enable route_localnet on {bridge}: {exc.strerror}") from exc
