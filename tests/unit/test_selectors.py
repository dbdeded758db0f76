"""Label and field selectors: the query grammar, matching and canonical printing."""

from __future__ import annotations

import pytest

from edgekube.api import fields, labels

L = {"app": "web", "tier": "front", "n": "5"}


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("app=web", True),
        ("app==web", True),
        ("app!=web", False),
        ("app!=db", True),
        ("missing!=x", True),
        ("app in (web, db)", True),
        ("app in (db)", False),
        ("app notin (db,cache)", True),
        ("missing notin (db)", True),
        ("app", True),
        ("!app", False),
        ("!missing", True),
        ("n>4", True),
        ("n<5", False),
        ("app=web,tier=front", True),
        ("app=web,tier=back", False),
        ("  app = web , tier in (front) ", True),
        ("app=", False),
        ("", True),
    ],
)
def test_label_selector_operators(text: str, want: bool) -> None:
    assert labels.parse(text).matches(L) is want


@pytest.mark.parametrize(
    "text",
    ["app=web,", "app in web", "app in ()", "=web", "app=we b", "n>x", "app in (a", "-bad=1", "app==,"],
)
def test_label_selector_errors(text: str) -> None:
    with pytest.raises(labels.SelectorError):
        labels.parse(text)


def test_label_selector_prints_canonically() -> None:
    sel = labels.parse("tier in (b,a),app=web,!gone")
    assert str(sel) == "app=web,!gone,tier in (a,b)"
    assert str(labels.parse(str(sel))) == str(sel)


def test_structured_selector() -> None:
    sel = labels.from_label_selector(
        {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["front"]},
                                                               {"key": "gone", "operator": "DoesNotExist"}]}
    )
    assert sel.matches(L)
    assert not sel.matches({"app": "web"})
    assert str(sel) == "app=web,!gone,tier in (front)"
    assert labels.from_label_selector({}).matches({})
    assert not labels.from_label_selector(None).matches(L)
    with pytest.raises(labels.SelectorError):
        labels.from_label_selector({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]})
    with pytest.raises(labels.SelectorError):
        labels.from_label_selector({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]})


POD = {
    "metadata": {"name": "p", "namespace": "ns"},
    "spec": {"nodeName": "n1", "hostNetwork": True},
    "status": {"phase": "Running", "podIPs": [{"ip": "10.0.0.2"}]},
}


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("metadata.name=p", True),
        ("metadata.name==p,metadata.namespace=ns", True),
        ("metadata.namespace!=ns", False),
        ("spec.nodeName=n1", True),
        ("spec.nodeName=", False),
        ("spec.hostNetwork=true", True),
        ("status.phase!=Failed,status.phase!=Succeeded", True),
        ("status.podIPs=10.0.0.2", True),
    ],
)
def test_field_selector_on_pods(text: str, want: bool) -> None:
    assert fields.parse(text, gk="Pod").matches(POD) is want


def test_field_selector_unsupported_and_malformed() -> None:
    with pytest.raises(fields.SelectorError, match=r"field label not supported: spec\.foo"):
        fields.parse("spec.foo=1", gk="Pod")
    with pytest.raises(fields.SelectorError, match=r"field label not supported: spec\.nodeName"):
        fields.parse("spec.nodeName=x", gk="ConfigMap")
    with pytest.raises(fields.SelectorError):
        fields.parse("metadata.name", gk="Pod")


def test_field_selector_events_and_escapes() -> None:
    ev = {"metadata": {"name": "e"}, "involvedObject": {"kind": "Pod", "name": "a,b"}, "source": {"component": "kubelet"}}
    assert fields.parse(r"involvedObject.kind=Pod,involvedObject.name=a\,b", gk="Event").matches(ev)
    assert fields.parse("source=kubelet", gk="Event").matches(ev)
    assert not fields.parse("involvedObject.uid=x", gk="Event").matches(ev)
