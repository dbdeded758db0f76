"""Label and field selectors: the query grammar, matching and canonical printing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


# --- compiled matching: the same answers as the terms one by one, in time of the labels ---------

_KEYS = st.sampled_from(["a", "b", "c", "d"])
_VALUES = st.sampled_from(["", "1", "2", "x", "10", "-3"])


@st.composite
def _requirement(draw: st.DrawFn) -> labels.Requirement:
    op = draw(st.sampled_from(["exists", "!", "=", "!=", "in", "notin", "gt", "lt"]))
    key = draw(_KEYS)
    if op in ("exists", "!"):
        return labels.Requirement(key, op)
    if op in ("gt", "lt"):
        return labels.Requirement(key, op, (draw(st.sampled_from(["0", "1", "5", "-4"])),))
    if op in ("=", "!="):
        return labels.Requirement(key, op, (draw(_VALUES),))
    return labels.Requirement(key, op, tuple(draw(st.sets(_VALUES, min_size=1, max_size=3))))


@given(st.lists(_requirement(), max_size=6), st.dictionaries(_KEYS, _VALUES, max_size=4))
@settings(max_examples=2000, deadline=None)
def test_compiled_label_selector_agrees_with_its_terms(reqs: list[labels.Requirement], have: dict[str, str]) -> None:
    sel = labels.Selector(tuple(reqs))
    assert sel.matches(have) is all(r.matches(have) for r in reqs)


_FIELDS = st.sampled_from(["metadata.name", "metadata.namespace", "spec.nodeName", "status.phase"])


@given(st.lists(st.tuples(_FIELDS, st.sampled_from(["=", "!="]), st.sampled_from(["", "a", "b"])), max_size=6),
       st.fixed_dictionaries({"n": st.sampled_from(["", "a", "b"]), "ns": st.sampled_from(["", "a", "b"]),
                              "node": st.sampled_from(["", "a", "b"]), "phase": st.sampled_from(["", "a", "b"])}))
@settings(max_examples=2000, deadline=None)
def test_compiled_field_selector_agrees_with_its_terms(terms: list[tuple[str, str, str]], v: dict[str, str]) -> None:
    sel = fields.parse(",".join(f"{f}{op}{value}" for f, op, value in terms), gk="Pod")
    pod = {"metadata": {"name": v["n"], "namespace": v["ns"]}, "spec": {"nodeName": v["node"]},
           "status": {"phase": v["phase"]}}
    assert sel.matches(pod) is all(t.matches(pod) for t in sel.terms)


def test_a_selector_of_thousands_of_terms_costs_what_an_objects_labels_do() -> None:
    """1,500 terms, 20,000 objects: counted in lookups of the object's labels (an operation
    count, not a time): the terms are combined once, then each object's few labels are looked up."""
    text = ",".join([*(f"!x{i}" for i in range(500)), *(f"k{i}!=v" for i in range(500)),
                     *(f"app notin (v{i})" for i in range(500))])
    sel = labels.parse(text)
    lookups = 0

    class Counting(dict[str, str]):
        def __contains__(self, key: object) -> bool:
            nonlocal lookups
            lookups += 1
            return super().__contains__(key)

        def __getitem__(self, key: str) -> str:
            nonlocal lookups
            lookups += 1
            return super().__getitem__(key)

    objects = [Counting(app="web", tier=str(i % 7)) for i in range(20000)]
    assert all(sel.matches(o) for o in objects)
    assert lookups <= 4 * len(objects)  # the terms one by one: 1,500 lookups per object
