"""Every operation the server describes at `/openapi/v3`, fuzzed by schemathesis (issue 13).

The server describes itself: `/openapi/v3` lists one document per group-version (built-in and
custom: the fuzz CRDs are added first), each with every path and verb it serves: list and watch
with their query parameters, create, read, replace, the patch types each kind accepts, delete,
deletecollection, and the subresources (status, scale, binding, eviction, finalize, log). Those
documents, fetched from the running server, are all schemathesis gets. Per operation it sends:

- positive cases: what the served schema allows (Hypothesis, via schemathesis);
- negative cases: what it forbids (schemathesis' negative mode: wrong types, out-of-range
  numbers, missing required fields, bodies that are not objects, unknown parameters);
- coverage cases: a seeded sample of schemathesis' deterministic boundary cases (each field or
  parameter empty, missing, of the wrong type, at its bounds);
- probes of the request's shape, the same for every operation: each declared method is routed
  (never the router's bare 404), each method the path does not declare is a 405, and a body in
  a media type it does not declare (text, XML, multipart without a boundary, protobuf that is
  not protobuf; for PATCH also none and plain JSON) a 415;
and per document, stateful chains (schemathesis' state machine over links added to the served
document, which has none: from a create or a list to every operation on the object and its
subresources): create or list, then read, replace, patch, delete, scale, finalize what was
created or listed.

Path parameters are either generated or point at what exists (namespace `default`, names listed
from the server before the run), so that requests reach objects and not only 404s.

What must hold, for every answer:
- not a 5xx (schemathesis' `not_a_server_error`): client input earns a 4xx;
- an error is a Kubernetes Status: kind Status, apiVersion v1, `code` equal to the HTTP status,
  a `reason`; kubectl and client-go show nothing useful for anything else;
- a success answers a media type the operation declares, with a body its schema describes
  (schemathesis' `content_type_conformance` and `response_schema_conformance`);
- an integer query parameter (limit, timeoutSeconds, gracePeriodSeconds, tailLines, ...) whose
  value Go's `strconv.ParseInt` refuses is a 400, on every verb that declares it: upstream's
  parameter codec decodes them before anything else;
- a method the path does not declare is a 405, a body in a media type the operation does not
  declare a 415 (or 400 for a malformed one);
and for the server: alive after every request, `/readyz` ok and no ERROR or traceback in its log
after every document, every request answered within REQUEST_TIMEOUT (a hang fails the run), and
resident memory grown by at most RSS_GROWTH_MIB over the run.

Checks left out, because schemathesis' reading of an OpenAPI document is not Kubernetes' (the
served documents say what upstream's say, and upstream's server answers the same way):
- `status_code_conformance`: upstream's documents declare 200/201/401 only, never the 4xx every
  operation can answer;
- `response_schema_conformance` of a DELETE answered with the object (its deletion waits for
  finalizers or a grace period) where the document declares a Status, as upstream's do;
- `positive_data_acceptance`: a schema-valid object is not a valid object (names are DNS
  labels, validation is code, a namespace must exist, an object must exist to be read);
- `negative_data_rejection`: upstream's parameter codec reads a boolean as true for any value
  but "false" and "0", takes the first of a repeated parameter, and a string parameter is any
  string; bodies are decoded leniently where upstream's are (DeleteOptions, the reviews). The
  integer rule above is the part of it that holds for Kubernetes;
- `unsupported_method`: it also wants an `Allow` header, which no Kubernetes client reads; the
  405 and its Status are checked above;
- `use_after_free` and `ensure_resource_availability` (stateful): objects outlive a DELETE while
  finalizers or a grace period hold them, and vanish without one (the garbage collector follows
  ownerReferences to owners that do not exist), as Kubernetes means them to.

The run in `make test` is bounded and the same every time (seed 0, a few cases per operation and
a few short chains per document: about 70 s on 2 CPUs); `make fuzz` runs it long and random:
EDGEKUBE_FUZZ_EXAMPLES is then the total number of requests to spread over the operations, and
EDGEKUBE_FUZZ_SEED=random a fresh seed (printed; EDGEKUBE_FUZZ_SEED=<integer> with the same
EDGEKUBE_FUZZ_EXAMPLES replays a run). A failure lists each distinct finding (operation, check,
status) once, with a curl command that reproduces it.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import itertools
import os
import random
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple
from urllib.parse import parse_qs, quote, urlsplit

import hypothesis.errors
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode, Response
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi import checks as openapi_checks

from tests.conftest import Server
from tests.support import fuzzkinds
from tests.support.apiclient import Api, connected

pytestmark = pytest.mark.slow

_BUDGET = os.environ.get("EDGEKUBE_FUZZ_EXAMPLES")
_SEED = os.environ.get("EDGEKUBE_FUZZ_SEED", "0")
REQUEST_TIMEOUT = 20.0  # seconds for one answer (the head of a watch); longer is a hang
RSS_GROWTH_MIB = 150
TARGET_NAMESPACE = "default"

# Per operation, bounded run: Hypothesis cases of each mode, and a sample of the coverage cases
# taken from the first COVERAGE_WINDOW (bodies come first there, then the parameters).
POSITIVE, NEGATIVE, COVERAGE, COVERAGE_WINDOW = 2, 1, 4, 40
SCENARIOS, STEPS = 3, 8  # stateful, per document: chains of up to STEPS linked requests

# The patch and apply media types are JSON and YAML to schemathesis' serializers.
schemathesis.serializer.alias(["application/apply-patch+yaml"], "application/yaml")

# Bodies in media types no operation declares, (Content-Type, body, what must answer). Upstream
# reads a missing Content-Type as JSON, except for PATCH, whose type says which patch it is.
_UNDECLARED_BODIES = (
    ("text/plain", b"{}", {415}),
    ("application/xml", b"<a/>", {415}),
    ("multipart/form-data", b"--x\r\n\r\n{}\r\n--x--", {415}),  # without its boundary parameter
    ("application/vnd.kubernetes.protobuf", b"k8s\x00\xff\xff\xff", {400, 415}),  # protobuf it is not
)
_UNDECLARED_PATCH_BODIES = (("", b"{}", {415}), ("application/json", b"{}", {415}))
_METHODS = ("get", "put", "post", "patch", "delete")


@dataclasses.dataclass
class Finding:
    operation: str
    check: str
    status: int | None
    message: str
    curl: str

    def __str__(self) -> str:
        return f"{self.operation}: {self.check} ({self.status}): {self.message[:600]}\n    {self.curl[:1200]}"


@dataclasses.dataclass
class Run:
    """One pass over every operation: the HTTP session, what was found, and the tallies."""

    server: Server
    session: requests.Session
    seed: int
    findings: dict[tuple[str, str, int | None], Finding] = dataclasses.field(default_factory=dict)
    answered: collections.Counter[int] = dataclasses.field(default_factory=collections.Counter)
    operations: set[str] = dataclasses.field(default_factory=set)
    names: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    log_offset: int = 0  # how much of the server's log was looked at

    def found(self, operation: str, check: str, status: int | None, message: str, curl: str) -> None:
        self.findings.setdefault((operation, check, status), Finding(operation, check, status, message, curl))

    def report(self) -> str:
        """Each check that failed, how often, and its first few findings (all of them in
        EDGEKUBE_FUZZ_REPORT, a file, when set)."""
        by_check: dict[str, list[Finding]] = collections.defaultdict(list)
        for finding in self.findings.values():
            by_check[finding.check].append(finding)
        replay = f"EDGEKUBE_FUZZ_SEED={self.seed}" + (f" EDGEKUBE_FUZZ_EXAMPLES={_BUDGET}" if _BUDGET else "")
        lines = [f"{len(self.findings)} findings (seed {self.seed}; {replay} replays the run)"]
        for check, found in sorted(by_check.items(), key=lambda kv: -len(kv[1])):
            lines.append(f"== {check}: {len(found)} operations")
            lines.extend(str(f) for f in found[:3])
        text = "\n".join(lines)
        if os.environ.get("EDGEKUBE_FUZZ_REPORT"):
            with open(os.environ["EDGEKUBE_FUZZ_REPORT"], "w") as out:
                out.write(text + "\n\n" + "\n".join(str(f) for f in self.findings.values()))
        return text

    def logged_errors(self, after: str) -> None:
        """What the server logged since the last look: an ERROR or a traceback is a fault no
        client saw (a handler, a controller, the scheduler or an informer failing on what the
        requests stored), a finding of its own."""
        with open(self.server.log_path, "rb") as f:
            f.seek(self.log_offset)
            data = f.read()
        self.log_offset += len(data)
        lines = data.decode(errors="replace").splitlines()
        for i, line in enumerate(lines):
            if " ERROR " in line or line.startswith("Traceback"):
                self.found(f"the server's log (after {after})", "no error logged", None,
                           "\n".join(lines[i:i + 30]), "")

    def alive(self, after: str) -> None:
        """The server still runs; a crash ends the run at once (what follows would only repeat it)."""
        assert self.server.proc is not None
        if self.server.proc.poll() is not None:
            raise AssertionError(f"the server exited ({self.server.proc.returncode}) after {after}:\n{self.server.log()}")


def _seed() -> int:
    if _SEED == "random":
        return random.SystemRandom().randrange(2**32)
    return int(_SEED)


def _session(server: Server) -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # no proxy, and REQUESTS_CA_BUNDLE must not replace the cluster CA
    session.verify = str(server.ca)
    tls = server.data_dir / "tls"
    session.cert = (str(tls / "admin.crt"), str(tls / "admin.key"))
    return session


def _documents(api: Api) -> dict[str, dict[str, Any]]:
    """Every group-version's document, by the paths the `/openapi/v3` index lists; the custom
    group first (its CRDs would not outlive the fuzzing of apiextensions' deletecollection)."""
    status, index = api.call("GET", "/openapi/v3")
    assert status == 200, index
    out: dict[str, dict[str, Any]] = {}
    for gv, entry in sorted(index["paths"].items(), key=lambda kv: (fuzzkinds.GROUP not in kv[0], kv[0])):
        status, doc = api.call("GET", entry["serverRelativeURL"])
        assert status == 200 and isinstance(doc, dict), (gv, status)
        out[gv] = doc
    return out


# --- what is sent --------------------------------------------------------------------------------


def _collection_of(path: str) -> str | None:
    """`/api/v1/namespaces/{namespace}/pods/{name}/log` -> `/api/v1/namespaces/default/pods`."""
    if "{name}" not in path:
        return None
    return path.split("/{name}", 1)[0].replace("{namespace}", TARGET_NAMESPACE)


def _existing_names(run: Run, collection: str) -> list[str]:
    if collection not in run.names:
        try:
            items = run.session.get(run.server.url + collection, timeout=REQUEST_TIMEOUT).json().get("items") or []
        except (requests.RequestException, ValueError, AttributeError):
            items = []
        names = [(i.get("metadata") or {}).get("name") for i in items if isinstance(i, dict)]
        run.names[collection] = [n for n in names if isinstance(n, str)][:2]
    return run.names[collection]


def _targets(run: Run, operation: Any) -> list[dict[str, str]]:
    """Path parameters that name what exists: namespace `default`, names listed from the server
    (or one that may have been created by then)."""
    params = {p.name for p in operation.path_parameters}
    if not params:
        return []
    collection = _collection_of(operation.path)
    names = (_existing_names(run, collection) if collection else []) or ["sfuzz"]
    out = []
    for name in names:
        target = {"namespace": TARGET_NAMESPACE, "name": name}
        out.append({k: v for k, v in target.items() if k in params})
    return out


def _is_watch(url: str) -> bool:
    """Whether the request asked for a watch, as upstream reads `watch`: present, and its first
    value neither "false" (any case) nor "0". (From the URL sent: schemathesis may pass the
    query on as a string.)"""
    values = parse_qs(urlsplit(url).query, keep_blank_values=True).get("watch")
    return bool(values) and values[0].lower() not in ("false", "0")


_INT64 = (-(2**63), 2**63 - 1)


def _go_int(value: Any) -> bool:
    """Whether Go's strconv.ParseInt(value, 10, 64) takes it: optional sign, ASCII digits, in range."""
    text = str(value).lower() if isinstance(value, bool) else str(value)
    digits = text[1:] if text[:1] in "+-" else text
    return digits.isascii() and digits.isdigit() and _INT64[0] <= int(text) <= _INT64[1]


def _bad_integer_parameter(case: Any) -> str | None:
    """The integer query parameter of `case` (if any) that upstream's parameter codec refuses.
    Only the first value counts (the codec reads that one), and empty is absent."""
    query = case.query if isinstance(case.query, dict) else {}
    for param in case.operation.query:
        if (param.definition.get("schema") or {}).get("type") != "integer" or param.name not in query:
            continue
        value = query[param.name]
        if isinstance(value, list):
            if not value:
                continue
            value = value[0]
        if value is None or isinstance(value, dict | list):
            continue  # not sent as one value: schemathesis serialises these its own way
        if value != "" and not _go_int(value):
            return f"{param.name}={value!r}"
    return None


def _check_status_body(run: Run, label: str, response: requests.Response | Response, curl: str) -> None:
    if response.status_code < 400:
        return
    try:
        body = response.json()
    except ValueError:
        body = None
    ok = (isinstance(body, dict) and body.get("kind") == "Status" and body.get("apiVersion") == "v1"
          and body.get("code") == response.status_code and isinstance(body.get("reason"), str) and body["reason"] != "")
    if not ok:
        run.found(label, "error is a Kubernetes Status", response.status_code, response.text[:300], curl)


class Sent(NamedTuple):
    response: requests.Response
    watching: bool  # a watch that started: only its head was read


def _send(run: Run, label: str, prepared: dict[str, Any], curl: str) -> Sent | None:
    """One request, its body read under the timeout; None when the connection failed."""
    try:
        response = run.session.request(**prepared, stream=True, timeout=(5, REQUEST_TIMEOUT))
        watching = (response.status_code == 200 and "Content-Length" not in response.headers
                    and _is_watch(str(response.request.url)))
        if watching:
            response.close()  # a watch streams until its timeout: that it answered is what counts
            response._content = b""  # (and its events are not what the operation's schema describes)
        else:
            response.content  # noqa: B018 (read the body now, under the timeout)
    except requests.Timeout:
        run.alive(label)
        raise AssertionError(f"no answer within {REQUEST_TIMEOUT}s (a hang): {label}\n{curl}") from None
    except requests.ConnectionError as exc:
        run.alive(label)
        run.found(label, "connection", None, str(exc), curl)
        return None
    run.answered[response.status_code] += 1
    run.alive(label)
    return Sent(response, watching)


_CHECKS = [not_a_server_error, openapi_checks.content_type_conformance, openapi_checks.response_schema_conformance]


def _checks_for(case: Any, response: requests.Response | Response) -> list[Any]:
    if case.method == "DELETE" and response.status_code == 200:
        answer = case.operation.definition.raw["responses"]["200"]["content"]["application/json"]["schema"]
        try:
            kind = response.json().get("kind")
        except (ValueError, AttributeError):
            kind = None
        if answer.get("$ref", "").endswith(".meta.v1.Status") and kind != "Status":
            # An object whose deletion waits (finalizers, a grace period, orphaning) is answered
            # as the object itself, where upstream's documents (and so these) declare a Status.
            return [c for c in _CHECKS if c is not openapi_checks.response_schema_conformance]
    return _CHECKS


def _validate(run: Run, case: Any, response: requests.Response | Response, curl: str) -> None:
    label = case.operation.label
    _check_status_body(run, label, response, curl)
    bad = _bad_integer_parameter(case)
    if bad is not None and response.status_code != 400:
        run.found(label, f"integer query parameter refused ({bad.split('=')[0]})", response.status_code,
                  f"{bad}: expected 400, got {response.status_code}: {response.text[:200]}", curl)
    try:
        case.validate_response(response, checks=_checks_for(case, response))
    except FailureGroup as group:
        for failure in group.exceptions:
            run.found(label, failure.title, response.status_code, str(failure), curl)


def _call(run: Run, case: Any) -> None:
    curl = case.as_curl_command(base_url=run.server.url)
    sent = _send(run, case.operation.label, case.as_transport_kwargs(base_url=run.server.url), curl)
    if sent is not None and not sent.watching:
        _validate(run, case, sent.response, curl)


def _probe(run: Run, label: str, method: str, path: str, *, content_type: str | None, body: bytes,
           expect: Callable[[int], bool], what: str) -> None:
    headers = {"Content-Type": content_type} if content_type is not None else {}
    prepared = {"method": method.upper(), "url": run.server.url + path, "headers": headers, "data": body}
    curl = f"curl -X {method.upper()} -H 'Content-Type: {content_type}' --data-binary {body!r} '{run.server.url}{path}'"
    sent = _send(run, label, prepared, curl)
    if sent is None:
        return
    response = sent.response
    _check_status_body(run, label, response, curl)
    if _is_route_not_found(response):
        run.found(label, "a declared path is served", 404, response.text[:300], curl)
    elif not expect(response.status_code):
        run.found(label, what, response.status_code, response.text[:300], curl)


def _fill(path: str, target: dict[str, str]) -> str:
    for key, value in target.items():
        path = path.replace("{" + key + "}", quote(value, safe=""))
    return path.replace("{namespace}", TARGET_NAMESPACE).replace("{name}", "sfuzz")


def _is_route_not_found(response: requests.Response) -> bool:
    """A 404 for the path itself ("the server could not find the requested resource"), not for
    an object or namespace that is missing (those name it in `details`)."""
    if response.status_code != 404:
        return False
    try:
        details = response.json().get("details") or {}
    except (ValueError, AttributeError):
        return True
    return not details.get("name")


def _shape_probes(run: Run, schema: Any) -> None:
    """Each declared method is routed; undeclared methods are a 405; bodies in undeclared media
    types a 415 (400 for a protobuf body that is not one)."""
    for path, item in schema.raw_schema["paths"].items():
        declared = {m for m in _METHODS if m in item}
        url = _fill(path, {})
        for method in sorted(declared):
            content_type = "application/merge-patch+json" if method == "patch" else "application/json"
            _probe(run, f"{method.upper()} {path}", method, url, content_type=content_type, body=b"{}",
                   expect=lambda s: s != 405, what="a declared method is served")
        for method in sorted(set(_METHODS) - declared):
            _probe(run, f"{method.upper()} {path}", method, url, content_type="application/json", body=b"{}",
                   expect=lambda s: s == 405, what="an undeclared method is a 405")
        for method in sorted(m for m in declared if "requestBody" in item[m]):
            for content_type, body, codes in _UNDECLARED_BODIES + (_UNDECLARED_PATCH_BODIES if method == "patch" else ()):
                _probe(run, f"{method.upper()} {path}", method, url, content_type=content_type, body=body,
                       expect=lambda s, codes=codes: s in codes,
                       what=f"an undeclared media type is a 415 ({content_type!r})")


def _cases(operation: Any, mode: GenerationMode, targets: list[dict[str, str]]) -> st.SearchStrategy[Any]:
    free = operation.as_strategy(generation_mode=mode)
    aimed = [operation.as_strategy(generation_mode=mode, path_parameters=t) for t in targets]
    return st.one_of(free, *aimed)


def _generated(run: Run, operation: Any, mode: GenerationMode, count: int, targets: list[dict[str, str]]) -> None:
    if count <= 0:
        return
    mode_seed = run.seed ^ zlib.crc32(f"{operation.label} {mode.value}".encode())

    @seed(mode_seed)
    @settings(max_examples=count, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(_cases(operation, mode, targets))
    def one(case: Any) -> None:
        _call(run, case)

    one()


def _coverage(run: Run, schema: Any, operation: Any, count: int, window: int, targets: list[dict[str, str]]) -> None:
    if count <= 0:
        return
    cases = schema.iter_coverage_cases(operation, generation_modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                                       generation_config=schema.config.generation_for(operation=operation))
    pool = [case for _, case in zip(range(window), cases, strict=False)]
    rng = random.Random(run.seed ^ zlib.crc32(operation.label.encode()))
    for i, case in enumerate(rng.sample(pool, min(count, len(pool)))):
        phase = case.meta.phase.data if case.meta is not None else None
        if targets and i % 2 and getattr(phase, "parameter_location", None) != "path":
            case.path_parameters = {**(case.path_parameters or {}), **targets[i % len(targets)]}
        _call(run, case)


# --- stateful: links between the operations ------------------------------------------------------


def with_links(doc: dict[str, Any]) -> dict[str, Any]:
    """`doc` with OpenAPI links (Kubernetes' documents have none): from a create and from a list
    to every operation on the object and its subresources, its name taken from the answer
    (`metadata.name`, `items[0].metadata.name`) and its namespace from the request."""
    doc = copy.deepcopy(doc)
    paths = doc["paths"]
    for path, item in paths.items():
        if "{name}" in path:
            continue
        targets = [op["operationId"] for sub, sub_item in paths.items() if sub.startswith(path + "/{name}")
                   for method, op in sub_item.items() if method in _METHODS]
        if not targets:
            continue
        namespace = {"namespace": "$request.path.namespace"} if "{namespace}" in path else {}
        if "post" in item:
            for code in ("200", "201"):
                if code in item["post"]["responses"]:
                    item["post"]["responses"][code]["links"] = _links(targets, {"name": "$response.body#/metadata/name", **namespace})
        if (item.get("get") or {}).get("x-kubernetes-action") == "list":
            item["get"]["responses"]["200"]["links"] = _links(targets, {"name": "$response.body#/items/0/metadata/name", **namespace})
    return doc


def _links(targets: list[str], parameters: dict[str, str]) -> dict[str, Any]:
    return {target: {"operationId": target, "parameters": parameters} for target in targets}


def _stateful(run: Run, gv: str, doc: dict[str, Any], scenarios: int, steps: int) -> None:
    """Chains of requests that follow the links: create or list, then read, replace, patch,
    delete the object and its subresources. In namespace `default`, without query parameters,
    and the creates with plain metadata (a valid name, `sfuzz-<n>`; every other one with nothing
    else), so that creates succeed and the chains reach objects."""
    linked = with_links(doc)
    if scenarios <= 0 or not any("links" in r for item in linked["paths"].values() for op in item.values()
                                 if isinstance(op, dict) for r in (op.get("responses") or {}).values()):
        return  # (the reviews' groups: create alone)
    schema = schemathesis.openapi.from_dict(linked)
    names = itertools.count()

    class Machine(schema.as_state_machine()):  # type: ignore[misc]
        def before_call(self, case: Any) -> None:
            if "namespace" in (case.path_parameters or {}):
                case.path_parameters["namespace"] = TARGET_NAMESPACE
            case.query = {}  # (the other phases fuzz them; a bad one would end every chain at its first step)
            if case.method == "POST" and "{name}" not in case.path and isinstance(case.body, dict):
                n = next(names)
                if n % 2:  # the generated body with plain metadata (the other phases fuzz metadata) ...
                    case.body["metadata"] = {"name": f"sfuzz-{n}"}
                else:  # ... or a minimal object, which many kinds take, for the chain to work on
                    case.body = {"metadata": {"name": f"sfuzz-{n}"}}

        def call(self, case: Any, **kwargs: Any) -> Response:
            curl = case.as_curl_command(base_url=run.server.url)
            sent = _send(run, case.operation.label, case.as_transport_kwargs(base_url=run.server.url), curl)
            if sent is None:
                raise AssertionError(f"the connection failed: {curl}")  # reported by _send; ends the scenario
            response = Response.from_requests(sent.response, verify=True)
            if not sent.watching:
                _validate(run, case, response, curl)
            return response

        def validate_response(self, response: Response, case: Any, additional_checks: Any = None, **kwargs: Any) -> None:
            pass  # done in call(), into the run's findings

    machine = seed(run.seed ^ zlib.crc32(gv.encode()))(Machine)
    try:
        machine.run(settings=settings(max_examples=scenarios, stateful_step_count=steps, database=None, deadline=None,
                                      phases=[Phase.generate], suppress_health_check=list(HealthCheck)))
    except (hypothesis.errors.Flaky, hypothesis.errors.Unsatisfiable):
        # Which links can be followed depends on what the server answered, so Hypothesis may find
        # a scenario that it cannot replay, or run out of ones to draw: the end of the chains, as
        # schemathesis' own runner takes it. (Findings are already recorded, never raised.)
        pass


@dataclasses.dataclass(frozen=True)
class Plan:
    """How many cases of each kind per operation."""

    positive: int
    negative: int
    coverage: int
    window: int
    scenarios: int  # stateful, per document
    steps: int

    @classmethod
    def for_operations(cls, count: int) -> Plan:
        if _BUDGET is None:
            return cls(POSITIVE, NEGATIVE, COVERAGE, COVERAGE_WINDOW, SCENARIOS, STEPS)
        per_operation = max(POSITIVE + NEGATIVE + COVERAGE, int(_BUDGET) // max(count, 1))
        third = per_operation // 3
        return cls(third, third, per_operation - 2 * third, max(COVERAGE_WINDOW, 10 * third),
                   max(SCENARIOS, per_operation), STEPS * 2)


# --- the run -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api(server: Server) -> Iterator[Api]:
    with connected(server) as client:
        yield client


def test_every_openapi_v3_operation_never_5xx_crash_hang_or_leak(server: Server, api: Api) -> None:
    fuzzkinds.add_crds(api)
    documents = _documents(api)
    assert "api/v1" in documents and f"apis/{fuzzkinds.GROUP}/v1" in documents, sorted(documents)
    schemas = {gv: schemathesis.openapi.from_dict(doc) for gv, doc in documents.items()}
    operations = {gv: [r.ok() for r in schema.get_all_operations()] for gv, schema in schemas.items()}
    plan = Plan.for_operations(sum(len(ops) for ops in operations.values()))
    run = Run(server=server, session=_session(server), seed=_seed())
    started = time.monotonic()
    assert server.proc is not None
    rss_before = server.rss_mib()
    run.log_offset = server.log_path.stat().st_size
    for gv, schema in schemas.items():
        for operation in operations[gv]:
            run.operations.add(operation.label)
            targets = _targets(run, operation)
            _generated(run, operation, GenerationMode.POSITIVE, plan.positive, targets)
            _generated(run, operation, GenerationMode.NEGATIVE, plan.negative, targets)
            _coverage(run, schema, operation, plan.coverage, plan.window, targets)
        _shape_probes(run, schema)
        _stateful(run, gv, documents[gv], plan.scenarios, plan.steps)
        run.logged_errors(gv)
        ready = run.session.get(server.url + "/readyz", timeout=REQUEST_TIMEOUT)
        assert ready.status_code == 200 and ready.text == "ok", f"/readyz after {gv}: {ready.status_code} {ready.text}"
    rss_after = server.rss_mib()
    elapsed = time.monotonic() - started
    print(f"openapi fuzz: seed {run.seed}, {len(run.operations)} operations in {len(schemas)} documents, "
          f"{sum(run.answered.values())} requests answered {dict(sorted(run.answered.items()))} in {elapsed:.0f}s, "
          f"RSS {rss_before:.0f} -> {rss_after:.0f} MiB")  # shown with -s
    assert not run.findings, run.report()
    assert rss_after - rss_before < RSS_GROWTH_MIB, (rss_before, rss_after)
