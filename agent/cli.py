"""`dockyard-agent`: flags override the config file, which overrides the embedded defaults."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from agent import config as agent_config
from agent import errors, log
from agent.daemon import serve


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dockyard-agent",
        description="Dockyard agent: serves images and containers of this host over gRPC (mTLS on TCP).",
    )
    p.add_argument("--config", type=Path, help="TOML config file (default: none, embedded defaults)")
    p.add_argument(
        "--listen",
        action="append",
        metavar="HOST:PORT",
        help=f"TCP listener, always mutual TLS (repeatable; agent port is {agent_config.DEFAULT_PORT})",
    )
    p.add_argument("--tls-dir", type=Path, help="directory with ca.pem, agent.pem, agent-key.pem")
    p.add_argument("--socket", type=Path, help=f"local unix socket (default {agent_config.DEFAULT_SOCKET})")
    p.add_argument("--no-socket", action="store_true", help="do not serve on a unix socket")
    p.add_argument(
        "--data-root", type=Path, help=f"state directory (default {agent_config.DEFAULT_DATA_ROOT})"
    )
    p.add_argument("--config-dir", type=Path, help="registry certs.d lives here (default /etc/dockyard)")
    p.add_argument(
        "--insecure-registry",
        action="append",
        metavar="HOST:PORT",
        help="registry reachable over plain HTTP (repeatable)",
    )
    p.add_argument("--runtime", choices=["runc", "crun"], help="OCI runtime (default runc)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    return p


def main(argv: list[str] | None = None) -> None:
    # Whatever the agent creates is root's alone unless made otherwise on purpose (files containers see
    # get explicit modes); the data root must never expose image content or secrets (see daemon.py).
    os.umask(0o077)
    ns = parser().parse_args(argv)
    log.configure(ns.log_level or "info")
    try:
        cfg = agent_config.load(ns.config)
        cfg = cfg.with_overrides(
            listen=tuple(ns.listen) if ns.listen else None,
            tls_dir=ns.tls_dir,
            socket=ns.socket,
            data_root=ns.data_root,
            config_dir=ns.config_dir,
            runtime=ns.runtime,
            log_level=ns.log_level,
            insecure_registries=(
                tuple(cfg.insecure_registries) + tuple(ns.insecure_registry) if ns.insecure_registry else None
            ),
        )
        if ns.no_socket:
            cfg = agent_config.AgentConfig(**{**cfg.__dict__, "socket": None})
        log.configure(cfg.log_level)
        serve(cfg)
    except errors.AgentError as exc:
        log.get("agent").error("agent.failed", error=exc.message)
        print(f"dockyard-agent: error: {exc.message}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
