"""Masking of personal identifiers, and redaction of credentials, before they reach logs, stored
errors or the console."""

from __future__ import annotations

import re

_PHONE = re.compile(r"(?<!\d)(1[3-9]\d)\d{4}(\d{4})(?!\d)")
# A URL's query string (platform APIs carry `secret=` and `access_token=` there), and any
# credential-looking parameter outside a URL.
_QUERY = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^\s?#'\"<>]*)\?[^\s#'\"<>]*")
_CREDENTIAL = re.compile(r"\b((?:access_token|secret|corpsecret|appsecret|password|token)=)[^&\s'\"<>]+",
                         re.IGNORECASE)
REDACTED = "[redacted]"


def mask(identifier: str) -> str:
    """Keep enough of an openid or phone number to correlate log lines, not to identify anyone."""
    if _PHONE.fullmatch(identifier):
        return _PHONE.sub(r"\1****\2", identifier)
    if len(identifier) <= 6:
        return "***"
    return f"{identifier[:3]}***{identifier[-3:]}"



def redact(text: str) -> str:
    """The text with every URL's query string and every credential parameter replaced."""
    if "=" not in text and "?" not in text:
        return text
    return _CREDENTIAL.sub(r"\1" + REDACTED, _QUERY.sub(r"\1?" + REDACTED, text))


def error_text(error: BaseException) -> str:
    """`Type: message` of an exception, redacted: what is logged, stored or shown of a failure."""
    return redact(f"{type(error).__name__}: {error}".rstrip(": "))
