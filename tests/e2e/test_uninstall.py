"""`edgekube uninstall` (`install.remove_runtime`) on a node that ran pods: the host is left as it was before edgekube
(containers, mounts, network namespaces, cgroups, the bridge and the nftables table gone), in a
network namespace of the test's own; the data dir stays."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.e2e.test_pod_network import SLEEPER, _run, _start, tarball  # noqa: F401 (the fixture)
from tests.support.kubelet import running
from tests.support.netns import NetNS
from tests.support.waiting import fresh_namespace

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="the kubelet and the pod network need root"),
    pytest.mark.skipif(not all(shutil.which(t) for t in ("runc", "umoci", "skopeo", "ip", "nsenter", "nft")),
                       reason="needs runc, umoci, skopeo, ip, nsenter and nft (make installs them)"),
]


def test_uninstall_leaves_the_host_as_it_was_and_keeps_the_data(tmp_path: Path, tarball: Path, netns: NetNS,  # noqa: F811
                                                               request: pytest.FixtureRequest) -> None:
    with running(_start(tmp_path / "node", tarball, netns)) as ks:
        k = fresh_namespace(ks.server, request)
        pod = _run(k, "sleeper", SLEEPER)
        assert ks.runc_list() and ks.mounts() and ks.cgroup_dirs()
        assert "ek0" in netns.run(["ip", "-o", "link", "show"]).stdout
        assert "table inet edgekube" in netns.run(["nft", "list", "tables"]).stdout
        assert ks.server.stop() == 0  # containers outlive the server, by design
        assert ks.runc_list()
        config = tmp_path / "uninstall.yaml"
        config.write_text(yaml.safe_dump({**yaml.safe_load(ks.config.read_text()), "data-dir": str(ks.data_dir)}))
        # What `edgekube uninstall` does on the machine (with --root / it would then remove this
        # host's /usr/local/bin/edgekube and unit too, which a test must not).
        code = ("from pathlib import Path; from edgekube import config, install; out = []; "
                f"install.remove_runtime(config.load(config_file=Path({str(config)!r}), boot_file=None), out); "
                "print(chr(10).join(out))")
        out = subprocess.run(netns.argv([sys.executable, "-c", code]), capture_output=True, text=True, timeout=120,
                             cwd=REPO)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "removed 1 containers" in out.stdout
        assert ks.leftovers() == []  # containers, mounts, cgroups, runc's directory in memory
        assert not [m for m in ks.mounts() if pod["metadata"]["uid"] in str(m)]  # its namespace's bind mount too
        assert "ek0" not in netns.run(["ip", "-o", "link", "show"]).stdout
        assert "edgekube" not in netns.run(["nft", "list", "tables"]).stdout
        assert (ks.data_dir / "db" / "data.mdb").is_file()  # the cluster is kept
