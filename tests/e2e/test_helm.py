"""helm 4 against edgekube server: install (with a CRD in crds/), upgrade, rollback, uninstall.

helm 4 applies server-side by default and keeps its releases in Secrets, so this exercises
server-side apply, CRDs becoming served mid-install, label-selected lists and deletes.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, Server

pytestmark = pytest.mark.e2e

HELM = REPO / "tools" / "bin" / "helm"
KUBECTL = REPO / "tools" / "bin" / "kubectl-1.36"
CHART = REPO / "tests" / "data" / "charts" / "demo"


class Tools:
    def __init__(self, server: Server, home: Path) -> None:
        for tool in (HELM, KUBECTL):
            if not tool.exists():
                pytest.fail(f"{tool} is missing: run `make kube-tools` (make test does)")
        self.env = {**os.environ, "KUBECONFIG": str(server.kubeconfig), "HOME": str(home),
                    "HELM_CACHE_HOME": str(home / "cache"), "HELM_CONFIG_HOME": str(home / "config"),
                    "HELM_DATA_HOME": str(home / "data")}

    def run(self, tool: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([str(tool), *args], capture_output=True, text=True, timeout=120, env=self.env)
        if check and proc.returncode != 0:
            raise AssertionError(f"{tool.name} {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run(HELM, *args, check=check)

    def get(self, *args: str) -> Any:
        return json.loads(self.run(KUBECTL, "get", *args, "-o", "json").stdout)


@pytest.fixture
def tools(server: Server, tmp_path: Path) -> Iterator[Tools]:
    yield Tools(server, tmp_path)


def test_helm_install_upgrade_rollback_uninstall(tools: Tools) -> None:
    ns = "helm-demo"
    out = tools.helm("install", "rel", str(CHART), "-n", ns, "--create-namespace", "--wait=false").stdout
    assert "STATUS: deployed" in out
    assert tools.get("crd", "crontabs.helm.example.com")["status"]["acceptedNames"]["kind"] == "CronTab"
    assert tools.get("deployment", "rel-web", "-n", ns)["spec"]["replicas"] == 1
    assert tools.get("configmap", "rel-config", "-n", ns)["data"] == {"message": "hello"}
    assert tools.get("secret", "rel-secret", "-n", ns)["data"] == {"token": "czNjcmV0"}
    assert tools.get("service", "rel-svc", "-n", ns)["spec"]["ports"][0]["targetPort"] == 8080
    assert tools.get("crontabs.helm.example.com", "rel-cron", "-n", ns)["spec"]["replicas"] == 1
    deploy = tools.get("deployment", "rel-web", "-n", ns, "--show-managed-fields")
    assert any(e["operation"] == "Apply" for e in deploy["metadata"]["managedFields"])  # helm 4 applies server-side
    listed = json.loads(tools.helm("list", "-n", ns, "-o", "json").stdout)
    assert [(r["name"], r["status"], r["revision"]) for r in listed] == [("rel", "deployed", "1")]
    assert "STATUS: deployed" in tools.helm("status", "rel", "-n", ns).stdout

    tools.helm("upgrade", "rel", str(CHART), "-n", ns, "--set", "replicas=3", "--set", "message=bye")
    assert tools.get("deployment", "rel-web", "-n", ns)["spec"]["replicas"] == 3
    assert tools.get("configmap", "rel-config", "-n", ns)["data"] == {"message": "bye"}
    history = json.loads(tools.helm("history", "rel", "-n", ns, "-o", "json").stdout)
    assert [h["status"] for h in history] == ["superseded", "deployed"]

    tools.helm("rollback", "rel", "1", "-n", ns)
    assert tools.get("deployment", "rel-web", "-n", ns)["spec"]["replicas"] == 1
    assert tools.get("configmap", "rel-config", "-n", ns)["data"] == {"message": "hello"}
    releases = tools.get("secrets", "-n", ns, "-l", "owner=helm,name=rel")["items"]
    assert sorted(s["metadata"]["labels"]["version"] for s in releases) == ["1", "2", "3"]

    tools.helm("uninstall", "rel", "-n", ns)
    assert tools.get("deployments,configmaps,services,crontabs.helm.example.com", "-n", ns)["items"] == [
        i for i in tools.get("configmaps", "-n", ns)["items"] if i["metadata"]["name"] == "kube-root-ca.crt"]
    assert json.loads(tools.helm("list", "-n", ns, "-o", "json").stdout) == []
    # helm keeps CRDs from crds/ on uninstall, as upstream helm does.
    assert tools.get("crd", "crontabs.helm.example.com")["metadata"]["name"] == "crontabs.helm.example.com"
