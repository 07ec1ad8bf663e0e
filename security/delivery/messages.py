"""Plain-text messages to end users: one template per kind, for e-mail and for SMS.

Templates live in ``security/delivery/templates/{email,sms}/<kind>.txt`` and are rendered with
Jinja2 (``StrictUndefined``: a missing field is an error, never a blank in a security mail; no HTML
autoescaping because the output is plain text). An e-mail template starts with a ``Subject:`` line.

Each kind declares which of its fields are secrets (one-time codes, links carrying a token). The
rendered message carries those values so a log sink can redact them without knowing the template.

Pure module: no Flask, no SQLAlchemy.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2

TEMPLATE_DIR = Path(__file__).parent / "templates"
SUBJECT_PREFIX = "Subject:"


class MessageKind(StrEnum):
    """What a message to an end user is about. The value is the template name."""

    CONTACT_CODE = "contact_code"
    PASSWORD_RESET = "password_reset"  # noqa: S105 - a template name
    LOCK_NOTICE = "lock_notice"
    APPEAL_DECISION = "appeal_decision"
    NEW_DEVICE_LOGIN = "new_device_login"


class MessageChannel(StrEnum):
    """How a message reaches the person."""

    EMAIL = "email"
    SMS = "sms"


@dataclass(frozen=True)
class KindSpec:
    """The fields a kind needs, which must never reach a log, and which an outsider may control.

    ``untrusted`` fields (a device name is the user agent of whoever logged in) are flattened to one
    short line with links removed, so an attacker cannot turn our security mail into a phishing mail.
    """

    required: frozenset[str]
    sensitive: frozenset[str] = frozenset()
    optional: frozenset[str] = frozenset()
    untrusted: frozenset[str] = frozenset()


KIND_SPECS: Mapping[MessageKind, KindSpec] = {
    MessageKind.CONTACT_CODE: KindSpec(
        required=frozenset({"code", "expires_minutes"}),
        sensitive=frozenset({"code"}),
        optional=frozenset({"case_reference"}),
    ),
    MessageKind.PASSWORD_RESET: KindSpec(
        required=frozenset({"reset_url", "expires_minutes"}),
        sensitive=frozenset({"reset_url", "token"}),
    ),
    MessageKind.LOCK_NOTICE: KindSpec(
        required=frozenset({"case_reference", "reason", "appeal_url"}),
        optional=frozenset({"expires_at"}),
    ),
    MessageKind.APPEAL_DECISION: KindSpec(
        required=frozenset({"case_reference", "decision"}),
        optional=frozenset({"note", "next_steps"}),
    ),
    MessageKind.NEW_DEVICE_LOGIN: KindSpec(
        required=frozenset({"occurred_at", "device", "location", "freeze_url"}),
        untrusted=frozenset({"device", "location"}),
    ),
}

# Shown in logs instead of a secret.
REDACTED = "[redacted]"

# Links the user follows, built from ``[delivery.links]`` when the sender did not pass them. The
# reset token travels in the URL fragment: browsers never send it to a server or in a Referer.
DEFAULT_LINKS: Mapping[str, str] = {
    "reset_url": "{base_url}/reset-password#token={token}",
    "appeal_url": "{base_url}/appeal",
    "freeze_url": "{base_url}/freeze",
}
# Untrusted values are cut to this many characters.
MAX_UNTRUSTED_CHARS = 80
LINK_REMOVED = "[link removed]"
# A URL with a scheme, or anything that looks like a host name (letters TLD), with an optional path.
_LINK = re.compile(r"(?i)\b[a-z][a-z0-9+.-]*://\S*|\b(?:[a-z0-9-]+\.)+[a-z]{2,}\b(?:/\S*)?")
_WHITESPACE = re.compile(r"\s+")

# Other names senders use for the same field.
FIELD_ALIASES: Mapping[str, str] = {"ttl_minutes": "expires_minutes"}


class MessageTemplateError(ValueError):
    """A message could not be rendered: unknown kind, missing field, or a broken template."""


@dataclass(frozen=True)
class RenderedMessage:
    """A rendered message; ``sensitive`` lists the secret values that appear in it."""

    kind: MessageKind
    subject: str
    text: str
    sensitive: tuple[str, ...] = field(default=(), repr=False)

    def redacted_text(self) -> str:
        """The text with every sensitive value replaced by :data:`REDACTED`."""
        return redact(self.text, self.sensitive)


def flatten_untrusted(value: object) -> str:
    """One line, no control characters, no links, at most :data:`MAX_UNTRUSTED_CHARS` characters."""
    text = "".join(ch if ch.isprintable() else " " for ch in str(value))
    text = _WHITESPACE.sub(" ", _LINK.sub(LINK_REMOVED, text)).strip()
    if len(text) > MAX_UNTRUSTED_CHARS:
        text = text[: MAX_UNTRUSTED_CHARS - 1].rstrip() + "\u2026"
    return text


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """Replace every occurrence of each non-empty secret in ``text`` (longest first)."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def prepare_context(
    context: Mapping[str, Any],
    secrets: Mapping[str, str],
    *,
    links: Mapping[str, str] = DEFAULT_LINKS,
    base_url: str,
) -> dict[str, Any]:
    """The values a template sees: ``context`` and the opened ``secrets``, aliases resolved, and every
    link of ``links`` whose placeholders are available (values URL-encoded; ``{base_url}`` given)."""
    values: dict[str, Any] = {**context, **secrets}
    for alias, name in FIELD_ALIASES.items():
        if alias in values and name not in values:
            values[name] = values[alias]
    encoded = {key: quote(str(value), safe="") for key, value in values.items()}
    for name, pattern in links.items():
        if name in values:
            continue  # the sender knows better
        try:
            values[name] = pattern.format(**encoded, base_url=base_url.rstrip("/"))
        except KeyError:
            continue  # the link needs a field this message does not have (e.g. no token)
    return values


