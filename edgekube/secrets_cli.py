"""`edgekube secrets-encrypt status|rotate-keys|reencrypt`: Secrets encryption keys, as k3s's.

    edgekube secrets-encrypt status       [--config FILE] [--data-dir DIR]
    edgekube secrets-encrypt rotate-keys  [--config FILE] [--data-dir DIR] [--batch N]
    edgekube secrets-encrypt reencrypt    [--config FILE] [--data-dir DIR] [--batch N]

`rotate-keys` does k3s's single-server rotation in one command: a new key goes first in the key
file, every stored Secret value (old revisions and delete records included) is re-encrypted with
it, and then the old keys are dropped from the file. `reencrypt` does the last two steps alone
(to finish a rotation that was interrupted, or after editing the key file by hand). k3s's
separate `prepare` and `rotate` stages, each followed by a restart, exist so that every server of
an HA cluster knows a new key before any server writes with it; edgekube has one server, which
re-reads the key file inside each write transaction that stores a Secret, so no stage and no
restart is needed.

The commands work with the server running or stopped: they change the database in LMDB write
transactions (which LMDB serialises with the server's), in place and at the same revisions.
Interrupted at any point (a crash, kill -9), every value is still readable with the keys in the
file, and running the command again finishes the job. Exit codes: 0 done, 1 some values could
not be decrypted (named on stderr; their keys are kept), 2 bad usage or no database.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgekube import config as config_mod
from edgekube.store import encryption, lmdb_log

COMMANDS = (("status", "show the keys and what the stored Secrets are encrypted with"),
            ("rotate-keys", "add a new key, re-encrypt every Secret with it, then drop the old keys"),
            ("reencrypt", "re-encrypt every Secret with the key file's first key, then drop the others"))


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("secrets-encrypt", help="manage the keys that encrypt Secrets at rest")
    cmds = p.add_subparsers(dest="secrets_command", required=True)
    for name, helptext in COMMANDS:
        cmd = cmds.add_parser(name, help=helptext)
        cmd.add_argument("--config", type=Path,
                         help=f"config file (default {config_mod.DEFAULT_CONFIG_FILE} when present)")
        cmd.add_argument("--data-dir", type=Path, help="the server's data dir")
        if name != "status":
            cmd.add_argument("--batch", type=int, default=500, metavar="N",
                             help="records re-encrypted per database transaction (default 500); fewer holds "
                                  "a running server's writes up for less time each")


def run(args: argparse.Namespace) -> int:
    try:
        cfg = config_mod.load(config_file=args.config,
                              overrides={"data-dir": str(args.data_dir) if args.data_dir else None})
    except config_mod.ConfigError as exc:
        return _fail(str(exc), 2)
    db_dir = cfg.data_dir / "db"
    key_file = cfg.data_dir / encryption.KEY_FILE
    if not (db_dir / "data.mdb").is_file():
        return _fail(f"no database at {db_dir}; is --data-dir the server's data dir?", 2)
    if not key_file.is_file():
        return _fail(f"no key file at {key_file}; the server makes it at its first boot", 2)
    try:
        if args.secrets_command == "rotate-keys":
            name = encryption.add_primary_key(key_file)
            print(f"added key {name}; it encrypts from now on")
        transformer = encryption.Transformer(key_file)
        db = lmdb_log.LmdbLog(db_dir, map_size=cfg.store.map_size_mb << 20, max_size=cfg.store.max_size_mb << 20,
                              transformer=transformer)
        try:
            if args.secrets_command == "status":
                return _status(db, transformer)
            return _reencrypt(db, transformer, batch=max(1, args.batch))
        finally:
            db.close()
    except (OSError, encryption.KeyFileError) as exc:
        return _fail(str(exc), 1)


def _status(db: lmdb_log.LmdbLog, transformer: encryption.Transformer) -> int:
    ring = transformer.ring
    result = encryption.reencrypt(db, transformer, rewrite=False)
    print(f"Encryption Status: {'Enabled' if ring.primary else 'Disabled'}")
    print(f"Key File: {transformer.path}")
    print(f"Active Key: {ring.primary or '(none: identity first, Secrets are written in plaintext)'}")
    others = [n for n in ring.keys if n != ring.primary]
    print(f"Other Keys: {', '.join(others) if others else '(none)'}")
    found = ", ".join(f"{count} {name or 'plaintext'}" for name, count in sorted(result.found.items())) or "none"
    print(f"Stored Secret Values: {found}")
    stale = any(name != (ring.primary or "") for name in result.found)
    stage = "reencrypt_needed" if stale else ("reencrypt_finished" if not others else "retire_needed")
    print(f"Current Rotation Stage: {stage}")
    for exc in result.failed:
        print(f"edgekube: {exc}", file=sys.stderr)
    return 1 if result.failed else 0


def _reencrypt(db: lmdb_log.LmdbLog, transformer: encryption.Transformer, *, batch: int) -> int:
    result = encryption.reencrypt(db, transformer, batch=batch)
    primary = transformer.ring.primary
    print(f"re-encrypted {result.rewritten} of {result.examined} stored Secret values with {primary or 'no key'}")
    if not result.complete:
        for exc in result.failed:
            print(f"edgekube: {exc}", file=sys.stderr)
        return _fail(f"{len(result.failed)} values could not be decrypted; no key was dropped from "
                     f"{transformer.path}", 1)
    retired = encryption.retire_keys(transformer.path, primary=primary)
    if retired:
        print(f"dropped {', '.join(retired)} from {transformer.path}")
    print("Current Rotation Stage: reencrypt_finished")
    return 0


def _fail(message: str, code: int) -> int:
    print(f"edgekube: {message}", file=sys.stderr)
    return code
