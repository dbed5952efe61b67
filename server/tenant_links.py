"""The tenants' page links in a running park: the secret, the generations, making and revoking.

Theory of operation
-------------------
A link (``protocols.http.tenant_links``) is stateless: the server keeps no list of links,
only the secret they are signed with and each tenant's *link generation*, which a link must
carry to be good. Revoking a tenant's links is one journal entry (kind ``tenant_links``,
owner ``tenant:<tenant>``, amount 0, the admin's reference): durable before the answer,
idempotent on the reference (a retry is "duplicate" and revokes nothing more), audited by
``server.operations``. A tenant's generation is the number of such entries, counted from the
journal at start (:func:`replay_generations`) and raised by one for each newly committed entry
as the journal delivers it (``Ledger.on_tenant_links_entry`` -> :meth:`TenantLinkDesk.
on_committed`), so the count live and the count after a restart are the same.

The secret is ``[tenant_page] secret`` when configured; otherwise 32 random bytes kept in
``<data_dir>/tenant-page.secret`` (hex, mode 0600), made at the first start and read at every
later one. Losing that file (a restore without it) refuses every link made before with
``bad_signature``: new links must be sent. Changing ``secret`` does the same on purpose.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Final, Literal

import attrs

from persistence.damage import Damage, read_entry
from persistence.entries import TENANT_LINK_KINDS, JournalEntry
from persistence.index import indexed_through, tail_entries
from persistence.journal import Journal
from persistence.keys import pack_u64, split_meter_key
from persistence.store import Store
from protocols.http.tenant_links import check_link, sign_link
from server.clock import ParkClock
from server.config import ParkConfig
from server.config.tenants import LINK_OWNER_PREFIX
from server.ledger import BadRequest

log = logging.getLogger(__name__)

SECRET_FILE: Final = "tenant-page.secret"
SECRET_BYTES: Final = 32
DAY_S: Final = 86_400
OWNER_PREFIX: Final = LINK_OWNER_PREFIX
MAX_DAYS: Final = 3660


class UnknownTenant(LookupError):
    code = "unknown_tenant"

    def __init__(self, tenant: object) -> None:
        super().__init__(f"no tenant {tenant!r} in this park")


def tenant_owner(tenant: str) -> str:
    """Whose entries the journal keeps a tenant's link revocations under."""
    return OWNER_PREFIX + tenant


@attrs.frozen
class TenantLink:
    """A link just made: its token, the page's URL and when it stops working."""

    tenant: str
    token: str
    generation: int
    expires_ms: int
    status: Literal["applied"] = "applied"

    def path(self) -> str:
        return f"/t/{self.token}"


@attrs.frozen
class LinksRevoked:
    """The answer to a revocation: the tenant's generation right after it (now, for a
    duplicate)."""

    reference: str
    tenant: str
    generation: int
    status: Literal["applied", "duplicate"]


def link_secret(config: ParkConfig) -> bytes:
    """``[tenant_page] secret``, or the data directory's own (made once, mode 0600)."""
    if config.tenant_page.secret:
        return config.tenant_page.secret.encode()
    return data_dir_secret(Path(config.server.data_dir))


def data_dir_secret(data_dir: Path) -> bytes:
    path = data_dir / SECRET_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        text = path.read_text(encoding="ascii").strip()
        try:
            secret = bytes.fromhex(text)
        except ValueError:
            secret = b""
        if len(secret) < SECRET_BYTES:
            raise ValueError(f"{path} is not a tenant page secret (64 hex digits); delete it "
                             "to make a new one (links sent before stop working)") from None
        return secret
    secret = secrets.token_bytes(SECRET_BYTES)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(secret.hex() + "\n")
        out.flush()
        os.fsync(out.fileno())
    log.info("made the tenant page's link secret %s (back it up with the data)", path)
    return secret


