"""The `edgekube` command line.

    edgekube server [--config FILE] [--boot-config FILE] [--data-dir DIR] [--bind-address ADDR]
                    [--https-port PORT] [--disable COMPONENT]...
    edgekube version
    edgekube install [--root DIR] [--binary FILE] [--no-start]
    edgekube uninstall [--root DIR] [--purge] [--config FILE] [--data-dir DIR]
    edgekube check-config [--json]                     [--config FILE] [--data-dir DIR]
    edgekube images import FILE... | ls | rm REF...   [--config FILE] [--data-dir DIR]
    edgekube store check [--json] | recover | adopt | reset --yes   [--config FILE] [--data-dir DIR]
    edgekube certs check | rotate [--ca]               [--config FILE] [--data-dir DIR]
    edgekube snapshot save FILE | restore FILE        [--config FILE] [--data-dir DIR]
    edgekube secrets-encrypt status | rotate-keys | reencrypt   [--config FILE] [--data-dir DIR]
    edgekube service-account-key rotate [--algorithm RS256|ES256]   [--config FILE] [--data-dir DIR]

Scripts and docs depend on this exact contract. Exit codes: 0 clean stop, 1 a component failed,
2 bad usage or configuration (with a message that names the setting), 3 the data dir needs an
operator (its database is lost, damaged, rolled back or another cluster's: the message says what
to run; systemd does not restart on it). `check-config` exits 1 when a check fails. `certs check` exits 1 when a certificate is missing,
expired, not yet valid or close to its end (a leaf in its last 90 days, the CA in its last year).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import logging
import platform
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import lmdb

from edgekube import KUBE_VERSION, __version__, runtime, secrets_cli
from edgekube import config as config_mod
from edgekube._cogs import clock as clock_mod
from edgekube._cogs import dirlock, jwsig, memory, timefloor
from edgekube.api import pki
from edgekube.api.auth import satokens
from edgekube.kubelet import images as images_mod
from edgekube.store import errors as store_errors
from edgekube.store import identity as identity_mod
from edgekube.store import repair

EXIT_DATA_DIR = 3


def _config_args(cmd: argparse.ArgumentParser, *, data_dir: str) -> None:
    """--config and --data-dir, for a command on a data dir."""
    cmd.add_argument("--config", type=Path, help=f"config file (default {config_mod.DEFAULT_CONFIG_FILE} when present)")
    cmd.add_argument("--data-dir", type=Path, help=data_dir)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgekube", description="Kubernetes for devices at the edge, in one process.")
    sub = p.add_subparsers(dest="command", required=True)
    srv = sub.add_parser("server", help="run the API server, store and (later) controllers, scheduler and kubelet")
    _config_args(srv, data_dir="where the database, TLS material and kubeconfig live")
    srv.add_argument("--boot-config", type=Path,
                     help=f"first-boot file (default the first of {', '.join(map(str, config_mod.BOOT_CONFIG_FILES))} present)")
    srv.add_argument("--bind-address", help="address the API listens on (default 0.0.0.0)")
    srv.add_argument("--advertise-address",
                     help="address pods reach the API on (default: the bind address if specific, else the node's)")
    srv.add_argument("--https-port", type=int, help="API port (default 6443)")
    srv.add_argument("--token-auth-file", type=Path,
                     help='a CSV of static bearer tokens: token,user,uid,"group1,group2" (as kube-apiserver)')
    srv.add_argument(
        "--disable",
        action="append",
        choices=config_mod.COMPONENTS,
        metavar="COMPONENT",
        help=f"leave a component off; repeatable; one of {', '.join(config_mod.COMPONENTS)}",
    )
    sub.add_parser("version", help="print the version")
    chk = sub.add_parser("check-config", help="can this machine run edgekube: kernel, cgroups, capabilities, runc, "
                                              "nftables, the data dir; each problem with its fix (exit 1 on a failure)")
    _config_args(chk, data_dir="the data dir to check")
    chk.add_argument("--json", action="store_true", help="the results as JSON")
    img = sub.add_parser("images", help="list, import and remove container images in the data dir's image store")
    img_sub = img.add_subparsers(dest="images_command", required=True)
    for name, helptext in (("import", "import OCI-layout or docker-archive tarballs (no network)"),
                           ("ls", "list images"), ("rm", "remove images (by name, ID or ID prefix)")):
        cmd = img_sub.add_parser(name, help=helptext)
        _config_args(cmd, data_dir="the data dir whose image store to use")
        if name == "import":
            cmd.add_argument("files", nargs="+", type=Path, metavar="FILE")
        elif name == "rm":
            cmd.add_argument("refs", nargs="+", metavar="REF")
        else:
            cmd.add_argument("-q", "--quiet", action="store_true", help="print image IDs only")
    st = sub.add_parser("store", help="check the database, and the ways back when it is lost or damaged")
    st_sub = st.add_subparsers(dest="store_command", required=True)
    for name, helptext in (
        ("check", "read every record and report damage (changes nothing; may run beside the server)"),
        ("recover", "rebuild the database from what is readable (server stopped; the old one is kept aside)"),
        ("adopt", "accept the database that is there as this data dir's, e.g. a backup put back (server stopped)"),
        ("reset", "start an empty cluster, keeping the old database aside (server stopped)"),
    ):
        cmd = st_sub.add_parser(name, help=helptext)
        _config_args(cmd, data_dir="the data dir whose database to use")
        if name == "check":
            cmd.add_argument("--json", action="store_true", help="print the report as JSON")
        if name == "reset":
            cmd.add_argument("--yes", action="store_true", help="really start over with an empty cluster")
    inst = sub.add_parser("install", help="install this binary as a systemd service (unit, default config, enabled)")
    inst.add_argument("--root", type=Path, default=Path("/"), help="install below this directory (an image being built)")
    inst.add_argument("--binary", type=Path, help="the binary to install (default: this program's own)")
    inst.add_argument("--no-start", action="store_true", help="enable, but do not start it now")
    uninst = sub.add_parser("uninstall", help="stop and remove edgekube and all it made on the host (containers, "
                                              "mounts, cgroups, the bridge, nft rules); the data dir stays unless --purge")
    uninst.add_argument("--root", type=Path, default=Path("/"), help="as given to install")
    uninst.add_argument("--purge", action="store_true", help="also remove the data dir, the pods' logs and the config")
    uninst.add_argument("--config", type=Path, help="config file (default: the installed one under --root)")
    uninst.add_argument("--data-dir", type=Path, help="the data dir (default: the config's)")
    snap = sub.add_parser("snapshot", help="save the cluster to one file (while running), restore it (stopped)")
    snap_sub = snap.add_subparsers(dest="snapshot_command", required=True)
    for name, helptext in (("save", "write a snapshot: the database as of now, the certificates and keys (0600)"),
                           ("restore", "put a snapshot in place of this data dir's cluster (the server stopped; "
                                       "the old state kept aside)")):
        cmd = snap_sub.add_parser(name, help=helptext)
        cmd.add_argument("file", type=Path, help="the snapshot file (.tar.gz)")
        _config_args(cmd, data_dir="the data dir")
    certs = sub.add_parser("certs", help="check and rotate the cluster's certificates (the data dir's tls/)")
    certs_sub = certs.add_subparsers(dest="certs_command", required=True)
    for name, helptext in (("check", "print each certificate's validity; exit 1 if one is expired or close"),
                           ("rotate", "issue the leaf certificates again (and the CA, with --ca); rewrite the "
                                      "kubeconfig")):
        cmd = certs_sub.add_parser(name, help=helptext)
        _config_args(cmd, data_dir="the data dir whose certificates to use")
        if name == "rotate":
            cmd.add_argument("--ca", action="store_true",
                             help="a new CA too: every kubeconfig handed out must then be replaced")
    secrets_cli.add_parser(sub)
    sakey = sub.add_parser("service-account-key", help="rotate the key service account tokens are signed with")
    sakey_sub = sakey.add_subparsers(dest="sakey_command", required=True)
    cmd = sakey_sub.add_parser("rotate", help="a new signing key; the old public key kept for verification")
    _config_args(cmd, data_dir="the data dir whose key to rotate")
    cmd.add_argument("--algorithm", choices=(jwsig.RS256, jwsig.ES256), default=jwsig.RS256,
                     help="RS256: an RSA-2048 key (the default); ES256: an EC P-256 key")
    return p


# The tool commands below import their modules when run: `edgekube server`'s boot (a target of
# its own, docs/performance.md) does not pay for what it never uses.


def _check_config(args: argparse.Namespace) -> Callable[[config_mod.Config], int]:
    from edgekube import checkconfig

    def check(cfg: config_mod.Config) -> int:
        results = list(checkconfig.run_checks(cfg))
        print(checkconfig.report(results, cfg=cfg, as_json=args.json))
        return 1 if any(r.status == checkconfig.FAIL for r in results) else 0

    return check


def _service_account_key(args: argparse.Namespace, cfg: config_mod.Config) -> int:
    """`edgekube service-account-key rotate`: the data dir's files only; the server picks the new
    key up when it restarts, and keeps accepting the old one while the config lists it."""
    tls = cfg.data_dir / "tls"
    if not (tls / satokens.KEY_FILE).exists():
        print(f"edgekube: no {tls / satokens.KEY_FILE}: `edgekube server` makes it at its first start", file=sys.stderr)
        return 1
    kept, kid = satokens.rotate_key(tls, algorithm=args.algorithm, now=datetime.datetime.now(datetime.UTC))
    print(f"new {args.algorithm} signing key {tls / satokens.KEY_FILE} (kid {kid})")
    print(f"the old public key is kept in {kept}")
    print("1. list it in the config file, so that tokens the old key signed keep working:\n"
          f"     api:\n       service-account-key-files: [{kept}]\n"
          "2. restart edgekube (systemctl restart edgekube): new tokens are signed with the new key, and the\n"
          "   kubelet gives every pod a new token within the hour\n"
          "3. once every token the old key signed has expired (the longest `kubectl create token --duration`\n"
          "   handed out; legacy Secret tokens never expire: recreate them), remove it from the list and restart")
    return 0


def _store(args: argparse.Namespace, data_dir: Path) -> int:
    if args.store_command == "check":
        report = repair.check(data_dir)
        print(repair.format_report(report, as_json=args.json))
        return 0 if report.healthy else 1
    if args.store_command == "reset" and not args.yes:
        print("edgekube: `store reset` starts an empty cluster (the old database is kept aside); "
              "add --yes to do it", file=sys.stderr)
        return 2
    with dirlock.DirLock(data_dir):
        if args.store_command == "recover":
            kept, lost, aside = repair.recover(data_dir)
            for key in lost:
                print(f"lost (unreadable): {key}")
            print(f"recovered {kept} objects; {len(lost)} lost; the damaged database is kept at {aside}")
        elif args.store_command == "adopt":
            cluster, floor = repair.adopt(data_dir)
            print(f"adopted the database as cluster {cluster}; resourceVersions go on from {floor}")
        else:
            was, floor = repair.reset(data_dir)
            where = f"; the old database is kept at {was}" if was else ""
            print(f"started an empty cluster; resourceVersions go on from {floor}{where}")
    return 0


def _install(args: argparse.Namespace) -> int:
    from edgekube import install as install_mod

    binary = args.binary or install_mod.own_binary()
    if binary is None:
        print("edgekube: this edgekube runs from Python source: give the binary to install with --binary "
              "(`make binary` builds dist/edgekube)", file=sys.stderr)
        return 2
    out: list[str] = []
    try:
        install_mod.install(args.root, binary=binary, start=not args.no_start, out=out)
    except (OSError, subprocess.CalledProcessError, config_mod.ConfigError) as exc:
        print("\n".join(out), file=sys.stderr)
        print(f"edgekube: install failed: {exc}", file=sys.stderr)
        return 1
    print("\n".join(out))
    return 0


def _uninstall(args: argparse.Namespace) -> int:
    from edgekube import install as install_mod

    try:
        cfg = config_mod.load(config_file=args.config or (args.root / install_mod.CONFIG if (
            args.root / install_mod.CONFIG).exists() else None), boot_file=None,
            overrides={"data-dir": str(args.data_dir) if args.data_dir else None})
    except config_mod.ConfigError as exc:
        print(f"edgekube: {exc}", file=sys.stderr)
        return 2
    out: list[str] = []
    install_mod.stop_service(args.root, out)
    lock = args.root == Path("/") and cfg.data_dir.exists()  # an image's data dir is no server's
    try:
        with dirlock.DirLock(cfg.data_dir) if lock else contextlib.nullcontext():
            install_mod.uninstall(args.root, cfg, purge=args.purge, out=out)
    except dirlock.LockedError as exc:
        print(f"edgekube: {exc}", file=sys.stderr)
        return 1
    print("\n".join(out))
    return 0


def _snapshot(args: argparse.Namespace, data_dir: Path) -> int:
    from edgekube.store import snapshot

    now = datetime.datetime.now(datetime.UTC)
    if args.snapshot_command == "save":
        if not identity_mod.db_file(data_dir).is_file():
            print(f"edgekube: no database at {identity_mod.db_file(data_dir)}: nothing to save", file=sys.stderr)
            return 1
        info = snapshot.save(data_dir, args.file.absolute(), copy=snapshot.copy_readonly(data_dir / identity_mod.DB_DIR),
                             version=__version__, now=now)
        print(f"saved cluster {info.cluster} at revision {info.revision} to {info.path} "
              f"({args.file.stat().st_size / (1 << 20):.1f} MiB); it holds the cluster's private keys: keep it safe")
        return 0
    with dirlock.DirLock(data_dir):
        info, floor, aside = snapshot.restore(data_dir, args.file, now=now)
    print(f"restored cluster {info.cluster} at revision {info.revision}, taken {info.taken}; "
          f"resourceVersions go on from {floor}; the state before is kept at {aside}")
    return 0


def _certs(args: argparse.Namespace, cfg: config_mod.Config) -> int:
    """`edgekube certs check|rotate`: the data dir's files only, so it works whether or not the
    server runs (a running server loads rotated files within a minute)."""
    the_pki = pki.Pki(cfg.data_dir / "tls")
    wall = datetime.datetime.now(datetime.UTC)
    now = timefloor.trusted_now(wall, last_seen=timefloor.LastSeen(cfg.data_dir).read())
    if not the_pki.ca_cert.exists():
        print(f"edgekube: no certificates under {the_pki.dir}: `edgekube server` makes them at its first start",
              file=sys.stderr)
        return 1
    if args.certs_command == "rotate":
        ca = pki.inspect(the_pki.ca_cert)
        if not args.ca and (ca is None or ca.state(now) == "expired"):
            print(f"edgekube: {the_pki.ca_cert} ({pki.ROLES['ca.crt']}) is "
                  f"{'unreadable' if ca is None else 'expired'}: leaf certificates from it would not verify; "
                  "run `edgekube certs rotate --ca`", file=sys.stderr)
            return 1
        names, addresses = pki.host_identities()
        served = pki.inspect(the_pki.server_cert)  # keep every address it named (service IP, bind address)
        pki.rotate(the_pki, hostnames=names, addresses=[*(sorted(served.ips) if served else []), *addresses],
                   now=now, ca=args.ca)
        kubeconfig = cfg.data_dir / "kubeconfig.yaml"
        pki.rewrite_kubeconfig(kubeconfig, pki=the_pki, default_url=f"https://127.0.0.1:{cfg.https_port}")
        for _, info in pki.inspect_all(the_pki):
            if info is not None:
                print(f"{info.path.name}: {info.subject}, valid until {clock_mod.rfc3339(info.not_after)}")
        print(f"kubeconfig rewritten: {kubeconfig}")
        if args.ca:
            print("a new CA: restart edgekube (systemctl restart edgekube) so that pods get it, and replace every "
                  "kubeconfig handed out before")
        else:
            print("a running server loads the new certificates within a minute")
        return 0
    if now - wall > datetime.timedelta(hours=1):
        print(f"note: the system clock reads {clock_mod.rfc3339(wall)}, before this build or the last time this "
              f"node saw ({clock_mod.rfc3339(now)}); validity below is judged by the system clock")
    rows = [("CERTIFICATE", "SUBJECT", "ISSUER", "NOT BEFORE", "NOT AFTER", "DAYS LEFT", "STATUS")]
    bad = False
    for path, info in pki.inspect_all(the_pki):
        if info is None:
            rows.append((path.name, "-", "-", "-", "-", "-", "MISSING"))
            bad = True
            continue
        state = info.state(wall)
        bad = bad or state != "ok"
        status = {"ok": "OK", "expiring": "RENEW SOON", "expired": "EXPIRED", "not yet valid": "NOT YET VALID"}[state]
        rows.append((path.name, info.subject, info.issuer, clock_mod.rfc3339(info.not_before),
                     clock_mod.rfc3339(info.not_after), str((info.not_after - wall).days), status))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    if bad:
        print("renew with `edgekube certs rotate` (leaf certificates; the server also renews them in their last "
              f"{pki.RENEW_BEFORE.days} days), `edgekube certs rotate --ca` for the CA", file=sys.stderr)
    return 1 if bad else 0


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.3g}{unit}"
        value /= 1000
    return f"{size}B"


async def _images(args: argparse.Namespace, data_dir: Path) -> int:
    store = images_mod.ImageStore(data_dir / images_mod.STORE_DIR)
    try:
        if args.images_command == "import":
            failed = False
            for path in args.files:
                try:
                    imported = await store.import_tarball(path)
                except images_mod.ImageError as exc:
                    print(f"edgekube: {exc}", file=sys.stderr)
                    failed = True
                    continue
                for info in imported:
                    print(f"imported {', '.join(info.tags) or '<untagged>'} ({info.id})")
            return 1 if failed else 0
        if args.images_command == "rm":
            failed = False
            for ref in args.refs:
                try:
                    info = await store.remove(ref)
                except images_mod.ImageError as exc:
                    print(f"edgekube: {exc}", file=sys.stderr)
                    failed = True
                    continue
                print(f"removed {ref} ({info.id})")
            return 1 if failed else 0
        rows = []
        for info in store.list():
            if args.quiet:
                print(info.id)
                continue
            digest = info.repo_digests[0].split("@", 1)[1][:19] if info.repo_digests else "<none>"
            tags = info.tags or ("<none>:<none>",)
            for tag in tags:
                repo, _, t = tag.rpartition(":")
                rows.append((repo, t, digest, info.id.split(":", 1)[1][:13], _human(info.size), info.platform))
        if not args.quiet:
            header = ("IMAGE", "TAG", "DIGEST", "IMAGE ID", "SIZE", "PLATFORM")
            widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
            for row in [header, *rows]:
                print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        return 0
    finally:
        await store.close()


def _on_data_dir(args: argparse.Namespace, run: Callable[[config_mod.Config], int], *,
                 failures: tuple[type[BaseException], ...]) -> int:
    """A tool command on the configured data dir: 2 for bad configuration, 1 (with the error's
    one line) for what `failures` names."""
    try:
        cfg = config_mod.load(config_file=args.config,
                              overrides={"data-dir": str(args.data_dir) if args.data_dir else None})
    except config_mod.ConfigError as exc:
        print(f"edgekube: {exc}", file=sys.stderr)
        return 2
    try:
        return run(cfg)
    except failures as exc:
        print(f"edgekube: {exc}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "version":
        print(f"edgekube {__version__} (Kubernetes API {KUBE_VERSION}, Python {platform.python_version()}, {platform.machine()})")
        return 0
    if args.command == "store":
        return _on_data_dir(args, lambda cfg: _store(args, cfg.data_dir),
                            failures=(dirlock.LockedError, store_errors.StoreError, OSError))
    if args.command == "install":
        return _install(args)
    if args.command == "uninstall":
        return _uninstall(args)
    if args.command == "snapshot":
        return _on_data_dir(args, lambda cfg: _snapshot(args, cfg.data_dir),
                            failures=(dirlock.LockedError, store_errors.StoreError, lmdb.Error, OSError))
    if args.command == "certs":
        return _on_data_dir(args, lambda cfg: _certs(args, cfg), failures=(OSError,))
    if args.command == "check-config":
        return _on_data_dir(args, _check_config(args), failures=(OSError,))
    if args.command == "secrets-encrypt":
        return secrets_cli.run(args)
    if args.command == "service-account-key":
        return _on_data_dir(args, lambda cfg: _service_account_key(args, cfg), failures=(OSError, jwsig.SignatureError))
    if args.command == "images":
        return _on_data_dir(args, lambda cfg: asyncio.run(_images(args, cfg.data_dir)),
                            failures=(OSError, images_mod.ImageError))
    overrides = {
        "data-dir": str(args.data_dir) if args.data_dir else None,
        "bind-address": args.bind_address,
        "advertise-address": args.advertise_address,
        "https-port": args.https_port,
        "disable": args.disable,
        "token-auth-file": str(args.token_auth_file) if args.token_auth_file else None,
    }
    try:
        cfg = config_mod.load(config_file=args.config, overrides=overrides, boot_file=args.boot_config)
    except config_mod.ConfigError as exc:
        print(f"edgekube: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=getattr(logging, cfg.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    memory.single_arena()  # before any thread starts
    rt = runtime.Runtime(cfg)
    try:
        return asyncio.run(rt.run())
    except dirlock.LockedError as exc:
        print(f"edgekube: {exc}", file=sys.stderr)
        return 1
    except identity_mod.StoreIdentityError as exc:
        # Waiting will not mend it: the unit does not restart on this code.
        print(f"edgekube: {exc}", file=sys.stderr)
        return EXIT_DATA_DIR
    except (OSError, jwsig.SignatureError) as exc:
        print(f"edgekube: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
