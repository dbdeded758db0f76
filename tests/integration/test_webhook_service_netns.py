"""An admission webhook reached as a Service: edgekube in a network namespace of its own, the
webhook server a process in a second namespace (the "outside" host on 198.18.0.0/24, joined by a
veth pair), the Service resolved by the registry to its endpoint there, the certificate checked
for `<service>.<namespace>.svc` against the caBundle. No packet leaves the machine."""

from __future__ import annotations

import base64
import datetime
import json
import subprocess
import sys
from pathlib import Path

from edgekube.api import pki
from tests.conftest import Server, free_port
from tests.e2e.test_kubectl import Kubectl
from tests.support import netns as netns_mod


def test_a_webhook_behind_a_service_in_another_namespace_refuses(tmp_path: Path) -> None:
    tls = tmp_path / "hook-tls"
    bundle = pki.ensure_pki(tls, hostnames=["hook.hooks.svc"], addresses=["127.0.0.1"],
                            now=datetime.datetime.now(datetime.UTC))
    port = free_port()
    with netns_mod.namespaces("node", "outside") as (node, outside):
        netns_mod.link(node, outside)
        hook = outside.popen([sys.executable, "-m", "tests.support.webhook", "--tls", str(tls), "--port", str(port)],
                             stdout=subprocess.PIPE)
        server = Server(tmp_path / "data", netns=node, extra=["--disable", "network", "--disable", "dns"])
        try:
            assert hook.stdout is not None and hook.stdout.readline().strip() == b"serving"
            server.start()
            k = Kubectl("1.36", server, "hooks")
            k.run("create", "namespace", "hooks", namespaced=False)
            k.run("create", "namespace", "guarded", namespaced=False)
            objects = [
                {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "hook", "namespace": "hooks"},
                 "spec": {"ports": [{"name": "https", "port": 443, "targetPort": port}]}},
                {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "hook", "namespace": "hooks"},
                 "subsets": [{"addresses": [{"ip": f"{netns_mod.OUTSIDE_NET}.2"}], "ports": [{"name": "https", "port": port}]}]},
                {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
                 "metadata": {"name": "outside"},
                 "webhooks": [{"name": "outside.example.com", "sideEffects": "None", "admissionReviewVersions": ["v1"],
                               "clientConfig": {"service": {"namespace": "hooks", "name": "hook", "path": "/validate"},
                                                "caBundle": base64.b64encode(bundle.ca_cert.read_bytes()).decode()},
                               "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "guarded"}},
                               "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                                          "resources": ["configmaps"]}]}]},
            ]
            k.run("create", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}), namespaced=False)
            k.ns = "guarded"
            proc = k.run("create", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                                                                 "metadata": {"name": "bad"}}), check=False)
            assert proc.returncode != 0
            assert 'admission webhook "outside.example.com" denied the request: refused from the outside' in proc.stderr
            k.run("create", "configmap", "good")
            assert k.json("get", "configmap", "good")["metadata"]["name"] == "good"
        finally:
            server.close()
            hook.kill()
            hook.wait()