def replay_generations(store: Store, tenants: Iterable[str]) -> dict[str, int]:
    """Each tenant's link generation: how many revocations the journal holds for it.

    One read of the owners' index under ``tenant:`` (every tenant's entries sit together
    there) and one of the journal's tail, rather than a lookup per tenant: a park has
    thousands of tenants and almost none of them has ever had a link revoked."""
    counts = dict.fromkeys(tenants, 0)
    owners = {tenant_owner(tenant): tenant for tenant in counts}
    prefix = OWNER_PREFIX.encode()
    with store.read() as txn:
        indexed = indexed_through(txn, store)
        index = txn.cursor(db=store.meter_journal)
        seqs: list[int] = []
        if index.set_range(prefix):
            for key, _ in index.iternext():
                if not key.startswith(prefix):
                    break
                seq = split_meter_key(key)[1]
                if seq <= indexed:
                    seqs.append(seq)
        found: list[tuple[int, JournalEntry | Damage]] = [
            (seq, read_entry(seq, raw)) for seq in seqs
            if (raw := txn.get(pack_u64(seq), db=store.journal)) is not None]
        found += [(seq, entry) for seq, entry in tail_entries(txn, store, indexed)
                  if isinstance(entry, Damage) or entry.kind in TENANT_LINK_KINDS]
    for _seq, entry in found:
        if isinstance(entry, Damage):
            if entry.meter_id.startswith(OWNER_PREFIX):
                log.error("%s; a revocation of links may be missing: revoke %s's links "
                          "again", entry, entry.meter_id)
            continue
        tenant = owners.get(entry.meter_id)
        if entry.kind in TENANT_LINK_KINDS and tenant is not None:
            counts[tenant] += 1
    return counts


class TenantLinkDesk:
    """Makes, checks and revokes tenants' page links (see the module docstring)."""

    def __init__(self, config: ParkConfig, journal: Journal, clock: ParkClock, secret: bytes,
                 generations: dict[str, int]) -> None:
        self._tenants = frozenset(config.tenant_meters())
        self._owners = {tenant_owner(tenant): tenant for tenant in self._tenants}
        self._journal = journal
        self._clock = clock
        self._secret = secret
        self._link_days = config.tenant_page.link_days
        self.generations = {tenant: generations.get(tenant, 0) for tenant in self._tenants}

    def _known(self, tenant: object) -> str:
        if not isinstance(tenant, str) or tenant not in self._tenants:
            raise UnknownTenant(tenant)
        return tenant

    def make_link(self, tenant: object, days: object = None) -> TenantLink:
        """A new link to the tenant's page, good for ``days`` (``[tenant_page] link_days``)
        or until its links are revoked."""
        tenant = self._known(tenant)
        if days is None:
            days = self._link_days
        if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
            raise BadRequest(f'"days" must be a whole number from 1 to {MAX_DAYS}')
        expires_s = self._clock.wall_ms() // 1000 + days * DAY_S
        generation = self.generations[tenant]
        token = sign_link(self._secret, tenant, generation, expires_s)
        return TenantLink(tenant, token, generation, expires_s * 1000)

    def tenant_of(self, token: str) -> str:
        """The tenant a link is good for now (``LinkRefused`` with its code otherwise)."""
        return check_link(self._secret, token, self._clock.wall_ms() / 1000,
                          self.generations.get)

    async def revoke(self, tenant: object, by: str, reference: str) -> LinksRevoked:
        """Every link of the tenant made so far stops working (journaled first)."""
        tenant = self._known(tenant)
        if not isinstance(reference, str) or not reference.strip():
            raise BadRequest("a reference (id) is required so the revocation can be sent "
                             "again safely")
        detail = json.dumps({"by": by}, ensure_ascii=False)
        entry = JournalEntry("tenant_links", tenant_owner(tenant), 0, reference,
                             self._clock.wall_ms(), detail, mono_ms=self._clock.mono_ms())
        recorded = await self._journal.record(entry)
        # A new entry was counted by on_committed before record() returned.
        return LinksRevoked(reference, tenant, self.generations[tenant],
                            "duplicate" if recorded.duplicate else "applied")

    def on_committed(self, seq: int, entry: JournalEntry) -> None:
        tenant = self._owners.get(entry.meter_id)
        if tenant is None:  # a tenant no longer in the config: its links are refused anyway
            log.info("journal entry %d revokes links of %s, not a tenant now", seq,
                     entry.meter_id)
            return
        self.generations[tenant] += 1


def open_tenant_links(config: ParkConfig, store: Store, journal: Journal,
                      clock: ParkClock) -> TenantLinkDesk:
    """The desk at start: the secret, and the generations from the journal."""
    generations = replay_generations(store, config.tenant_meters())
    return TenantLinkDesk(config, journal, clock, link_secret(config), generations)
