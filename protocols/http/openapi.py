"""The HTTP API's description: one :class:`Operation` per route, and the OpenAPI 3.1 document
made from them (``GET /api/openapi.json``).

The app's API routes are built from :data:`OPERATIONS` (``protocols.http.app.build_app``), so
a route cannot exist without its entry here, and the tests check every answer the server gives
against the schema its entry documents (and fuzz the requests from them): the document is
what the code does, not a description kept beside it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal

import attrs

AMOUNT: Final = {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$",
                 "description": "a decimal string in currency units, at most the currency's "
                                "decimals (\"100.00\"); never a number"}
SIGNED_AMOUNT: Final = {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?$"}
TIMESTAMP: Final = {"type": "string", "description": "ISO 8601 UTC with milliseconds"}

ERROR: Final = {
    "type": "object", "required": ["error", "message"],
    "properties": {"error": {"type": "string", "description": "the contract's code"},
                   "message": {"type": "string", "description": "what to do, in words"}},
}
METER: Final = {
    "type": "object",
    "required": ["type", "meter", "tenant", "gateway", "balance", "power_w", "energy_kwh",
                 "relay", "relay_reason", "alarm", "online", "faulted", "ts"],
    "properties": {
        "type": {"const": "meter"}, "meter": {"type": "string"},
        "tenant": {"type": "string"}, "gateway": {"type": "string"},
        "balance": SIGNED_AMOUNT, "power_w": {"type": "number"},
        "energy_kwh": {"type": "number"}, "relay": {"enum": ["closed", "open"]},
        "relay_reason": {"type": ["string", "null"]}, "alarm": {"type": "string"},
        "online": {"type": "boolean"}, "faulted": {"type": "boolean"}, "ts": TIMESTAMP,
    },
}
TOP_UP: Final = {
    "type": "object", "required": ["id", "meter", "amount"],
    "properties": {
        "id": {"type": "string", "minLength": 1, "maxLength": 128,
               "description": "your reference: a repeat with the same id is applied once"},
        "meter": {"type": "string", "minLength": 1, "maxLength": 128},
        "amount": AMOUNT,
    },
}
TOP_UP_ANSWER: Final = {
    "type": "object", "required": ["id", "meter", "balance", "status"],
    "properties": {"id": {"type": "string"}, "meter": {"type": "string"},
                   "balance": SIGNED_AMOUNT,
                   "status": {"enum": ["applied", "duplicate", "pending"]}},
}
PAYMENT_NOTICE: Final = {
    "type": "object", "required": ["transaction_id", "amount"],
    "properties": {
        "transaction_id": {"type": "string", "minLength": 1, "maxLength": 64,
                           "description": "the provider's: a repeat is answered duplicate"},
        "meter": {"type": "string", "minLength": 1, "maxLength": 128},
        "tenant": {"type": "string", "minLength": 1, "maxLength": 128,
                   "description": "instead of meter: its main meter, or split"},
        "amount": AMOUNT,
        "channel": {"type": "string", "maxLength": 32, "description": "wechat, alipay, bank..."},
        "split": {"type": "object", "additionalProperties": AMOUNT, "maxProperties": 100,
                  "description": "meter -> amount, adding up to amount (with tenant)"},
    },
}
PAYMENT_ANSWER: Final = {
    "type": "object", "required": ["transaction_id", "status"],
    "properties": {
        "transaction_id": {"type": ["string", "null"]},
        "status": {"enum": ["applied", "duplicate", "refused"]},
        "meter": {"type": "string"}, "balance": SIGNED_AMOUNT,
        "parts": {"type": "array", "items": {
            "type": "object", "required": ["meter", "amount", "balance", "status"],
            "properties": {"meter": {"type": "string"}, "amount": AMOUNT,
                           "balance": SIGNED_AMOUNT, "status": {"type": "string"}}}},
        "error": {"type": "string"}, "message": {"type": "string"},
    },
}
TENANT: Final = {
    "type": "object", "required": ["tenant", "meters", "main_meter", "balance", "meters_cut",
                                   "power_w"],
    "properties": {"tenant": {"type": "string"},
                   "meters": {"type": "array", "items": {"type": "string"}},
                   "main_meter": {"type": "string",
                                  "description": "where a payment naming the tenant goes"},
                   "balance": SIGNED_AMOUNT, "meters_cut": {"type": "integer"},
                   "power_w": {"type": "number"}},
}
HISTORY: Final = {
    "type": "object", "required": ["meter", "from", "to", "interval_s", "intervals"],
    "properties": {
        "meter": {"type": "string"}, "from": {"type": "string"}, "to": {"type": "string"},
        "interval_s": {"type": "integer"},
        "intervals": {"type": "array", "items": {
            "type": "object", "required": ["start", "kwh", "cost", "band", "register_kwh",
                                           "balance"],
            "properties": {"start": TIMESTAMP, "kwh": {"type": "number"}, "cost": AMOUNT,
                           "band": {"type": "string"},
                           "register_kwh": {"type": ["number", "null"]},
                           "balance": {"anyOf": [SIGNED_AMOUNT, {"type": "null"}]}}}},
    },
}
REPORT: Final = {
    "type": "object", "required": ["report", "title", "from", "to", "columns", "rows"],
    "properties": {
        "report": {"type": "string"}, "title": {"type": "string"},
        "from": {"type": "string"}, "to": {"type": "string"},
        "columns": {"type": "array", "items": {"type": "string"}},
        "rows": {"type": "array", "items": {"type": "object"}},
        "totals": {"type": "object"}, "notes": {"type": "array", "items": {"type": "string"}},
    },
}
AUDIT_PAGE: Final = {
    "type": "object", "required": ["entries", "next"],
    "properties": {
        "entries": {"type": "array", "items": {
            "type": "object",
            "required": ["ts", "user", "role", "channel", "address", "command", "meter_id",
                         "target", "reference", "detail", "result", "code", "message"],
            "properties": {name: {"type": "string"} for name in (
                "ts", "user", "role", "channel", "address", "command", "meter_id", "target",
                "reference", "detail", "result", "code", "message")}}},
        "next": {"type": ["string", "null"], "description": "pass as before= for the next page"},
    },
}

QUOTA_AMOUNT: Final = {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$",
                       "description": "in the group's unit: kWh (\"500\", three decimals at "
                                      "most) or money (\"300.00\")"}
QUOTA_GROUP: Final = {
    "type": "object",
    "required": ["id", "name", "unit", "month", "meters", "budget", "extension", "limit", "used",
                 "percent", "alarm_percents", "blocked", "requests"],
    "properties": {
        "id": {"type": "string"}, "name": {"type": "string"},
        "unit": {"enum": ["kwh", "money"]},
        "month": {"type": "string", "description": "the park's local month, 2026-11"},
        "meters": {"type": "array", "items": {"type": "string"}},
        "budget": QUOTA_AMOUNT, "extension": QUOTA_AMOUNT, "limit": QUOTA_AMOUNT,
        "used": QUOTA_AMOUNT, "percent": {"type": "number"},
        "alarm_percents": {"type": "array", "items": {"type": "integer"}},
        "blocked": {"type": "boolean", "description": "the meters are held open (quota)"},
        "requests": {"type": "array", "items": {
            "type": "object",
            "required": ["id", "amount", "reason", "requested_by", "ts_ms", "status",
                         "decided_by", "note"],
            "properties": {"id": {"type": "string"}, "amount": QUOTA_AMOUNT,
                           "reason": {"type": "string"}, "requested_by": {"type": "string"},
                           "ts_ms": {"type": "integer"},
                           "status": {"enum": ["pending", "approved", "rejected", "expired"]},
                           "decided_by": {"type": "string"}, "note": {"type": "string"}}}},
    },
}
QUOTA_ANSWER: Final = {
    "type": "object", "required": ["id", "status", "group"],
    "properties": {"id": {"type": "string"}, "status": {"enum": ["applied", "duplicate"]},
                   "group": QUOTA_GROUP},
}
REFERENCE: Final = {"type": "string", "minLength": 1, "maxLength": 128,
                    "description": "your reference: a repeat with the same id is applied once"}
QUOTA_REQUEST: Final = {
    "type": "object", "required": ["id", "amount", "reason"],
    "properties": {"id": REFERENCE, "amount": QUOTA_AMOUNT,
                   "reason": {"type": "string", "minLength": 1, "maxLength": 200}},
}
QUOTA_DECISION: Final = {
    "type": "object", "required": ["id", "request", "decision"],
    "properties": {"id": REFERENCE, "request": {"type": "string", "minLength": 1,
                                                "description": "the request's id"},
                   "decision": {"enum": ["approve", "reject"]},
                   "note": {"type": "string", "maxLength": 200}},
}
APPORTION: Final = {
    "type": "object", "required": ["from", "to"],
    "properties": {"from": {"type": "string", "description": "first local day, 2026-11-01"},
                   "to": {"type": "string", "description": "the day after the last"}},
}
APPORTIONED: Final = {
    "type": "object", "required": ["period", "status", "postings"],
    "properties": {
        "period": {"type": "string", "description": "2026-11-01..2026-12-01"},
        "status": {"enum": ["applied", "duplicate"],
                   "description": "duplicate: every share was posted before"},
        "postings": {"type": "array", "items": {
            "type": "object",
            "required": ["pool", "tenant", "meter", "amount", "kwh", "reference", "status"],
            "properties": {"pool": {"type": "string"}, "tenant": {"type": "string"},
                           "meter": {"type": "string"}, "amount": AMOUNT,
                           "kwh": {"type": "string"}, "reference": {"type": "string"},
                           "status": {"enum": ["applied", "duplicate", "pending",
                                               "conflict"]},
                           "balance": SIGNED_AMOUNT, "message": {"type": "string"}}}},
    },
}

OUTPUT: Final = {
    "type": "object", "required": ["id", "date", "count"],
    "properties": {"id": REFERENCE,
                   "date": {"type": "string", "description": "the local day, 2026-11-10"},
                   "count": {"type": "integer", "minimum": 0, "maximum": 10**12,
                             "description": "units made that day (replaces an earlier count)"}},
}
OUTPUT_ANSWER: Final = {
    "type": "object", "required": ["id", "line", "date", "count", "unit", "status"],
    "properties": {"id": {"type": "string"}, "line": {"type": "string"},
                   "date": {"type": "string"}, "count": {"type": "integer"},
                   "unit": {"type": "string"}, "status": {"enum": ["applied", "duplicate"]}},
}

TENANT_LINK_REQUEST: Final = {
    "type": "object",
    "properties": {"days": {"type": "integer", "minimum": 1, "maximum": 3660,
                            "description": "how long the link works (default: [tenant_page] "
                                           "link_days)"}},
    "description": "may be left out (an empty body)",
}
TENANT_LINK: Final = {
    "type": "object", "required": ["tenant", "url", "path", "generation", "expires"],
    "properties": {"tenant": {"type": "string"},
                   "url": {"type": "string", "description": "[tenant_page] base_url (else the "
                                                            "host asked) + path: send this"},
                   "path": {"type": "string", "description": "/t/<token>"},
                   "generation": {"type": "integer",
                                  "description": "the tenant's link generation it carries"},
                   "expires": TIMESTAMP},
}
REVOKE_LINKS: Final = {"type": "object", "required": ["id"], "properties": {"id": REFERENCE}}
LINKS_REVOKED: Final = {
    "type": "object", "required": ["id", "tenant", "generation", "status"],
    "properties": {"id": {"type": "string"}, "tenant": {"type": "string"},
                   "generation": {"type": "integer",
                                  "description": "links of a lower one are refused now"},
                   "status": {"enum": ["applied", "duplicate"]}},
}
LINK_REFUSED: Final = {
    "type": "object", "required": ["error", "message"],
    "properties": {"error": {"enum": ["revoked", "expired", "bad_signature"]},
                   "message": {"type": "string"}},
}
SUMMARY_DAY: Final = {
    "type": "object", "required": ["date", "bands", "cost"],
    "properties": {"date": {"type": "string", "description": "a local day, 2026-11-22"},
                   "bands": {"type": "object",
                             "additionalProperties": {"type": "string",
                                                      "pattern": r"^-?[0-9]+\.[0-9]{3}$"},
                             "description": "tariff band -> kWh (m3 for water and gas)"},
                   "cost": SIGNED_AMOUNT},
}
TENANT_SUMMARY: Final = {
    "type": "object",
    "required": ["tenant", "name", "language", "currency", "decimals", "today", "days",
                 "topup", "meters", "topups", "statements"],
    "properties": {
        "tenant": {"type": "string"}, "name": {"type": "string"},
        "language": {"enum": ["en", "zh-CN"]}, "currency": {"type": "string"},
        "decimals": {"type": "integer"}, "today": {"type": "string"},
        "days": {"type": "array", "items": {"type": "string"},
                 "description": "the 30 local days of the charts, oldest first"},
        "topup": {"type": "boolean", "description": "the page has Top up buttons"},
        "meters": {"type": "array", "items": {
            "type": "object",
            "required": ["meter", "kind", "unit", "balance", "relay", "relay_reason", "online",
                         "spend_7d", "days_left", "consumption"],
            "properties": {
                "meter": {"type": "string"},
                "kind": {"enum": ["electricity", "water", "gas"]},
                "unit": {"enum": ["kWh", "m3"]}, "balance": SIGNED_AMOUNT,
                "relay": {"enum": ["closed", "open"]},
                "relay_reason": {"type": ["string", "null"]}, "online": {"type": "boolean"},
                "spend_7d": SIGNED_AMOUNT,
                "days_left": {"type": ["number", "null"],
                              "description": "balance / (spend_7d / 7), a tenth of a day "
                                             "down; null: nothing spent in 7 days"},
                "consumption": {"type": "array", "items": SUMMARY_DAY}}}},
        "topups": {"type": "array", "items": {
            "type": "object", "required": ["ts", "date", "meter", "amount"],
            "properties": {"ts": TIMESTAMP, "date": {"type": "string"},
                           "meter": {"type": "string"}, "amount": SIGNED_AMOUNT}}},
        "statements": {"type": "array", "items": {
            "type": "object", "required": ["month", "url"],
            "properties": {"month": {"type": "string"}, "url": {"type": "string"}}}},
        "insights": {"type": "array",
                     "description": "this month's energy insights (docs/insights.md): a figure "
                                    "and the similar tenants' median",
                     "items": {"type": "object", "required": ["key", "value", "peers"],
                               "properties": {"key": {"type": "string"},
                                              "value": {"type": "string"},
                                              "peers": {"type": "string"}}}},
    },
}

COUNT: Final = {"type": "integer", "minimum": 0}
NOTICES: Final = {
    "type": "object",
    "required": ["raised", "written", "waiting_for_storage", "delivery_running", "delivered",
                 "retried", "pending", "dead", "dead_letters"],
    "properties": {
        "raised": {**COUNT, "description": "notices raised since the server started"},
        "written": {**COUNT, "description": "of those, written to the outbox"},
        "waiting_for_storage": {**COUNT, "description": "raised, not yet written (the journal "
                                                        "cannot write)"},
        "delivery_running": {"type": "boolean", "description": "the delivery process is up"},
        "delivered": {**COUNT, "description": "deliveries sent by the delivery process since "
                                              "it started"},
        "retried": {**COUNT, "description": "attempts that failed and will be tried again"},
        "pending": {**COUNT, "description": "deliveries waiting (for their time or a retry)"},
        "dead": {**COUNT, "description": "dead letters, all of them"},
        "dead_letters": {"type": "array", "maxItems": 200,
                         "description": "the first 200 dead letters, by notice id",
                         "items": {
            "type": "object",
            "required": ["notice", "channel", "address", "attempts", "error", "since"],
            "properties": {
                "notice": {"type": "string", "description": "the notice id (what a webhook "
                                                            "receiver sees as id)"},
                "channel": {"type": "string", "description": "email, webhook, sms or wechat"},
                "address": {"type": "string", "description": "mailbox, URL, phone or openid"},
                "attempts": COUNT,
                "error": {"type": "string", "description": "the provider's last answer"},
                "since": {"type": "string", "description": "when the notice was first tried, "
                                                           "ISO 8601 UTC"}}}},
    },
}
NOTICE_RETRY: Final = {
    "type": "object", "required": ["id", "notice"],
    "properties": {"id": {"type": "string", "minLength": 1, "maxLength": 128,
                          "description": "your reference (audited)"},
                   "notice": {"type": "string", "maxLength": 1024,
                              "description": "a dead letter's notice id, or \"\" for every "
                                             "dead letter"}},
}
NOTICE_RETRIED: Final = {
    "type": "object", "required": ["id", "notice", "status"],
    "properties": {"id": {"type": "string"}, "notice": {"type": "string"},
                   "status": {"const": "accepted",
                              "description": "the delivery process was told: the notice's "
                                             "dead deliveries are pending again, attempts "
                                             "reset"}},
}

Auth = Literal["user", "payment", "none"]


@attrs.frozen
class Operation:
    method: str
    path: str  # OpenAPI's form: /api/meters/{meter_id}
    name: str  # the Api method that answers it
    summary: str
    auth: Auth
    responses: Mapping[int, tuple[str, Mapping[str, Any]]]
    request: Mapping[str, Any] | None = None
    parameters: tuple[Mapping[str, Any], ...] = ()
    description: str = ""
    csv: bool = False  # 200 may also be text/csv (and a statement text/html)


def _in_path(name: str) -> Mapping[str, Any]:
    """A path parameter that is an id (``/api/quotas/{group}/...``)."""
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _errors(*codes: int) -> dict[int, tuple[str, Mapping[str, Any]]]:
    words = {400: "bad input (the message says which)", 401: "not authenticated",
             403: "the user's role may not", 404: "no such meter or tenant",
             409: "the id was used for something else", 413: "body over 16 KiB",
             503: "storage down or overloaded: nothing was done, send it again"}
    return {code: (words[code], ERROR) for code in codes}


OPERATIONS: Final[tuple[Operation, ...]] = (
    Operation("get", "/api/meters", "meters", "Every meter's current state", "user",
              {200: ("the meters", {"type": "object", "required": ["meters"],
                                    "properties": {"meters": {"type": "array",
                                                              "items": METER}}}),
               **_errors(401)},
              parameters=(
                  {"name": "tenant", "in": "query", "schema": {"type": "string"},
                   "description": "only this tenant's meters"},
                  {"name": "gateway", "in": "query", "schema": {"type": "string"},
                   "description": "only this gateway's meters"})),
    Operation("get", "/api/meters/{meter_id}", "meter", "One meter's current state", "user",
              {200: ("the meter", METER), **_errors(401, 404)},
              parameters=({"name": "meter_id", "in": "path", "required": True,
                           "schema": {"type": "string"}},)),
    Operation("get", "/api/meters/{meter_id}/history", "meter_history",
              "A meter's interval history (energy, cost, band; register and balance at each "
              "interval's end)", "user",
              {200: ("the intervals, oldest first", HISTORY), **_errors(400, 401, 404)},
              parameters=(
                  {"name": "meter_id", "in": "path", "required": True,
                   "schema": {"type": "string"}},
                  {"name": "from", "in": "query", "schema": {"type": "string"},
                   "description": "first local day (default: this month's 1st)"},
                  {"name": "to", "in": "query", "schema": {"type": "string"},
                   "description": "the day after the last (default: tomorrow)"})),
    Operation("get", "/api/tenants", "tenants", "Every tenant: its meters and balance", "user",
              {200: ("the tenants", {"type": "object", "required": ["tenants"],
                                     "properties": {"tenants": {"type": "array",
                                                                "items": TENANT}}}),
               **_errors(401)}),
    Operation("get", "/api/tenants/{tenant}", "tenant", "One tenant", "user",
              {200: ("the tenant", TENANT), **_errors(401, 404)},
              parameters=({"name": "tenant", "in": "path", "required": True,
                           "schema": {"type": "string"}},)),
    Operation("post", "/api/topups", "top_up", "Top up a meter (operators)", "user",
              {200: ("done: durable in the journal", TOP_UP_ANSWER),
               **_errors(400, 401, 403, 404, 409, 413, 503)},
              request=TOP_UP,
              description="Journaled (fsync) before the answer; idempotent on id."),
    Operation("post", "/api/payments/notify", "payment_notice",
              "A payment provider's notification, relayed by a payment integration",
              "payment",
              {200: ("applied, or a duplicate of one already applied", PAYMENT_ANSWER),
               **{code: (words, PAYMENT_ANSWER) for code, (words, _) in _errors(
                   400, 401, 404, 409, 413, 503).items()}},
              request=PAYMENT_NOTICE,
              description="Headers X-Api-Key, X-Timestamp (unix seconds, within 300 s of "
                          "the server's clock) and X-Signature (hex HMAC-SHA256 with the "
                          "key's secret over timestamp + \".\" + the raw body). Idempotent "
                          "on transaction_id; a forged, stale or conflicting notification "
                          "moves no money."),
    Operation("get", "/api/reports/{kind}", "report",
              "A report (operators): the same as `wattkeeper report KIND`", "user",
              {200: ("the report (format=json; format=csv, the default, is text/csv with the "
                     "same columns)", REPORT),
               **_errors(400, 401, 403, 404), 422: ("reconciliation: the books do not balance "
                                                     "(the message names the meters)", ERROR)},
              parameters=(
                  {"name": "kind", "in": "path", "required": True,
                   "schema": {"enum": ["reconciliation", "topups", "consumption", "arrears",
                                       "statement", "whatif", "apportionment",
                                       "blackhole", "output", "insights"]}},
                  {"name": "from", "in": "query", "schema": {"type": "string"},
                   "description": "first local day, 2026-11-01 (default: this month's 1st)"},
                  {"name": "to", "in": "query", "schema": {"type": "string"},
                   "description": "the day after the last (default: tomorrow)"},
                  {"name": "format", "in": "query",
                   "schema": {"enum": ["csv", "json", "html"]},
                   "description": "html: a statement as a printable page"},
                  {"name": "tenant", "in": "query", "schema": {"type": "string"},
                   "description": "statement: whose"},
                  {"name": "tariff", "in": "query", "schema": {"type": "string"},
                   "description": "whatif: the configured tariff to price with"},
                  {"name": "by", "in": "query",
                   "schema": {"enum": ["meter", "tenant", "gateway", "day", "hour"]},
                   "description": "consumption: meter, tenant, gateway or day; arrears: meter "
                                  "(as of now) or day; blackhole: hour (the default) or day"},
                  {"name": "meter_kind", "in": "query",
                   "schema": {"enum": ["electricity", "water", "gas"]},
                   "description": "consumption, whatif: which meters (default electricity, "
                                  "in kWh; water and gas in m3)"},
                  {"name": "shift", "in": "query", "schema": {"type": "string"},
                   "description": "insights: the percentage of peak energy moved to the "
                                  "valley for the saving, 0 to 100 (default 10)"}),
              csv=True),
    Operation("get", "/api/quotas", "quotas", "Every quota group this month", "user",
              {200: ("the groups", {"type": "object", "required": ["groups"],
                                    "properties": {"groups": {"type": "array",
                                                              "items": QUOTA_GROUP}}}),
               **_errors(401)}),
    Operation("post", "/api/quotas/{group}/requests", "quota_request",
              "Ask for extra budget for a group this month (operators)", "user",
              {200: ("the group with the request", QUOTA_ANSWER),
               **_errors(400, 401, 403, 409, 413, 503)},
              request=QUOTA_REQUEST,
              parameters=(_in_path("group"),),
              description="Journaled and audited; idempotent on id. An admin decides it."),
    Operation("post", "/api/quotas/{group}/decisions", "quota_decision",
              "Approve or reject a pending request (admins)", "user",
              {200: ("the group after the decision", QUOTA_ANSWER),
               **_errors(400, 401, 403, 409, 413, 503)},
              request=QUOTA_DECISION,
              parameters=(_in_path("group"),),
              description="An approval raises this month's limit by the amount asked at once; "
                          "meters held open by the quota close again."),
    Operation("post", "/api/lines/{line}/output", "output",
              "A production line's output on a day (operators)", "user",
              {200: ("the count as journaled", OUTPUT_ANSWER),
               **_errors(400, 401, 403, 409, 413, 503)},
              request=OUTPUT,
              parameters=(_in_path("line"),),
              description="Journaled and audited; idempotent on id; the energy-per-unit report "
                          "(GET /api/reports/output) takes the latest count of each day."),
    Operation("post", "/api/apportionment", "apportion",
              "Post a period's shares of losses and common areas (admins)", "user",
              {200: ("each share and its status", APPORTIONED),
               **_errors(400, 401, 403, 413, 503)},
              request=APPORTION,
              description="Each share is a journaled adjustment of kind apportionment on the "
                          "tenant's main meter, referenced apportion/<pool>/<from>..<to>/"
                          "<tenant>: posting a period again moves nothing. Preview with GET "
                          "/api/reports/apportionment."),
    Operation("post", "/api/tenants/{tenant}/links", "tenant_link",
              "A link to a tenant's self-service page (admins)", "user",
              {200: ("the link", TENANT_LINK), **_errors(400, 401, 403, 404, 413)},
              request=TENANT_LINK_REQUEST, parameters=(_in_path("tenant"),),
              description="Signed, nothing stored: it works until it expires or the "
                          "tenant's links are revoked. Audited (without the token)."),
    Operation("post", "/api/tenants/{tenant}/links/revoke", "revoke_tenant_links",
              "Withdraw every link to a tenant's page made so far (admins)", "user",
              {200: ("the tenant's new link generation", LINKS_REVOKED),
               **_errors(400, 401, 403, 404, 409, 413, 503)},
              request=REVOKE_LINKS, parameters=(_in_path("tenant"),),
              description="Journaled before the answer (it survives a restart), idempotent "
                          "on id, audited. Links made afterwards work."),
    Operation("get", "/t/{token}/api/summary", "tenant_summary",
              "A tenant's page figures: balances, days left, 30 days by band, top-ups, "
              "statements", "none",
              {200: ("the figures", TENANT_SUMMARY),
               401: ("the link is refused", LINK_REFUSED),
               404: ("this server has no tenants' page", ERROR),
               503: ("storage cannot be read now", ERROR)},
              parameters=(_in_path("token"),),
              description="The link's token is the credential (docs/tenant-page.md)."),
    Operation("get", "/api/notices", "notices",
              "Tenant notices: the figures and the dead letters (admins)", "user",
              {200: ("the figures and up to 200 dead letters", NOTICES),
               **_errors(400, 401, 403)},
              description="Read from the delivery process's store, so the dead letters show "
                          "while it is down. 400: the server sends no tenant notices (no "
                          "tenant has a contact)."),
    Operation("post", "/api/notices/retry", "notice_retry",
              "Try a dead letter again, or every dead letter (admins)", "user",
              {200: ("the delivery process was told", NOTICE_RETRIED),
               **_errors(400, 401, 403, 413, 503)},
              request=NOTICE_RETRY,
              description="Its dead deliveries go back to pending with their attempts reset, "
                          "and are sent on the [notify] retry schedule again (a notice keeps "
                          "its id). Audited. 503: the delivery process is down (it is being "
                          "restarted); nothing was done."),
    Operation("get", "/api/audit", "audit", "The audit log, newest first (admins)", "user",
              {200: ("a page", AUDIT_PAGE), **_errors(400, 401, 403)},
              parameters=(
                  {"name": "before", "in": "query", "schema": {"type": "string"},
                   "description": "the previous page's next"},
                  {"name": "limit", "in": "query",
                   "schema": {"type": "integer", "minimum": 1, "maximum": 200}})),
)

_SECURITY: Final[dict[str, list[dict[str, list[str]]]]] = {
    "user": [{"basic": []}],
    "payment": [{"paymentKey": [], "timestamp": [], "signature": []}],
    "none": [],
}


def openapi_document(version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of :data:`OPERATIONS`."""
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        entry: dict[str, Any] = {
            "operationId": op.name, "summary": op.summary, "security": _SECURITY[op.auth],
            "responses": {str(code): {"description": words, "content": {
                "application/json": {"schema": schema}}}
                for code, (words, schema) in op.responses.items()},
        }
        if op.csv:
            for media in ("text/csv", "text/html"):
                entry["responses"]["200"]["content"][media] = {"schema": {"type": "string"}}
        if op.description:
            entry["description"] = op.description
        if op.parameters:
            entry["parameters"] = list(op.parameters)
        if op.request is not None:
            entry["requestBody"] = {"required": True, "content": {
                "application/json": {"schema": op.request}}}
        paths.setdefault(op.path, {})[op.method] = entry
    return {
        "openapi": "3.1.0",
        "info": {"title": "wattkeeper", "version": version,
                 "description": "The park's REST API (docs/http-api.md). Money is a decimal "
                                "string in currency units, never a number."},
        "paths": paths,
        "components": {"securitySchemes": {
            "basic": {"type": "http", "scheme": "basic",
                      "description": "a [[users]] name and password"},
            "paymentKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
            "timestamp": {"type": "apiKey", "in": "header", "name": "X-Timestamp"},
            "signature": {"type": "apiKey", "in": "header", "name": "X-Signature"},
        }},
    }


def starlette_path(path: str) -> str:
    """``/api/meters/{meter_id}`` -> starlette's ``/api/meters/{meter_id:str}``."""
    return path.replace("}", ":str}")
