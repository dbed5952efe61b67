"""Notice templates: per language, an e-mail file (subject and body per kind) and a text file
(the SMS text and the webhook's ``message`` per kind, and the words for a cut's reason).

The shipped files are ``protocols/notify/templates/<language>.email.toml`` and
``<language>.text.toml``. A park may override any of them with files of the same names in
``[notify] templates``; a key it leaves out keeps the shipped text. Placeholders are
``${name}`` (``string.Template``); every template is checked when the server starts against
the values its kind carries (:data:`FIELDS`), so a typo is a start-up error naming the file and
key, not a notice that fails at 3 a.m.
"""

from __future__ import annotations

import string
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import attrs

from policies.notices import LANGUAGES, NOTICE_KINDS

SHIPPED: Final = Path(__file__).with_name("templates")
COMMON_FIELDS: Final = frozenset({"tenant_name", "meter", "currency", "balance"})
FIELDS: Final[Mapping[str, frozenset[str]]] = {
    "low_balance": frozenset({"level", "level_number"}),
    "credit_running_out": frozenset({"hours"}),
    "supply_cut": frozenset({"reason", "reason_text", "action_text"}),
    "supply_restored": frozenset({"after"}),
    "topup_receipt": frozenset({"amount", "reference"}),
    "statement_ready": frozenset({"month", "link"}),
    "quota": frozenset({"group", "percent", "month"}),
}
"""The values each kind has besides :data:`COMMON_FIELDS` (``server.notices`` fills them)."""


class TemplateError(ValueError):
    """A template that cannot be rendered: the file, the key and what is wrong."""


@attrs.frozen
class Rendered:
    subject: str
    body: str


@attrs.frozen
class LanguageTemplates:
    email: Mapping[str, tuple[string.Template, string.Template]]
    text: Mapping[str, string.Template]
    reasons: Mapping[str, str]
    actions: Mapping[str, str]


def _read(path: Path) -> dict[str, object]:
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except OSError:
        return {}
    except tomllib.TOMLDecodeError as error:
        raise TemplateError(f"{path}: {error}") from None


def _template(path: Path, key: str, value: object, kind: str) -> string.Template:
    if not isinstance(value, str):
        raise TemplateError(f"{path}: {key}: expected a string")
    template = string.Template(value.strip())
    if not template.is_valid():
        raise TemplateError(f"{path}: {key}: a $ that is not ${{name}} (write $$ for a dollar)")
    allowed = COMMON_FIELDS | FIELDS.get(kind, frozenset())
    unknown = sorted(set(template.get_identifiers()) - allowed)
    if unknown:
        raise TemplateError(f"{path}: {key}: no value ${{{unknown[0]}}} in a {kind} notice; "
                            f"it has {', '.join(sorted(allowed))}")
    return template


def _words(path: Path, data: Mapping[str, object], table: str) -> dict[str, str]:
    value = data.get(table, {})
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise TemplateError(f"{path}: [{table}]: expected strings by cut reason")
    return dict(value)


def _language(language: str, override: Path | None) -> LanguageTemplates:
    email: dict[str, tuple[string.Template, string.Template]] = {}
    text: dict[str, string.Template] = {}
    reasons: dict[str, str] = {}
    actions: dict[str, str] = {}
    for directory in (SHIPPED, override):
        if directory is None:
            continue
        email_path = directory / f"{language}.email.toml"
        for kind, entry in _read(email_path).items():
            if kind not in NOTICE_KINDS or not isinstance(entry, dict):
                raise TemplateError(f"{email_path}: [{kind}]: not a notice kind")
            email[kind] = (_template(email_path, f"{kind}.subject", entry.get("subject"), kind),
                           _template(email_path, f"{kind}.body", entry.get("body"), kind))
        text_path = directory / f"{language}.text.toml"
        data = _read(text_path)
        for kind, value in data.items():
            if kind in ("reasons", "actions"):
                continue
            if kind not in NOTICE_KINDS:
                raise TemplateError(f"{text_path}: {kind}: not a notice kind")
            text[kind] = _template(text_path, kind, value, kind)
        reasons.update(_words(text_path, data, "reasons"))
        actions.update(_words(text_path, data, "actions"))
    missing = [kind for kind in NOTICE_KINDS if kind not in email or kind not in text]
    if missing:
        raise TemplateError(f"no {language} template for {missing[0]}")
    return LanguageTemplates(email, text, reasons, actions)


class Templates:
    """Every language's templates, loaded and checked at once (:func:`load_templates`)."""

    def __init__(self, languages: Mapping[str, LanguageTemplates]) -> None:
        self._languages = languages

    def values(self, language: str, kind: str, fields: Mapping[str, str]) -> dict[str, str]:
        """The notice's values plus the words its language says for them."""
        words = self._languages[language]
        values = dict(fields)
        reason = fields.get("reason", "")
        values.setdefault("reason_text", words.reasons.get(reason, reason))
        values.setdefault("action_text", words.actions.get(reason, ""))
        for name in COMMON_FIELDS | FIELDS.get(kind, frozenset()):
            values.setdefault(name, "")
        return values

    def email(self, language: str, kind: str, fields: Mapping[str, str]) -> Rendered:
        subject, body = self._languages[language].email[kind]
        values = self.values(language, kind, fields)
        return Rendered(subject.substitute(values), body.substitute(values) + "\n")

    def text(self, language: str, kind: str, fields: Mapping[str, str]) -> str:
        return self._languages[language].text[kind].substitute(
            self.values(language, kind, fields))


def load_templates(override: Path | None = None) -> Templates:
    """The shipped templates with ``override``'s on top; raises :class:`TemplateError`."""
    return Templates({language: _language(language, override) for language in LANGUAGES})
