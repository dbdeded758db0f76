"""Custom kinds the fuzz suites add before they look at discovery (tests/fuzz).

Loose schemas (anything goes, an int-or-string spec) with status and scale subresources, and a
strict one with patterns (a backtracking one among them), formats, bounds and defaults, so that
generated requests reach the custom-resource paths of the server as well as the built-in ones.
"""

from __future__ import annotations

from tests.support.apiclient import Api

GROUP = "fuzz.example.com"

CRD_SCHEMAS = {
    "fuzzloose": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    "fuzzscalar": {"type": "object", "properties": {"spec": {"x-kubernetes-int-or-string": True},
                                                    "status": {"x-kubernetes-preserve-unknown-fields": True}}},
    "fuzzstrict": {"type": "object", "properties": {"spec": {"type": "object", "required": ["size"], "properties": {
        "size": {"type": "integer", "format": "int32", "minimum": 0, "maximum": 100, "default": 1},
        "name": {"type": "string", "pattern": "^(a+)+$", "maxLength": 40},
        "when": {"type": "string", "format": "date-time"},
        "tags": {"type": "array", "maxItems": 3, "items": {"type": "string", "enum": ["a", "b"]}},
        "extra": {"type": "object", "additionalProperties": {"type": "number"}}}}}},
}


def add_crds(api: Api) -> None:
    """Create the fuzz CRDs (or find them there) and wait until all of them are served."""
    for plural, schema in CRD_SCHEMAS.items():
        crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
               "metadata": {"name": f"{plural}.{GROUP}"}, "spec": {
                   "group": GROUP, "scope": "Namespaced",
                   "names": {"plural": plural, "kind": plural.capitalize()},
                   "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": schema},
                                 "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.size",
                                                                          "statusReplicasPath": ".status.size"}},
                                 "additionalPrinterColumns": [{"name": "Size", "type": "integer",
                                                               "jsonPath": ".spec.size"}]}]}}
        status, body = api.json("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
        assert status in (201, 409), body
    for _ in range(100):  # served once established
        if all(api.call("GET", f"/apis/{GROUP}/v1/{p}")[0] == 200 for p in CRD_SCHEMAS):
            return
    raise AssertionError("the fuzz suite's CRDs are not served")
