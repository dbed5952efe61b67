"""The OpenAPI document (``GET /api/openapi.json``) is what the server does: every API route
is in it, every answer the server gives matches the schema documented for its status, and
requests drawn from the documented schemas (and arbitrary JSON) never get a 5xx."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import trio
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from protocols.http.openapi import OPERATIONS, PAYMENT_NOTICE, TOP_UP
from tests.http.harness import ADMIN, OPERATOR, VIEWER, open_web_park
from tests.http.test_payments import KEYS, signed

JSON_PATHS = {(op.method, op.path): op for op in OPERATIONS}


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values of the JSON Schema subset the API's request schemas use (objects of strings
    with patterns, lengths, maps): valid ones mostly, with optional keys left out."""
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "string":
        if "pattern" in schema:
            return st.from_regex(schema["pattern"], fullmatch=True)
        return st.text(min_size=schema.get("minLength", 0),
                       max_size=min(schema.get("maxLength", 50), 200))
    if kind == "integer":
        return st.integers(schema.get("minimum"), schema.get("maximum"))
    if kind == "object":
        properties = schema.get("properties", {})
        required = set(schema.get("required", ()))
        fixed = st.fixed_dictionaries(
            {name: from_schema(sub) for name, sub in properties.items() if name in required},
            optional={name: from_schema(sub) for name, sub in properties.items()
                      if name not in required})
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            return st.dictionaries(st.text(min_size=1, max_size=12), from_schema(extra),
                                   max_size=min(schema.get("maxProperties", 5), 5))
        return fixed
    raise NotImplementedError(f"the fuzz does not draw {schema}")


def check_answer(method: str, path: str, answer: httpx.Response) -> None:
    """The answer's status is documented for this operation, and its body fits the schema."""
    op = JSON_PATHS[method, path]
    assert answer.status_code < 500, (method, path, answer.status_code, answer.text)
    assert answer.status_code in op.responses, (
        f"{method.upper()} {path} answered {answer.status_code}, which is not documented: "
        f"{answer.text}")
    if answer.headers.get("content-type", "").startswith(("text/csv", "text/html")):
        assert op.csv and answer.status_code == 200
        return
    schema = op.responses[answer.status_code][1]
    Draft202012Validator(schema).validate(answer.json())


async def test_the_document_lists_every_api_route_with_valid_schemas(tmp_path: Path) -> None:
    async with open_web_park(tmp_path / "park", extra_toml=KEYS) as web:
        document = (await web.client.get("/api/openapi.json")).json()
    assert document["openapi"] == "3.1.0"
    assert {(method, path) for path, item in document["paths"].items() for method in item} == \
        set(JSON_PATHS)
    for item in document["paths"].values():
        for entry in item.values():
            for response in entry["responses"].values():
                Draft202012Validator.check_schema(response["content"]["application/json"]
                                                  ["schema"])
            if "requestBody" in entry:
                Draft202012Validator.check_schema(
                    entry["requestBody"]["content"]["application/json"]["schema"])


