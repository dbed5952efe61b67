"""Reading who the tenants are and how to reach them: ``[tenants.<id>]``, ``[notify]`` and
``[tenant_page]`` (docs/tenants.md).

A contact is written as a plain address (``emails = ["energy@acme.example"]``), which gets
every notice kind, or as a table that says which kinds it gets (``{ address = "...", notices =
["statement_ready"] }``). Each contact's channel must be configured in ``[notify]``: an e-mail
address with no ``[notify.smtp]`` would never be sent anything, so it is refused here, at its
line, rather than found out when a tenant's supply is cut.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from policies.notices import CHANNELS, DEFAULT_RETRY_MS, LANGUAGES, NOTICE_KINDS, QuietHours
from protocols.toml.values import show
from server.config.records import (
    MIN_PAYMENT_SECRET_BYTES,
    SMS_PROVIDERS,
    Contact,
    MeterSection,
    NotifySection,
    SmsSection,
    SmtpSection,
    TenantPageSection,
    TenantSection,
    WebhookSection,
    WechatSection,
)
from server.config.toolkit import Table
from server.config.values import parse_minute

MAX_AREA_M2: Final = 10**9
LINK_OWNER_PREFIX: Final = "tenant:"
"""``server.tenant_links.OWNER_PREFIX``."""
MAX_CONTACTS: Final = 32
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_PHONE = re.compile(r"\+[1-9]\d{6,14}")
"""E.164: a plus, a country code and at most 15 digits in all."""
_OPENID = re.compile(r"[A-Za-z0-9_-]{6,64}")
_CONTACT_KEYS: Final = {"emails": "email", "phones": "sms", "wechat": "wechat"}


def _check_address(channel: str, address: str) -> str | None:
    """Why ``address`` cannot be one of ``channel``'s, or None."""
    if channel == "email" and not _EMAIL.fullmatch(address):
        return f"not an e-mail address: {show(address)}"
    if channel == "sms" and not _PHONE.fullmatch(address):
        return (f"phone numbers are written in E.164, a plus and the country code, like "
                f'"+8613800000000"; got {show(address)}')
    if channel == "wechat" and not _OPENID.fullmatch(address):
        return f"not a WeChat openid: {show(address)}"
    if channel == "webhook":
        return _url_problem(address)
    return None


