"""The ARM binaries (`make binary ARCH=arm64|armv7`: dist/edgekube-linux-<arch>) run, under
qemu-user through binfmt_misc, as they will on a Raspberry Pi: `version`, a boot to /readyz with
the kubelet off, and kubectl's `get ns`, `apply` and `get` against them.

Marked `arm`: `make test` deselects them (building both takes longer than CI's budget);
`make arm-test` builds what is missing and runs them with EDGEKUBE_REQUIRE_ARM=1, so a binary or
an emulator that is missing there is a failure, never a skip. Run by hand without that variable
they are skipped with the reason.
"""

from __future__ import annotations

import os
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests import conftest

pytestmark = [pytest.mark.arm, pytest.mark.e2e]

# ELF e_machine and the binfmt_misc entry qemu-user-static registers for it
ARCHES = {"arm64": (183, "qemu-aarch64"), "armv7": (40, "qemu-arm")}
KUBECTL = conftest.REPO / "tools" / "bin" / "kubectl-1.33"


def require(arch: str) -> Path:
    binary = conftest.REPO / "dist" / f"edgekube-linux-{arch}"
    machine, entry = ARCHES[arch]
    problem = None
    if not binary.is_file():
        problem = f"{binary} is missing: build it with `make binary ARCH={arch}`"
    elif int.from_bytes(binary.read_bytes()[18:20], "little") != machine:
        problem = f"{binary} is not a {arch} ELF file"
    elif not Path(f"/proc/sys/fs/binfmt_misc/{entry}").exists():
        problem = f"no {entry} in binfmt_misc: `packaging/cross.sh {arch}` registers qemu-user-static"
    if problem is None:
        return binary
    if os.environ.get("EDGEKUBE_REQUIRE_ARM") == "1":
        pytest.fail(problem)
    pytest.skip(problem)


@pytest.fixture(params=sorted(ARCHES))
def arm_binary(request: pytest.FixtureRequest) -> Path:
    return require(request.param)


def test_arm_binary_prints_its_version(arm_binary: Path) -> None:
    out = subprocess.run([str(arm_binary), "version"], capture_output=True, text=True, timeout=300, check=False,
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("edgekube "), out.stdout


def test_arm_binary_boots_and_serves_kubectl(arm_binary: Path, tmp_path: Path) -> None:
    """Kubelet off (its containers would be this machine's runc): the API, the store, the
    controllers and TLS of the ARM build, driven by the kubectl users run."""
    srv = conftest.Server(tmp_path / "data", command=[str(arm_binary)])
    kubectl = [str(KUBECTL), "--kubeconfig", str(srv.kubeconfig), "--request-timeout=60s"]
    try:
        srv.start(timeout=300)  # emulated: every instruction goes through qemu's translator
        with urllib.request.urlopen(f"{srv.url}/readyz", context=srv.admin_context(), timeout=30) as r:
            assert (r.status, r.read()) == (200, b"ok")
        ns = subprocess.run([*kubectl, "get", "ns", "-o", "name"], capture_output=True, text=True, timeout=120,
                            check=True).stdout.split()
        assert {"namespace/default", "namespace/kube-system"} <= set(ns), ns
        manifest = tmp_path / "cm.yaml"
        manifest.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: on-arm\n  namespace: default\n"
                            "data:\n  board: raspberry-pi\n")
        applied = subprocess.run([*kubectl, "apply", "-f", str(manifest)], capture_output=True, text=True,
                                 timeout=120, check=False)
        assert applied.returncode == 0 and "configmap/on-arm created" in applied.stdout, applied.stderr
        got = subprocess.run([*kubectl, "get", "configmap", "on-arm", "-o", "jsonpath={.data.board}"],
                             capture_output=True, text=True, timeout=120, check=True).stdout
        assert got == "raspberry-pi"
        assert srv.stop(timeout=120) == 0, srv.log()
    finally:
        srv.close()