async def test_every_answer_matches_its_documented_schema(tmp_path: Path) -> None:
    async with open_web_park(tmp_path / "park", extra_toml=KEYS) as web:
        c = web.client
        checks = [
            ("get", "/api/meters", await c.get("/api/meters", auth=VIEWER)),
            ("get", "/api/meters", await c.get("/api/meters")),
            ("get", "/api/meters/{meter_id}", await c.get("/api/meters/M-1", auth=VIEWER)),
            ("get", "/api/meters/{meter_id}", await c.get("/api/meters/NOPE", auth=VIEWER)),
            ("post", "/api/topups", await c.post("/api/topups", auth=OPERATOR, json={
                "id": "r1", "meter": "M-1", "amount": "5.00"})),
            ("post", "/api/topups", await c.post("/api/topups", auth=OPERATOR, json={
                "id": "r1", "meter": "M-2", "amount": "5.00"})),
            ("post", "/api/topups", await c.post("/api/topups", auth=VIEWER, json={
                "id": "r2", "meter": "M-1", "amount": "5.00"})),
            ("post", "/api/topups", await c.post("/api/topups", auth=OPERATOR,
                                                 content=b"x" * 20_000)),
            ("get", "/api/audit", await c.get("/api/audit", auth=ADMIN)),
            ("get", "/api/tenants", await c.get("/api/tenants", auth=VIEWER)),
            ("get", "/api/tenants/{tenant}", await c.get("/api/tenants/t0", auth=VIEWER)),
            ("get", "/api/tenants/{tenant}", await c.get("/api/tenants/x", auth=VIEWER)),
            ("get", "/api/meters/{meter_id}/history", await c.get(
                "/api/meters/M-1/history", auth=VIEWER)),
            ("get", "/api/meters/{meter_id}/history", await c.get(
                "/api/meters/M-1/history?from=2020-01-01", auth=VIEWER)),
            ("get", "/api/meters/{meter_id}/history", await c.get(
                "/api/meters/NOPE/history", auth=VIEWER)),
            ("get", "/api/reports/{kind}", await c.get("/api/reports/reconciliation?format=json",
                                                       auth=OPERATOR)),
            ("get", "/api/reports/{kind}", await c.get("/api/reports/consumption", auth=ADMIN)),
            ("get", "/api/reports/{kind}", await c.get("/api/reports/topups?to=x",
                                                       auth=OPERATOR)),
            ("get", "/api/reports/{kind}", await c.get("/api/reports/arrears", auth=VIEWER)),
            ("get", "/api/reports/{kind}", await c.get("/api/reports/nope", auth=OPERATOR)),
            ("get", "/api/audit", await c.get("/api/audit?limit=x", auth=ADMIN)),
            ("get", "/api/audit", await c.get("/api/audit", auth=OPERATOR)),
        ]
        raw, headers = signed({"transaction_id": "p1", "meter": "M-1", "amount": "1.00"})
        checks.append(("post", "/api/payments/notify",
                       await c.post("/api/payments/notify", content=raw, headers=headers)))
        checks.append(("post", "/api/payments/notify",
                       await c.post("/api/payments/notify", content=raw)))
        for method, path, answer in checks:
            check_answer(method, path, answer)


class WebParkThread:
    """The park and its HTTP side under ``trio.run`` in a thread, for a synchronous
    hypothesis test."""

    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir
        self._ready = threading.Event()
        self._stop = threading.Event()
        self.url = ""
        self._thread = threading.Thread(target=lambda: trio.run(self._serve), daemon=True)

    async def _serve(self) -> None:
        async with open_web_park(self._data_dir, extra_toml=KEYS) as web:
            self.url = web.url
            self._ready.set()
            await trio.to_thread.run_sync(self._stop.wait)

    def __enter__(self) -> WebParkThread:
        self._thread.start()
        assert self._ready.wait(20), "the web park did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(20)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    with WebParkThread(tmp_path_factory.mktemp("fuzz") / "park") as park, \
            httpx.Client(base_url=park.url, timeout=10) as client:
        yield client


FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
ANY_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                        lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=8)


@FUZZ
@given(body=from_schema(TOP_UP) | ANY_JSON)
def test_top_ups_from_the_schema_never_get_a_5xx(live: httpx.Client, body: Any) -> None:
    answer = live.post("/api/topups", auth=OPERATOR, content=json.dumps(body))
    check_answer("post", "/api/topups", answer)


@FUZZ
@given(body=from_schema(PAYMENT_NOTICE) | ANY_JSON, sign=st.booleans())
def test_payment_notices_from_the_schema_never_get_a_5xx(live: httpx.Client, body: Any,
                                                          sign: bool) -> None:
    if sign and isinstance(body, dict):
        raw, headers = signed(body)
    else:
        raw, headers = json.dumps(body).encode(), {"X-Api-Key": "wechat"}
    answer = live.post("/api/payments/notify", content=raw, headers=headers)
    check_answer("post", "/api/payments/notify", answer)


@FUZZ
@given(meter=st.text(min_size=1, max_size=40), query=st.dictionaries(
    st.sampled_from(["tenant", "gateway", "before", "limit"]), st.text(max_size=20)))
def test_reads_with_any_path_and_query_never_get_a_5xx(live: httpx.Client, meter: str,
                                                       query: dict[str, str]) -> None:
    check_answer("get", "/api/meters", live.get("/api/meters", params=query, auth=VIEWER))
    # (Only dots would be a URL's own "." and "..", which the client resolves before sending.)
    assume(meter.strip(".") != "")
    answer = live.get(f"/api/meters/{quote(meter, safe='')}", auth=VIEWER)
    if answer.status_code != 404 or answer.json().get("error") != "not_found":
        check_answer("get", "/api/meters/{meter_id}", answer)
    check_answer("get", "/api/audit", live.get("/api/audit", params=query, auth=ADMIN))
