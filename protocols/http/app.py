"""The ASGI app (starlette, on trio through anyio): console files, REST API, metrics, health.

Routes (docs/http-api.md; CONTRACT.md section 4):

* ``GET /`` and ``GET /static/...``: the browser console, files shipped in this package. The
  console talks to the park over the websocket hub only; ``GET /api/console`` tells it where
  the hub is.
* ``GET /healthz``: 200 while the journal can write, 503 when storage is down (a load
  balancer or service manager takes the server out of rotation then), JSON either way.
* ``GET /metrics``: Prometheus text format (:mod:`protocols.http.metrics`).
* ``GET /api/meters``, ``GET /api/meters/{id}``: the hub's ``meter`` objects (the hub's own
  encoder, ``protocols.ws.protocol``, so the two cannot drift apart); any user.
* ``POST /api/topups``: an operator's (or a payment integration's) top-up, idempotent on its
  ``id``; through the park's operations, so it is journaled and audited like any other.
* ``GET /api/quotas``, ``POST /api/quotas/{group}/requests`` (operators) and ``.../decisions``
  (admins): quota groups and their extension requests, through the park's operations.
* ``POST /api/apportionment``: an admin posts a period's shares of losses and common areas.
* ``POST /api/lines/{line}/output``: an operator enters a production line's output of a day.
* ``GET /api/notices``, ``POST /api/notices/retry``: tenant notices' figures and dead letters,
  and "try again" for one or every dead letter; admins.
* ``GET /api/audit?before=&limit=``: the audit log, newest first, a page at a time; admins.
* ``POST /api/payments/notify``: a payment integration's signed notification
  (:mod:`protocols.http.payments`), idempotent on its transaction id.
* ``GET /api/openapi.json``: the API's OpenAPI document, made from the same table as the
  routes (:mod:`protocols.http.openapi`).
* ``POST /api/tenants/{tenant}/links`` and ``.../links/revoke``: an admin makes a link to a
  tenant's self-service page, or withdraws every link made so far; ``/t/<token>...``: the
  page itself, for the tenant (:mod:`protocols.http.tenant_page`).

The API authenticates every request with HTTP basic credentials (:mod:`basic_auth`). Failed
attempts are slowed down per client host by the park's login throttle, the same as the hub's.
Errors are JSON ``{"error": code, "message": ...}`` with the contract's codes.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import trio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from policies.money import format_amount, parse_amount
from protocols.http.backend import HttpBackend
from protocols.http.basic_auth import BadCredentials, CredentialCache, parse_basic
from protocols.http.metrics import CONTENT_TYPE, metrics_registry, render
from protocols.http.openapi import OPERATIONS, openapi_document, starlette_path
from protocols.http.payments import (
    PaymentRefused,
    parse_notice,
    part_reference,
    verify_signature,
)
from protocols.http.tenant_page import TenantRoutes, tenant_routes
from protocols.ws.protocol import audit_fields, iso_ms, meter_message

log = logging.getLogger(__name__)

STATIC_DIR: Final = Path(__file__).parent / "static"
MAX_BODY: Final = 16 * 1024
WILDCARD_HOSTS: Final = frozenset({"0.0.0.0", "::", ""})
REALM: Final = 'Basic realm="wattkeeper", charset="UTF-8"'
CSP: Final = b"content-security-policy"

STATUS_OF_CODE: Final = {
    "bad_request": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "unknown_meter": 404,
    "unknown_tenant": 404,
    "bad_signature": 401,
    "stale": 401,
    "revoked": 401,
    "expired": 401,
    "not_found": 404,
    "method_not_allowed": 405,
    "too_large": 413,
    "conflict": 409,
    "unbalanced": 422,
    "overloaded": 503,
    "unavailable": 503,
}

SECURITY_HEADERS: Final = [
    # The console's own files only; its websocket goes to the hub's port (another origin).
    (b"content-security-policy",
     b"default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
     b"style-src 'self'; script-src 'self'; frame-ancestors 'none'; base-uri 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


class ApiError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def error_response(code: str, message: str) -> JSONResponse:
    status = STATUS_OF_CODE.get(code, 500)
    headers = {"WWW-Authenticate": REALM} if status == 401 else None
    return JSONResponse({"error": code, "message": message}, status_code=status,
                        headers=headers)


class SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every response (pure ASGI, no buffering)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                # A response with a policy of its own keeps it (the tenants' statement page:
                # inline styles, no script at all).
                own = any(name.lower() == b"content-security-policy" for name, _ in headers)
                message = {**message, "headers": [*headers, *(
                    h for h in SECURITY_HEADERS if not (own and h[0] == CSP))]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _address(request: Request) -> str:
    client = request.client
    if client is None:
        return ""
    host = f"[{client.host}]" if ":" in client.host else client.host
    return f"{host}:{client.port}"


def _host(request: Request) -> str:
    return request.client.host if request.client is not None else ""


class Api:
    """The route handlers, around one :class:`HttpBackend`."""

    def __init__(self, backend: HttpBackend) -> None:
        self.backend = backend
        self.credentials = CredentialCache()
        self.registry = metrics_registry(backend.statistics)
        self.document = openapi_document(backend.version)
        self.tenant_page = (TenantRoutes(backend.tenant_page)
                            if backend.tenant_page is not None else None)

    # -- who is asking --------------------------------------------------------------------

    async def caller(self, request: Request) -> Any:
        """The authenticated caller, or :class:`ApiError` unauthorized (after the throttle's
        delay when this host has been guessing)."""
        try:
            credentials = parse_basic(request.headers.get("authorization"))
        except BadCredentials as error:
            raise ApiError("unauthorized", str(error)) from None
        if credentials is None:
            raise ApiError("unauthorized", "this needs HTTP basic credentials of a user")
        user, password = credentials
        backend = self.backend
        now_ms = backend.clock_ms()
        role = self.credentials.get(user, password, now_ms)
        if role is None:
            host = _host(request)
            delay = backend.throttle.delay_s(host, now_ms)
            if delay > 0:
                await trio.sleep(delay)
            # A hashed password costs ~50 ms of scrypt: off the loop the meters run on.
            role = await trio.to_thread.run_sync(backend.users.authenticate, user, password)
            if role is None:
                backend.throttle.failed(host, backend.clock_ms())
                raise ApiError("unauthorized", "wrong user name or password")
            backend.throttle.succeeded(host)
            self.credentials.put(user, password, role, now_ms)
        return backend.caller(user, role, _address(request))

    # -- console and probes ---------------------------------------------------------------

    async def index(self, request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    async def console(self, request: Request) -> Response:
        hub = urlsplit(self.backend.hub_url)
        if (hub.hostname or "") in WILDCARD_HOSTS and request.url.hostname:
            host = request.url.hostname
            host = f"[{host}]" if ":" in host else host
            hub = hub._replace(netloc=f"{host}:{hub.port}" if hub.port else host)
        return JSONResponse({"hub": urlunsplit(hub), "languages": list(self.backend.languages)},
                            headers={"Cache-Control": "no-store"})

    async def healthz(self, request: Request) -> Response:
        health = self.backend.health()
        body = {
            "status": "ok" if health.journal_available else "unavailable",
            "journal": "available" if health.journal_available else "unavailable",
            "meters": health.meters,
            "faulted": health.faulted,
            "uptime_s": round(health.uptime_s, 3),
        }
        return JSONResponse(body, status_code=200 if health.journal_available else 503,
                            headers={"Cache-Control": "no-store"})

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(self.document)

    async def metrics(self, request: Request) -> Response:
        return Response(render(self.registry), media_type=CONTENT_TYPE,
                        headers={"Cache-Control": "no-store"})

    # -- API ------------------------------------------------------------------------------

    async def meters(self, request: Request) -> Response:
        await self.caller(request)
        tenant = request.query_params.get("tenant")
        gateway = request.query_params.get("gateway")
        decimals = self.backend.decimals
        chosen = [
            meter_message(view, decimals) for view in self.backend.meters().values()
            if (tenant is None or view.tenant == tenant)
            and (gateway is None or view.gateway == gateway)
        ]
        return JSONResponse({"meters": chosen})

    async def meter(self, request: Request) -> Response:
        await self.caller(request)
        meter_id = request.path_params["meter_id"]
        view = self.backend.meters().get(meter_id)
        if view is None:
            raise ApiError("unknown_meter", f"no meter {meter_id!r} in this park")
        return JSONResponse(meter_message(view, self.backend.decimals))

    async def top_up(self, request: Request) -> Response:
        caller = await self.caller(request)
        body = await _json_body(request)
        reference, meter_id, amount_text = body.get("id"), body.get("meter"), body.get("amount")
        if not isinstance(reference, str) or not reference:
            raise ApiError("bad_request", 'a top-up needs an "id" (text, the client\'s '
                                          "reference: a repeat with the same id is applied once)")
        if not isinstance(meter_id, str) or not meter_id:
            raise ApiError("bad_request", 'a top-up needs a "meter" id')
        try:
            amount = parse_amount(amount_text, self.backend.decimals)
        except ValueError as error:
            raise ApiError("bad_request", str(error)) from None
        ack = await self.backend.operations.top_up(caller, meter_id, amount, reference)
        return JSONResponse({"id": ack.reference, "meter": ack.meter_id,
                             "balance": format_amount(ack.balance, self.backend.decimals),
                             "status": ack.status})

    async def payment_notice(self, request: Request) -> Response:
        """A payment integration's notification (:mod:`protocols.http.payments`)."""
        backend = self.backend
        raw = await _read_body(request)
        transaction_id: object = None
        try:
            headers = request.headers
            key_id = verify_signature(backend.payment_secrets, headers.get("x-api-key"),
                                      headers.get("x-timestamp"), headers.get("x-signature"),
                                      raw, backend.clock_ms() / 1000)
            body = _json_object(raw)
            transaction_id = body.get("transaction_id")
            notice = parse_notice(body, backend.decimals, backend.tenant_meters)
        except (PaymentRefused, ApiError) as error:
            log.warning("payment notification refused (%s): %s", error.code, error)
            return _refused(transaction_id, error.code, str(error))
        assert backend.payment_caller is not None  # (payment_secrets come with it)
        caller = backend.payment_caller(key_id, _address(request))
        parts: list[dict[str, str]] = []
        for part in notice.parts:
            try:
                ack = await backend.operations.top_up(caller, part.meter_id, part.amount,
                                                      part_reference(key_id, notice, part))
            except Exception as error:
                failed = getattr(error, "code", None)
                if not isinstance(failed, str) or failed not in STATUS_OF_CODE:
                    raise
                done = [p["meter"] for p in parts]
                message = str(error) + (f" (applied to {', '.join(done)} already: send it "
                                        "again, the rest is applied once)" if done else "")
                return _refused(notice.transaction_id, failed, message)
            parts.append({"meter": ack.meter_id,
                          "amount": format_amount(part.amount, backend.decimals),
                          "balance": format_amount(ack.balance, backend.decimals),
                          "status": ack.status})
        duplicate = all(p["status"] == "duplicate" for p in parts)
        return JSONResponse({
            "transaction_id": notice.transaction_id,
            "status": "duplicate" if duplicate else "applied",
            "meter": parts[0]["meter"], "balance": parts[0]["balance"],
            "parts": parts,
        })

    async def tenants(self, request: Request) -> Response:
        await self.caller(request)
        return JSONResponse({"tenants": [self._tenant(name)
                                         for name in sorted(self.backend.tenant_meters)]})

    async def tenant(self, request: Request) -> Response:
        await self.caller(request)
        name = request.path_params["tenant"]
        if name not in self.backend.tenant_meters:
            raise ApiError("unknown_tenant", f"no tenant {name!r} in this park")
        return JSONResponse(self._tenant(name))

    def _tenant(self, name: str) -> dict[str, object]:
        views = self.backend.meters()
        meters = [views[m] for m in self.backend.tenant_meters[name] if m in views]
        return {"tenant": name, "meters": [v.meter_id for v in meters],
                "main_meter": self.backend.tenant_meters[name][0],
                "balance": format_amount(sum(v.balance for v in meters), self.backend.decimals),
                "meters_cut": sum(1 for v in meters if not v.relay_closed),
                "power_w": round(sum(v.power_w for v in meters), 1)}

    async def meter_history(self, request: Request) -> Response:
        await self.caller(request)
        meter_id = request.path_params["meter_id"]
        if meter_id not in self.backend.meters():
            raise ApiError("unknown_meter", f"no meter {meter_id!r} in this park")
        if self.backend.history is None:
            raise ApiError("not_found", "this server keeps no history")
        return JSONResponse(await self.backend.history(meter_id, dict(request.query_params)))

    async def report(self, request: Request) -> Response:
        caller = await self.caller(request)
        if self.backend.report is None:
            raise ApiError("not_found", "this server has no reports")
        body, media = await self.backend.report(caller, request.path_params["kind"],
                                                dict(request.query_params))
        return Response(body, media_type=media, headers={"Cache-Control": "no-store"})

    async def quotas(self, request: Request) -> Response:
        caller = await self.caller(request)
        return JSONResponse({"groups": self.backend.operations.quota_groups(caller)})

    async def quota_request(self, request: Request) -> Response:
        caller = await self.caller(request)
        body = await _json_body(request)
        answer = await self.backend.operations.request_quota(
            caller, request.path_params["group"], body.get("amount"), body.get("reason"),
            _reference(body, "a request"))
        return JSONResponse({"id": answer.reference, "status": answer.status,
                             "group": answer.group})

    async def quota_decision(self, request: Request) -> Response:
        caller = await self.caller(request)
        body = await _json_body(request)
        decision = body.get("decision")
        if decision not in ("approve", "reject"):
            raise ApiError("bad_request", '"decision" must be "approve" or "reject"')
        answer = await self.backend.operations.decide_quota(
            caller, request.path_params["group"], body.get("request"), decision == "approve",
            body.get("note", ""), _reference(body, "a decision"))
        return JSONResponse({"id": answer.reference, "status": answer.status,
                             "group": answer.group})

    async def output(self, request: Request) -> Response:
        caller = await self.caller(request)
        body = await _json_body(request)
        answer = await self.backend.operations.record_output(
            caller, request.path_params["line"], body.get("date"), body.get("count"),
            _reference(body, "a production count"))
        return JSONResponse({"id": answer.reference, "line": answer.line, "date": answer.date,
                             "count": answer.count, "unit": answer.unit,
                             "status": answer.status})

    async def apportion(self, request: Request) -> Response:
        caller = await self.caller(request)
        body = await _json_body(request)
        answer = await self.backend.operations.apportion(caller, body.get("from"),
                                                         body.get("to"))
        return JSONResponse({"period": answer.period, "status": answer.status,
                             "postings": answer.postings})

    async def tenant_link(self, request: Request) -> Response:
        caller = await self.caller(request)
        raw = await _read_body(request)
        body = _json_object(raw) if raw.strip() else {}
        link = await self.backend.operations.create_tenant_link(
            caller, request.path_params["tenant"], body.get("days"))
        page = self.backend.tenant_page
        base = (page.base_url if page is not None else "") or str(request.base_url).rstrip("/")
        return JSONResponse({"tenant": link.tenant, "url": base + link.path(),
                             "path": link.path(), "generation": link.generation,
                             "expires": iso_ms(link.expires_ms)},
                            headers={"Cache-Control": "no-store"})

    async def revoke_tenant_links(self, request: Request) -> Response:
        caller = await self.caller(request)
        body = await _json_body(request)
        answer = await self.backend.operations.revoke_tenant_links(
            caller, request.path_params["tenant"], _reference(body, "a revocation"))
        return JSONResponse({"id": answer.reference, "tenant": answer.tenant,
                             "generation": answer.generation, "status": answer.status})

    async def tenant_summary(self, request: Request) -> Response:
        if self.tenant_page is None:
            raise ApiError("not_found", "this server has no tenants' page")
        return await self.tenant_page.summary(request)

    async def notices(self, request: Request) -> Response:
        caller = await self.caller(request)
        return JSONResponse(self.backend.operations.notices(caller),
                            headers={"Cache-Control": "no-store"})

    async def notice_retry(self, request: Request) -> Response:
        caller = await self.caller(request)
        body = await _json_body(request)
        answer = await self.backend.operations.retry_notices(
            caller, body.get("notice"), _reference(body, "a retry"))
        return JSONResponse({"id": answer.reference, "notice": answer.notice,
                             "status": answer.status})

    async def audit(self, request: Request) -> Response:
        caller = await self.caller(request)
        before = request.query_params.get("before") or None
        limit_text = request.query_params.get("limit", "50")
        try:
            limit = int(limit_text)
        except ValueError:
            raise ApiError("bad_request", f"limit must be a whole number from 1 to 200, "
                                          f"got {limit_text!r}") from None
        page = self.backend.operations.audit_page(caller, before=before, limit=limit)
        return JSONResponse({"entries": [audit_fields(entry) for entry in page.entries],
                             "next": page.next})


