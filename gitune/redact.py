"""Credentials in URIs are never shown or stored: `s3://KEY:SECRET@bucket`, `http://user:pass@host` and
secret-looking query parameters (`?token=…`, `X-Amz-Signature=…`) become `***` in everything gitune prints,
tags in MLflow or writes into a report or the generator cache. The URIs themselves are used unchanged."""

from __future__ import annotations

import re
from typing import Any

MASK = "***"
# scheme://userinfo@ — user[:secret] before the host. A secret may hold an unencoded '/' (AWS secret keys do);
# "host:port/path@x" is not read as one (the part after ':' is digits then '/').
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)"
                       r"(?P<userinfo>[^/@\s'\"`:]+(?::(?!\d+/)[^@\s'\"`]*)?)@")
# ?name=value or &name=value where the name says secret (password, token, signature, secret, credential, key).
_QUERY = re.compile(r"(?i)(?P<name>[?&][\w.-]*(?:passw(?:or)?d|token|secret|signature|credential|key|sig)[\w.-]*=)"
                    r"[^&\s'\"`#]+")


def redact(text: str) -> str:
    """`text` with the userinfo of every URI and the values of secret-looking query parameters masked."""
    if "://" not in text and "=" not in text:
        return text
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    return _QUERY.sub(lambda m: f"{m['name']}{MASK}", text)


def redact_any(value: Any) -> Any:
    """redact() through the strings of a dict/list/tuple tree (for tags, params and JSON files)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_any(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_any(v) for v in value)
    return value
