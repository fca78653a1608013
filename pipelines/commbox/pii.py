"""Optional pseudonymisation of customer data, applied to raw API items before they leave the source.

With `pseudonymize = true` under `[sources.commbox]` and a secret `pseudonymize_key`, every customer
phone number, e-mail address, name, channel address and message text, and every text and address in
an activity's `data` (Remark, Forward, ConversationSummary, ...), is replaced by the hex HMAC-SHA256
of its text under that key. The same key turns the same value into the same token, so joins and
distinct counts still work (a customer's e-mail in `users` equals the address of their e-mail identity);
without the key the values cannot be recovered or confirmed by hashing guesses.

It runs on the raw payload, before normalisation, so nothing raw reaches dlt's extract files, load
packages, `bad_records` or `*_raw` columns either. Numbers are hashed as their text (`972501234567`
whether the API sent a number or a string), so the token does not depend on the API's typing quirks.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

import orjson

from .coerce import parse_json_text, to_text

# Raw field names (every spelling the API uses) whose values identify a customer or carry their words.
PII_FIELDS = frozenset(
    {
        "phone1",
        "phone2",
        "email",
        "firstName",
        "lastName",
        "first_name",
        "last_name",
        "userName",
        "user_name",
        "streamProviderId",
        "userStreamProviderId",
        "streamProviderEmail",
        "message",
        "trasncript",
        "transcript",
    }
)
# Inside `content` (mail headers and the like) addresses come as {"name": ..., "address": ...}.
CONTENT_PII_FIELDS = PII_FIELDS | {"name", "address", "from", "to", "cc", "bcc", "subject"}
# An activity's `data` (a JSON text) is written by agents and bots: a Remark's or a summary's text, a
# Forward's address, a follow-up note. Every text in it is tokenised except the values the SLA views
# read (status and manager ids, kept when they are numbers) and these labels, which name account
# configuration rather than a customer.
ACTIVITY_KEPT_TEXT = frozenset({"tagName", "ruleName", "action", "scheduledTime"})


class Pseudonymiser:
    """Replaces customer data in raw items by keyed tokens; `scrub` returns a new structure."""

    def __init__(self, key: str) -> None:
        self._key = key.encode("utf-8")

    def __repr__(self) -> str:  # never show the key
        return "Pseudonymiser(<key>)"

    def token(self, value: Any) -> str | None:
        """The hex HMAC-SHA256 of the value's text; None stays None."""
        text = to_text(value)
        if text is None:
            return None
        return hmac.new(self._key, text.encode("utf-8"), hashlib.sha256).hexdigest()

    def scrub(self, raw: Any) -> Any:
        return self._scrub(raw, PII_FIELDS)

    def _scrub(self, raw: Any, fields: frozenset[str]) -> Any:
        if isinstance(raw, Mapping):
            out = {}
            for key, value in raw.items():
                if key == "content" and isinstance(value, str):
                    out[key] = self._content(value)
                elif key == "data" and isinstance(value, (str, Mapping, list)):
                    out[key] = self._activity_data(value)
                elif key in fields and not isinstance(value, (Mapping, list)):
                    out[key] = self.token(value)
                elif key in fields:
                    out[key] = self._scrub(value, CONTENT_PII_FIELDS)
                else:
                    out[key] = self._scrub(value, fields)
            return out
        if isinstance(raw, list):
            return [self._scrub(item, fields) for item in raw]
        return raw

    def _activity_data(self, data: Any) -> Any:
        """An activity's `data` with its texts and addresses tokenised, kept a JSON text if it was."""
        parsed = parse_json_text(data) if isinstance(data, str) else data
        if not isinstance(parsed, (Mapping, list)):
            # Free text (or a bare value) cannot be told apart from a customer's words.
            return self.token(data)
        scrubbed = self._activity_value(parsed, None)
        return orjson.dumps(scrubbed).decode() if isinstance(data, str) else scrubbed

    def _activity_value(self, value: Any, key: str | None) -> Any:
        if isinstance(value, Mapping):
            return {k: self._activity_value(v, str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self._activity_value(item, key) for item in value]
        if value is None or isinstance(value, bool):
            return value
        if key in ACTIVITY_KEPT_TEXT:
            return value
        if key not in PII_FIELDS and _is_number(value):
            # Ids and counts (oldStatus, newManagerId, tagId): the views need them as they are.
            return value
        return self.token(value)

    def _content(self, text: str) -> str | None:
        parsed = parse_json_text(text)
        if isinstance(parsed, (Mapping, list)):
            return orjson.dumps(self._scrub(parsed, CONTENT_PII_FIELDS)).decode()
        # Content that does not parse cannot be inspected: none of it is kept.
        return self.token(text)


def _is_number(value: Any) -> bool:
    if isinstance(value, (int, float)):
        return True
    return isinstance(value, str) and value.strip().lstrip("-").isdigit()


def no_scrub(raw: Any) -> Any:
    return raw
