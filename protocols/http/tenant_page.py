"""The tenants' self-service page on the console's HTTP server: ``/t/<token>...``.

Routes (docs/tenant-page.md, docs/http-api.md):

* ``GET /t/{token}``: the page (``static/tenant.html``, its script and styles from
  ``/static``), or a 401 page saying why the link is refused;
* ``GET /t/{token}/api/summary``: the page's figures as JSON (``server.tenant_page``);
* ``GET /t/{token}/statement?month=2026-11``: a month's statement, the printable page;
* ``GET /t/{token}/topup?meter=&amount=``: a ``303`` to the payment provider's page
  (``[tenant_page] topup_url`` with its placeholders filled). The money then arrives as the
  provider's notification through ``POST /api/payments/notify``: none moves here.

The token is the only credential (``protocols.http.tenant_links``): a refused one is
``401 {"error": "revoked" | "expired" | "bad_signature", "message"}`` (a page for the HTML
routes), with a ``WWW-Authenticate`` scheme that makes no browser ask for a password.
"""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final, Protocol

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from protocols.http.tenant_links import LinkRefused

log = logging.getLogger(__name__)

STATIC_DIR: Final = Path(__file__).parent / "static"
LANGUAGES: Final = ("en", "zh-CN")
CHALLENGE: Final = {"WWW-Authenticate": 'TenantLink realm="wattkeeper"'}
NO_STORE: Final = {"Cache-Control": "no-store"}
STATEMENT_CSP: Final = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
                        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
"""The statement is the reports' printable page, whose styles are inline; it has no script."""


def _strings(language: str) -> dict[str, str]:
    with (STATIC_DIR / "i18n" / f"tenant-{language}.json").open(encoding="utf-8") as source:
        strings: dict[str, str] = json.load(source)
        return strings


STRINGS: Final = {language: _strings(language) for language in LANGUAGES}


class TenantPageBackend(Protocol):
    """``server.tenant_page.TenantPage``."""

    @property
    def base_url(self) -> str:
        """``[tenant_page] base_url`` ("" when not set: the request's own host)."""
        ...

    def tenant_of(self, token: str) -> str:
        """The tenant a link is good for now, else ``LinkRefused``."""
        ...

    def language_of(self, tenant: str) -> str: ...

    async def summary(self, tenant: str, page_path: str) -> dict[str, Any]: ...

    async def statement(self, tenant: str, month: str) -> str: ...

    def topup_location(self, tenant: str, meter: str, amount: str, page_url: str) -> str:
        """Where the Top up button goes; errors carry ``code`` bad_request."""
        ...


def refusal_json(error: LinkRefused) -> JSONResponse:
    return JSONResponse({"error": error.code, "message": str(error)}, status_code=401,
                        headers={**CHALLENGE, **NO_STORE})


def _page(title: str, paragraphs: list[tuple[str, str]], status: int, marker: str,
          link: str = "") -> HTMLResponse:
    """A small page in both languages (the tenant's is not known before the link is)."""
    e = html.escape
    body = "".join(f'<p lang="{lang}">{e(text)}</p>' for lang, text in paragraphs)
    back = f'<p><a href="{e(link)}">{e(STRINGS["en"]["error.back"])} / ' \
           f'{e(STRINGS["zh-CN"]["error.back"])}</a></p>' if link else ""
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)}</title>
<link rel="stylesheet" href="/static/tenant.css"><link rel="icon" href="data:,">
</head><body class="tenant">
<main class="notice" id="refused" data-code="{e(marker)}">
<h1>{e(title)}</h1>
{body}{back}
</main></body></html>
"""
    return HTMLResponse(page, status_code=status, headers=NO_STORE)


def refusal_page(error: LinkRefused) -> HTMLResponse:
    key = f"refused.{error.code}"
    title = f'{STRINGS["en"]["refused.title"]} · {STRINGS["zh-CN"]["refused.title"]}'
    response = _page(title, [(lang, STRINGS[lang][key]) for lang in LANGUAGES], 401,
                     error.code)
    response.headers.update(CHALLENGE)
    return response


def _bad_request_page(message: str, link: str) -> HTMLResponse:
    lines = [(lang, STRINGS[lang]["error.bad_request"].replace("{message}", message))
             for lang in LANGUAGES]
    return _page(STRINGS["en"]["error.bad_request"].replace("{message}", "").rstrip(": "),
                 lines, 400, "bad_request", link)


Handler = Callable[[Request], Awaitable[Response]]


class TenantRoutes:
    """The handlers, around one :class:`TenantPageBackend`."""

    def __init__(self, backend: TenantPageBackend) -> None:
        self.backend = backend

    def _tenant(self, request: Request) -> tuple[str, str]:
        token = request.path_params["token"]
        return token, self.backend.tenant_of(token)

    def _page_url(self, request: Request, token: str) -> str:
        base = self.backend.base_url or str(request.base_url).rstrip("/")
        return f"{base}/t/{token}"

    async def page(self, request: Request) -> Response:
        try:
            self._tenant(request)
        except LinkRefused as error:
            return refusal_page(error)
        return FileResponse(STATIC_DIR / "tenant.html", headers=NO_STORE)

    async def summary(self, request: Request) -> Response:
        """(Routed with the API, from its OpenAPI entry: ``protocols.http.app``.)"""
        try:
            token, tenant = self._tenant(request)
        except LinkRefused as error:
            return refusal_json(error)
        body = await self.backend.summary(tenant, f"/t/{token}")
        return JSONResponse(body, headers=NO_STORE)

    async def statement(self, request: Request) -> Response:
        try:
            token, tenant = self._tenant(request)
        except LinkRefused as error:
            return refusal_page(error)
        try:
            page = await self.backend.statement(tenant, request.query_params.get("month", ""))
        except Exception as error:
            if getattr(error, "code", None) != "bad_request":
                raise
            return _bad_request_page(str(error), f"/t/{token}")
        return HTMLResponse(page, headers={**NO_STORE,
                                           "Content-Security-Policy": STATEMENT_CSP})

    async def topup(self, request: Request) -> Response:
        try:
            token, tenant = self._tenant(request)
        except LinkRefused as error:
            return refusal_page(error)
        query = request.query_params
        try:
            location = self.backend.topup_location(tenant, query.get("meter", ""),
                                                   query.get("amount", ""),
                                                   self._page_url(request, token))
        except Exception as error:
            if getattr(error, "code", None) != "bad_request":
                raise
            return _bad_request_page(str(error), f"/t/{token}")
        log.info("tenant page: %s goes to the payment page for %s", tenant,
                 query.get("meter", ""))
        return RedirectResponse(location, status_code=303, headers=NO_STORE)


def tenant_routes(routes: TenantRoutes | None) -> list[Route]:
    """The page's HTML routes (none when the server has no tenant page); the summary is an
    API route (``GET /t/{token}/api/summary`` in ``protocols.http.openapi``)."""
    if routes is None:
        return []
    return [
        Route("/t/{token:str}", routes.page, methods=["GET", "HEAD"]),
        Route("/t/{token:str}/statement", routes.statement, methods=["GET"]),
        Route("/t/{token:str}/topup", routes.topup, methods=["GET"]),
    ]
