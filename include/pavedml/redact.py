"""Credentials never leave a step in text. :func:`redact_urls` masks the password of every URL's
userinfo (``redis://:s3cret@host`` -> ``redis://:***@host``), secret-looking parameters
(``password=``, ``token=``, ``X-Amz-Signature=``, ``sig=``, ...) and ``Bearer``/``Basic``
credentials. It is applied where text leaves the process: failure summaries and error messages,
the step's log lines, the task log relay, the UI's error line and every alert (file and e-mail).

:func:`clip` bounds one echoed value to one short line (a 1 MB cell never makes a 1 MB summary).

Both are linear in the text's length (no backtracking over a long line)."""

from __future__ import annotations

import re
from typing import Any

MASK = "***"
#: ``scheme://user:password@host``: the password is masked, the user kept (it names who connects).
#: A password may hold an unencoded ``@``: the authority ends at the last ``@`` before ``/?#``.
_USERINFO = re.compile(r"://(?P<user>[^\s/?#:@'\"<>]*):(?P<password>[^\s/?#'\"<>]*)@")
#: ``name=value`` whose name ends in a secret word: query parameters, DSN keywords, env assignments.
_PARAM = re.compile(
    r"(?P<name>password|passwd|pwd|secret|token|signature|credential|api[_-]?key|sig)"
    r"(?P<eq>=|%3D)(?P<value>[^&\s'\"<>]+)", re.IGNORECASE)
#: ``Bearer <token>`` anywhere; ``Basic <credentials>`` only in an Authorization header or parameter
#: (prose such as "basic features_v2" is left alone).
_AUTH = re.compile(r"(?P<scheme>\bbearer\s+|\bauthorization[\"']?\s*[:=]\s*[\"']?basic\s+)"
                   r"(?P<value>[A-Za-z0-9._~+/=-]{8,})", re.IGNORECASE)


def redact_urls(text: str) -> str:
    """``text`` with every credential in a URL (or a ``password=``-like parameter) masked."""
    if not text or not isinstance(text, str):
        return text
    if "://" in text:
        text = _USERINFO.sub(lambda m: f"://{m['user']}:{MASK}@", text)
    if "=" in text or "%3D" in text or "%3d" in text:
        text = _PARAM.sub(lambda m: f"{m['name']}{m['eq']}{MASK}", text)
    return _AUTH.sub(lambda m: f"{m['scheme']}{MASK}", text)


def redact(value: Any) -> Any:
    """:func:`redact_urls` applied to every string in a (nested) dict, list or tuple."""
    if isinstance(value, str):
        return redact_urls(value)
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact(v) for v in value)
    return value


#: Characters an echoed value may show at most, per value or line.
VALUE_LIMIT = 300


def clip(value: Any, limit: int = VALUE_LIMIT) -> str:
    """``value`` as one line of at most ``limit`` characters (newlines shown as ``\\n``), ending in
    ``... (N chars)`` when cut, redacted."""
    text = redact_urls(str(value))  # before cutting: a cut could hide a URL's "@" from the pattern
    if "\n" in text or "\r" in text:
        text = text.replace("\r", "\\r").replace("\n", "\\n")
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text)} chars)"
    return text