def _url_problem(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f'expected an http(s) URL like "https://hooks.example/wattkeeper", got {show(url)}'
    return None


class TenantsReader:
    """Reads the three sections against the park's meters (a tenant must have one)."""

    def __init__(self, meters: Sequence[MeterSection]) -> None:
        self.meters = meters
        self.tenant_ids = set(meter.tenant for meter in meters)

    # -- [notify] --------------------------------------------------------------------------

    def read_notify(self, t: Table, base_dir: Path) -> NotifySection:
        language = t.string("language", "en", choices=LANGUAGES)
        templates = t.string("templates", "")
        per_hour = t.integer("per_hour", 20, low=0, high=3600)
        burst = t.integer("burst", 5, low=1, high=1000)
        runout = t.number("runout_hours", 24.0, low=0.0)
        retry = self._retry(t)
        section = NotifySection(
            language=language or "en",
            templates_dir=(base_dir / templates) if templates else None,
            per_hour=per_hour, burst=burst, runout_hours=runout, retry_ms=retry,
            smtp=self._smtp(t.table("smtp")) if t.has("smtp") else None,
            webhook=self._webhook(t.table("webhook")) if t.has("webhook") else None,
            sms=self._sms(t.table("sms")) if t.has("sms") else None,
            wechat=self._wechat(t.table("wechat")) if t.has("wechat") else None,
        )
        if templates and "templates" not in t.failed and not (base_dir / templates).is_dir():
            t.fail("templates", f"no such directory: {base_dir / templates}")
        t.finish()
        return section

    def _retry(self, t: Table) -> tuple[int, ...]:
        if not t.has("retry"):
            return DEFAULT_RETRY_MS
        values = t.raw("retry")
        if not isinstance(values, list) or not values:
            t.fail("retry", f'expected an array of durations like ["10s", "1m", "5m"], got '
                            f"{show(values)}")
            return DEFAULT_RETRY_MS
        probe = Table(t.problems, t.path, {f"retry[{i}]": v for i, v in enumerate(values)})
        waits = tuple(probe.duration_ms(f"retry[{i}]") for i in range(len(values)))
        if probe.failed:
            t.failed.add("retry")
        return waits

    def _smtp(self, t: Table) -> SmtpSection:
        host = t.string("host")
        port = t.integer("port", 25, low=1, high=65535)
        sender = t.string("from")
        if "from" not in t.failed and not _EMAIL.fullmatch(sender):
            t.fail("from", f"not an e-mail address: {show(sender)}")
        username = t.string("username", "")
        password = t.string("password", "")
        if bool(username) != bool(password):
            t.fail("password" if username else "username",
                   "give username and password together (the relay's login)")
        starttls = t.boolean("starttls", bool(username))
        timeout = t.duration_s("timeout", "10s", low_s=0.1)
        t.finish()
        return SmtpSection(host, port, sender, username, password, starttls, timeout)

    def _secret(self, t: Table, what: str) -> str:
        secret = t.string("secret")
        if "secret" not in t.failed and len(secret.encode()) < MIN_PAYMENT_SECRET_BYTES:
            t.fail("secret", f"must be at least {MIN_PAYMENT_SECRET_BYTES} bytes (it signs "
                             f"{what}; this one has {len(secret.encode())}): generate one with "
                             "`python3 -c 'import secrets; print(secrets.token_hex(32))'`")
        return secret

    def _webhook(self, t: Table) -> WebhookSection:
        secret = self._secret(t, "every webhook notice")
        timeout = t.duration_s("timeout", "10s", low_s=0.1)
        t.finish()
        return WebhookSection(secret, timeout)

    def _templates(self, t: Table) -> dict[str, str]:
        """Provider template ids per notice kind; a kind without one is not sent that way."""
        table = t.table("templates", required=True)
        templates: dict[str, str] = {}
        for kind in list(table.data):
            if kind not in NOTICE_KINDS:
                table.fail(kind, f"not a notice kind; one of {', '.join(NOTICE_KINDS)}")
                continue
            value = table.string(kind)
            if value:
                templates[kind] = value
        table.finish()
        return templates

    def _sms(self, t: Table) -> SmsSection:
        provider = t.string("provider", "aliyun", choices=SMS_PROVIDERS)
        endpoint = t.string("endpoint", "https://dysmsapi.aliyuncs.com/")
        if "endpoint" not in t.failed and (problem := _url_problem(endpoint)):
            t.fail("endpoint", problem)
        key_id = t.string("access_key_id")
        key_secret = t.string("access_key_secret")
        sign_name = t.string("sign_name")
        region = t.string("region", "cn-hangzhou")
        templates = self._templates(t)
        timeout = t.duration_s("timeout", "10s", low_s=0.1)
        t.finish()
        return SmsSection(provider or "aliyun", endpoint, key_id, key_secret, sign_name,
                          templates, region, timeout)

    def _wechat(self, t: Table) -> WechatSection:
        endpoint = t.string("endpoint", "https://api.weixin.qq.com")
        if "endpoint" not in t.failed and (problem := _url_problem(endpoint)):
            t.fail("endpoint", problem)
        app_id = t.string("app_id")
        app_secret = t.string("app_secret")
        templates = self._templates(t)
        timeout = t.duration_s("timeout", "10s", low_s=0.1)
        data_keys = self._data_keys(t.table("fields"))
        t.finish()
        return WechatSection(endpoint, app_id, app_secret, templates, timeout, data_keys)

    def _data_keys(self, t: Table) -> dict[str, dict[str, str]]:
        """``[notify.wechat.fields.<kind>]``: template key = notice value name."""
        found: dict[str, dict[str, str]] = {}
        for kind in list(t.data):
            if kind not in NOTICE_KINDS:
                t.fail(kind, f"not a notice kind; one of {', '.join(NOTICE_KINDS)}")
                continue
            table = t.table(kind)
            found[kind] = {key: table.string(key) for key in list(table.data)}
            table.finish()
        return found

    # -- [tenant_page] ---------------------------------------------------------------------

    def read_tenant_page(self, t: Table) -> TenantPageSection:
        secret = self._secret(t, "the tenants' page links") if t.has("secret") else ""
        base_url = t.string("base_url", "")
        if base_url and "base_url" not in t.failed and (problem := _url_problem(base_url)):
            t.fail("base_url", problem)
        topup_url = t.string("topup_url", "")
        if topup_url and "topup_url" not in t.failed:
            problem = _url_problem(topup_url.replace("{", "").replace("}", ""))
            unknown = set(re.findall(r"\{([^}]*)\}", topup_url)) - {
                "tenant", "meter", "amount", "return"}
            if problem:
                t.fail("topup_url", problem)
            elif unknown:
                t.fail("topup_url", f"unknown placeholder {{{sorted(unknown)[0]}}}; use "
                                    "{tenant}, {meter}, {amount} and {return}")
        link_days = t.integer("link_days", 366, low=1, high=3660)
        t.finish()
        for index, meter in enumerate(self.meters):
            # The journal keeps a tenant's link revocations under "tenant:<id>" (as a quota
            # group's requests under "quota:<id>"): no meter may be called that.
            owner = meter.id.removeprefix(LINK_OWNER_PREFIX)
            if owner != meter.id and owner in self.tenant_ids:
                t.problems.add(("meters", index, "id"),
                               f"the journal keeps tenant {show(owner)}'s page links under "
                               f"{show(meter.id)}, which is this meter's id; rename the meter")
        return TenantPageSection(secret, base_url.rstrip("/"), topup_url, link_days)

    # -- [tenants.<id>] --------------------------------------------------------------------

    def read_tenants(self, t: Table, notify: NotifySection) -> dict[str, TenantSection]:
        tenants: dict[str, TenantSection] = {}
        for tenant_id in list(t.data):
            table = t.table(tenant_id)
            t.check_id(tenant_id, tenant_id, "a tenant id")
            name = table.string("name", tenant_id)
            area = table.integer("area_m2", 0, low=0, high=MAX_AREA_M2)
            language = table.string("language", notify.language, choices=LANGUAGES)
            sector = table.string("sector", "")
            quiet = self._quiet_hours(table)
            contacts = self._contacts(table, notify)
            table.finish()
            if tenant_id not in self.tenant_ids:
                t.fail(tenant_id, f"no meter has tenant {show(tenant_id)}")
                continue
            tenants[tenant_id] = TenantSection(
                tenant_id, name or tenant_id, area, language or notify.language, contacts,
                quiet, sector)
        return tenants

    def _quiet_hours(self, t: Table) -> QuietHours | None:
        value = t.raw("quiet_hours", None)
        if value is None:
            return None
        parts = value.split("-") if isinstance(value, str) else []
        try:
            if len(parts) != 2:
                raise ValueError
            start, end = (parse_minute(part.strip()) for part in parts)
        except ValueError:
            t.fail("quiet_hours", f'expected a span of local time like "22:00-07:00", got '
                                  f"{show(value)}")
            return None
        if start == end:
            t.fail("quiet_hours", "the span is empty: start and end are the same time")
            return None
        return QuietHours(start, end)

    def _contacts(self, t: Table, notify: NotifySection) -> tuple[Contact, ...]:
        contacts: list[Contact] = []
        for key, channel in _CONTACT_KEYS.items():
            values = t.raw(key, [])
            if not isinstance(values, list):
                t.fail(key, f'expected an array like ["{_EXAMPLES[channel]}"], got '
                            f"{show(values)}")
                continue
            for index, value in enumerate(values):
                contact = self._contact(t, key, f"{key}[{index}]", channel, value)
                if contact is not None:
                    contacts.append(contact)
        if t.has("webhook"):
            contact = self._contact(t, "webhook", "webhook", "webhook", t.raw("webhook"))
            if contact is not None:
                contacts.append(contact)
        if len(contacts) > MAX_CONTACTS:
            t.fail("emails", f"at most {MAX_CONTACTS} contacts per tenant")
        configured = set(notify.channels)
        for channel in sorted({contact.channel for contact in contacts} - configured):
            key = next(k for k, c in [*_CONTACT_KEYS.items(), ("webhook", "webhook")]
                       if c == channel)
            section = {"email": "smtp"}.get(channel, channel)
            t.fail(key, f"this tenant has {channel} contacts but [notify.{section}] is not "
                        "configured, so nothing could reach them")
        return tuple(contacts)

    def _contact(self, t: Table, key: str, label: str, channel: str,
                 value: object) -> Contact | None:
        notices: frozenset[str] = frozenset(NOTICE_KINDS)
        if isinstance(value, dict):
            entry = Table(t.problems, (*t.at(key), label), value)
            address = entry.string("address")
            if entry.has("notices"):
                notices = self._notice_kinds(entry)
            entry.finish()
            if entry.failed:
                t.failed.add(key)
                return None
        elif isinstance(value, str):
            address = value
        else:
            t.fail(key, f"{label}: expected an address or a table {{ address = ..., notices = "
                        f"[...] }}, got {show(value)}")
            return None
        problem = _check_address(channel, address)
        if problem:
            t.fail(key, f"{label}: {problem}")
            return None
        return Contact(channel, address, notices)

    def _notice_kinds(self, t: Table) -> frozenset[str]:
        values = t.raw("notices")
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            t.fail("notices", f'expected an array of notice kinds like ["low_balance"], got '
                              f"{show(values)}")
            return frozenset()
        unknown = [v for v in values if v not in NOTICE_KINDS]
        if unknown:
            t.fail("notices", f"not a notice kind: {show(unknown[0])}; one of "
                              f"{', '.join(NOTICE_KINDS)}")
        return frozenset(v for v in values if v in NOTICE_KINDS)


_EXAMPLES: Final = {"email": "energy@acme.example", "sms": "+8613800000000",
                    "wechat": "oABCD1234567890", "webhook": "https://hooks.example/"}
assert set(_EXAMPLES) == set(CHANNELS)
