"""Secrets out of every text the pipeline writes: errors, log lines and dlt's trace file.

The source registers each secret it resolves (the API key, the pseudonymisation key, a password in a
URL) with `register_secret`; `redact` replaces them, and any `user:password@` in a URL, by `***`.
The command line installs `RedactingFilter` on its log handlers and the runner rewrites dlt's
`trace.pickle` after every run with `scrub_trace`: dlt stores resolved configuration values that are
not typed as secrets (`base_url`) and every step's exception text there, in plain text.
"""

from __future__ import annotations

import logging
import pickle
import re
import threading
from typing import Any

# Shorter values would redact ordinary words; no real key or password is this short.
MIN_SECRET_LENGTH = 4
MASK = "***"
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)(?P<password>[^@/\s]+)@")
_lock = threading.Lock()
_secrets: set[str] = set()


def register_secret(value: Any) -> None:
    """Remember a secret so that `redact` removes it, as given and stripped of whitespace."""
    if not isinstance(value, str):
        return
    with _lock:
        for candidate in (value, value.strip()):
            if len(candidate) >= MIN_SECRET_LENGTH:
                _secrets.add(candidate)


def url_password(url: Any) -> str | None:
    """The password a URL carries in its `user:password@` part, if any."""
    found = _URL_PASSWORD.search(str(url or ""))
    return found.group("password") if found else None


def redact(text: str) -> str:
    """`text` with every registered secret and every URL password replaced by `***`."""
    if not text:
        return text
    text = _URL_PASSWORD.sub(lambda m: m.group("head") + MASK + "@", text)
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


class RedactingFilter(logging.Filter):
    """Formats each record's message once and redacts it, so neither our logs nor dlt's nor a
    library's can print a secret."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a record whose arguments do not format is logged as it is
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            # The formatter would print the exception's text, which may hold a secret.
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


def _scrubbed(value: Any, depth: int = 0) -> Any:
    """`value` with `redact` applied to every string inside lists, tuples, dicts and named tuples."""
    if depth > 12:
        return value
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return value._replace(**{name: _scrubbed(getattr(value, name), depth + 1) for name in value._fields})
    if isinstance(value, list):
        return [_scrubbed(item, depth + 1) for item in value]
    if isinstance(value, tuple):
        return tuple(_scrubbed(item, depth + 1) for item in value)
    if isinstance(value, dict):
        return {key: _scrubbed(item, depth + 1) for key, item in value.items()}
    return value


def _leaks(data: bytes) -> bool:
    with _lock:
        secrets = list(_secrets)
    text = data.decode("utf-8", errors="replace")
    return any(secret in text for secret in secrets) or any(
        found.group("password") != MASK for found in _URL_PASSWORD.finditer(text)
    )


def scrub_trace(pipeline: Any) -> None:
    """Rewrite the pipeline's `trace.pickle` (and its trace in memory) without secrets.

    Every string in the trace is redacted; should a secret survive inside an object that is not a
    plain container (a step's info), the steps' infos are dropped: the trace is a debugging aid, a
    leaked key is an incident.
    """
    from dlt.pipeline.trace import save_trace

    # The trace this process holds: one read back from the file cannot be pickled again (dlt's
    # schema drops its naming on pickling), and a trace another process wrote was scrubbed there.
    trace = getattr(pipeline, "_last_trace", None)
    if trace is None:
        return
    cleaned = _scrubbed(trace)
    try:
        leaked = _leaks(pickle.dumps(cleaned))
    except Exception:
        leaked = True
    if leaked:
        cleaned = cleaned._replace(steps=[step._replace(step_info=None) for step in cleaned.steps])
    save_trace(pipeline.working_dir, cleaned)
    pipeline._last_trace = cleaned
