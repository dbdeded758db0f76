"""Kubernetes protobuf request bodies, and the gnostic OpenAPI v2 document kubectl <= 1.28 reads."""

from __future__ import annotations

import pytest

from edgekube.api import openapi_pb, protobuf
from edgekube.api.openapi_pb import _bytes, _int, _string


def _envelope(api_version: str, kind: str, raw: bytes) -> bytes:
    type_meta = _string(1, api_version) + _string(2, kind)
    return protobuf.MAGIC + _bytes(1, type_meta) + _bytes(2, raw)


def _meta(name: str) -> bytes:
    # ObjectMeta: name=1, generateName=2 (sent empty, as Go does), labels=11 (map entries).
    return _string(1, name) + _string(2, "") + _bytes(11, _string(1, "app") + _string(2, "web"))


def test_decodes_a_deployment_like_go_json() -> None:
    port = _int(3, 80) + _int(2, 0) + _string(4, "TCP")  # containerPort, hostPort 0, protocol
    container = _string(1, "web") + _string(2, "busybox:1.36") + _string(3, "sleep") + _string(3, "10") + _bytes(6, port)
    pod_spec = _bytes(2, container)
    template = _bytes(1, _meta("")) + _bytes(2, pod_spec)
    selector = _bytes(1, _string(1, "app") + _string(2, "web"))
    max_surge = _int(1, 1) + _string(3, "50%")  # IntOrString, string form
    strategy = _string(1, "RollingUpdate") + _bytes(2, _bytes(2, max_surge))
    spec = _int(1, 0) + _bytes(2, selector) + _bytes(3, template) + _bytes(4, strategy) + _int(5, 0)
    obj = protobuf.decode(_envelope("apps/v1", "Deployment", _bytes(1, _meta("web")) + _bytes(2, spec)))
    assert obj["apiVersion"] == "apps/v1" and obj["kind"] == "Deployment"
    assert obj["metadata"] == {"name": "web", "labels": {"app": "web"}}
    assert obj["spec"]["replicas"] == 0  # a pointer field: an explicit zero stays
    assert "minReadySeconds" not in obj["spec"]  # a plain int32: zero is Go's omitempty
    assert obj["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "50%"}}
    c = obj["spec"]["template"]["spec"]["containers"][0]
    assert c == {"name": "web", "image": "busybox:1.36", "command": ["sleep", "10"],
                 "ports": [{"containerPort": 80, "protocol": "TCP"}]}


def test_decodes_secrets_times_quantities_and_inline_structs() -> None:
    secret = _bytes(1, _meta("s")) + _bytes(2, _string(1, "k") + _bytes(2, b"\x00\xff")) + _string(3, "Opaque")
    obj = protobuf.decode(_envelope("v1", "Secret", secret))
    assert obj["data"] == {"k": "AP8="} and obj["type"] == "Opaque"
    quota = _bytes(1, _meta("q")) + _bytes(2, _bytes(1, _string(1, "cpu") + _bytes(2, _string(1, "500m"))))
    assert protobuf.decode(_envelope("v1", "ResourceQuota", quota))["spec"] == {"hard": {"cpu": "500m"}}
    # Probe.handler is embedded inline in JSON; Time becomes RFC 3339.
    probe = _bytes(1, _bytes(1, _string(1, "true"))) + _int(3, 5)
    assert protobuf.decode_message("k8s.io.api.core.v1.Probe", probe) == {"exec": {"command": ["true"]}, "timeoutSeconds": 5}
    ts = _bytes(8, _int(1, 1_700_000_000))
    assert protobuf.decode_message("k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta", ts) == {
        "creationTimestamp": "2023-11-14T22:13:20Z"}


@pytest.mark.parametrize(
    "body",
    [b"not protobuf", protobuf.MAGIC + b"\x0a\xff", protobuf.MAGIC + _bytes(1, _string(1, "v1") + _string(2, "Nope"))],
)
def test_malformed_bodies_are_decode_errors(body: bytes) -> None:
    with pytest.raises(protobuf.DecodeError):
        protobuf.decode(body)


def test_openapi_v2_protobuf_document() -> None:
    doc = {"swagger": "2.0", "info": {"title": "Kubernetes", "version": "v1.31.0"}, "definitions": {
        "io.k8s.api.core.v1.ConfigMap": {"type": "object", "required": ["a"], "properties": {"data": {
            "type": "object", "additionalProperties": {"type": "string"}}},
            "x-kubernetes-group-version-kind": [{"group": "", "kind": "ConfigMap", "version": "v1"}]}}}
    fields = protobuf._fields(openapi_pb.document(doc))
    assert fields[0] == (1, 2, b"2.0")
    definitions = protobuf._fields(fields[2][2])
    named = protobuf._fields(definitions[0][2])
    assert named[0][2] == b"io.k8s.api.core.v1.ConfigMap"
    schema = protobuf._fields(named[1][2])
    numbers = [n for n, _, _ in schema]
    assert numbers == [22, 19, 25, 31]  # type, required, properties, vendor extension
    ext = protobuf._fields(schema[3][2])
    assert ext[0][2] == b"x-kubernetes-group-version-kind"
    assert b'"kind":"ConfigMap"' in protobuf._fields(ext[1][2])[0][2]


def test_decodes_an_apiservice() -> None:
    # APIServiceSpec: service=1 (ServiceReference: namespace=1, name=2, port=3), group=2, version=3,
    # insecureSkipTLSVerify=4, groupPriorityMinimum=7, versionPriority=8.
    service = _string(1, "kube-system") + _string(2, "metrics-server") + _int(3, 443)
    spec = _bytes(1, service) + _string(2, "metrics.k8s.io") + _string(3, "v1beta1") + _int(4, 1) + _int(7, 100) + _int(8, 100)
    obj = protobuf.decode(_envelope("apiregistration.k8s.io/v1", "APIService",
                                    _bytes(1, _string(1, "v1beta1.metrics.k8s.io")) + _bytes(2, spec)))
    assert obj["spec"] == {"service": {"namespace": "kube-system", "name": "metrics-server", "port": 443},
                           "group": "metrics.k8s.io", "version": "v1beta1", "insecureSkipTLSVerify": True,
                           "groupPriorityMinimum": 100, "versionPriority": 100}


def test_a_zero_stays_where_go_has_no_omitempty() -> None:
    # Go's generated marshaller writes every non-pointer field, zeros included (what `kubectl
    # create priorityclass pc0 --value=0` sends); Go's JSON encoder keeps a zero only where the
    # field has no omitempty: PriorityClass.value and a CRD version's served/storage.
    pc = _bytes(1, _meta("pc0")) + _int(2, 0) + _int(3, 0) + _string(4, "")
    obj = protobuf.decode(_envelope("scheduling.k8s.io/v1", "PriorityClass", pc))
    assert obj["value"] == 0
    assert "globalDefault" not in obj and "description" not in obj  # omitempty
    version = _string(1, "v1") + _int(2, 0) + _int(3, 1)
    spec = _string(1, "example.com") + _bytes(7, version)
    crd = protobuf.decode(_envelope("apiextensions.k8s.io/v1", "CustomResourceDefinition", _bytes(1, _meta("w")) + _bytes(2, spec)))
    assert crd["spec"]["versions"] == [{"name": "v1", "served": False, "storage": True}]