_environment = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
    undefined=jinja2.StrictUndefined,
    autoescape=False,  # noqa: S701 - plain-text mail and SMS, never HTML
    keep_trailing_newline=False,
    trim_blocks=False,
)


def render(kind: MessageKind | str, channel: MessageChannel | str, context: Mapping[str, Any]) -> RenderedMessage:
    """Render the ``kind`` template for ``channel`` with ``context``.

    Raises :class:`MessageTemplateError` for an unknown kind or a missing required field. Optional
    fields default to empty (the template leaves the sentence out).
    """
    try:
        kind = MessageKind(kind)
        channel = MessageChannel(channel)
    except ValueError as exc:
        raise MessageTemplateError(str(exc)) from exc
    spec = KIND_SPECS[kind]
    missing = sorted(name for name in spec.required if context.get(name) in (None, ""))
    if missing:
        raise MessageTemplateError(f"{kind}: missing field(s) {', '.join(missing)}")
    values = {name: "" for name in spec.optional} | dict(context)
    for name in spec.untrusted:
        if name in values:
            values[name] = flatten_untrusted(values[name])
    try:
        rendered = _environment.get_template(f"{channel}/{kind}.txt").render(values)
    except jinja2.TemplateError as exc:
        raise MessageTemplateError(f"{kind}/{channel}: {exc}") from exc
    sensitive = tuple(str(values[name]) for name in sorted(spec.sensitive) if values.get(name))
    if channel is MessageChannel.SMS:
        return RenderedMessage(kind=kind, subject="", text=rendered.strip(), sensitive=sensitive)
    first_line, _, rest = rendered.partition("\n")
    if not first_line.startswith(SUBJECT_PREFIX):
        raise MessageTemplateError(f"{kind}/{channel}: an e-mail template must start with 'Subject:'")
    subject = first_line[len(SUBJECT_PREFIX) :].strip()
    return RenderedMessage(kind=kind, subject=subject, text=rest.strip() + "\n", sensitive=sensitive)
