"""The `edgekube` command line.

    edgekube server [--config FILE] [--data-dir DIR] [--bind-address ADDR] [--https-port PORT]
                    [--disable COMPONENT]...
    edgekube version

Scripts and docs depend on this exact contract. Exit codes: 0 clean stop, 1 a component failed,
2 bad usage or configuration (with a message that names the setting).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import platform
import sys
from collections.abc import Sequence
from pathlib import Path

from edgekube import KUBE_VERSION, __version__, runtime
from edgekube import config as config_mod


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgekube", description="Kubernetes for devices at the edge, in one process.")
    sub = p.add_subparsers(dest="command", required=True)
    srv = sub.add_parser("server", help="run the API server, store and (later) controllers, scheduler and kubelet")
    srv.add_argument("--config", type=Path, help=f"config file (default {config_mod.DEFAULT_CONFIG_FILE} when present)")
    srv.add_argument("--data-dir", type=Path, help="where the database, TLS material and kubeconfig live")
    srv.add_argument("--bind-address", help="address the API listens on (default 0.0.0.0)")
    srv.add_argument("--https-port", type=int, help="API port (default 6443)")
    srv.add_argument(
        "--disable",
        action="append",
        choices=config_mod.COMPONENTS,
        metavar="COMPONENT",
        help=f"leave a component off; repeatable; one of {', '.join(config_mod.COMPONENTS)}",
    )
    sub.add_parser("version", help="print the version")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "version":
        print(f"edgekube {__version__} (Kubernetes API {KUBE_VERSION}, Python {platform.python_version()}, {platform.machine()})")
        return 0
    overrides = {
        "data-dir": str(args.data_dir) if args.data_dir else None,
        "bind-address": args.bind_address,
        "https-port": args.https_port,
        "disable": args.disable,
    }
    try:
        cfg = config_mod.load(config_file=args.config, overrides=overrides)
    except config_mod.ConfigError as exc:
        print(f"edgekube: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=getattr(logging, cfg.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    rt = runtime.Runtime(cfg)
    try:
        return asyncio.run(rt.run())
    except OSError as exc:
        print(f"edgekube: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