def _reference(body: dict[str, Any], what: str) -> str:
    reference = body.get("id")
    if not isinstance(reference, str) or not reference or len(reference) > 128:
        raise ApiError("bad_request", f'{what} needs an "id" (text of at most 128 characters, '
                                      "your reference: a repeat with the same id is applied "
                                      "once)")
    return reference


def _refused(transaction_id: object, code: str, message: str) -> JSONResponse:
    status = STATUS_OF_CODE.get(code, 500)
    body = {"transaction_id": transaction_id if isinstance(transaction_id, str) else None,
            "status": "refused", "error": code, "message": message}
    return JSONResponse(body, status_code=status,
                        headers={"WWW-Authenticate": "HMAC-SHA256"} if status == 401 else None)


async def _json_body(request: Request) -> dict[str, Any]:
    return _json_object(await _read_body(request))


async def _read_body(request: Request) -> bytes:
    too_large = ApiError("too_large", f"the request body is over {MAX_BODY} bytes")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise too_large
    size = 0
    chunks = []
    # Closed explicitly: a body cut short must not leave the generator to the collector.
    async with contextlib.aclosing(request.stream()) as stream:
        async for chunk in stream:
            size += len(chunk)
            if size > MAX_BODY:
                raise too_large
            chunks.append(chunk)
    return b"".join(chunks)


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError("bad_request", "the body is not JSON") from None
    if not isinstance(body, dict):
        raise ApiError("bad_request", "the body must be a JSON object")
    return body


Handler = Callable[[Request], Awaitable[Response]]


def _answering_errors(handler: Handler) -> Handler:
    """The park's errors (``.code``: the contract's words) and ours as JSON answers."""

    async def handle(request: Request) -> Response:
        try:
            return await handler(request)
        except ApiError as error:
            return error_response(error.code, error.message)
        except Exception as error:
            code = getattr(error, "code", None)
            if isinstance(code, str) and code in STATUS_OF_CODE:
                return error_response(code, str(error) or code)
            raise

    return handle


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "bad_request")
    response = error_response(code, str(error.detail))
    response.status_code = error.status_code
    if error.headers:
        response.headers.update(error.headers)
    return response


async def _internal_error(request: Request, error: Exception) -> Response:
    # Starlette re-raises the error after this answer; hypercorn logs it with its traceback.
    log.error("HTTP %s %s failed: %r", request.method, request.url.path, error)
    return JSONResponse({"error": "internal", "message": "internal error (see the server log)"},
                        status_code=500)


def build_app(backend: HttpBackend) -> ASGIApp:
    api = Api(backend)
    e = _answering_errors
    routes = [
        Route("/", api.index, methods=["GET", "HEAD"]),
        Route("/healthz", api.healthz, methods=["GET", "HEAD"]),
        Route("/metrics", api.metrics, methods=["GET"]),
        Route("/api/console", api.console, methods=["GET"]),
        Route("/api/openapi.json", api.openapi, methods=["GET"]),
        *(Route(starlette_path(op.path), e(getattr(api, op.name)), methods=[op.method.upper()])
          for op in OPERATIONS),
        *tenant_routes(api.tenant_page),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={
        HTTPException: _http_error, Exception: _internal_error})
    # A trailing slash is another path (404), not a redirect: clients of a money API should
    # find a wrong URL at once, not have a POST silently sent again elsewhere.
    app.router.redirect_slashes = False
    return SecurityHeaders(app)
