"""Which way this run reads each changed conversation's activities: the cheapest documented path that
gave the same rows as one request per type, on this run's own conversations.

The API offers three ways to read a conversation's activity log:

| path | requests per conversation | what the docs say |
| --- | --- | --- |
| `per_type`: `GET /objects/{id}/activities?activityType=N` per configured type | one per type | documented, one type an answer |
| `all_types`: the same endpoint without `activityType` | 1 | silent: every type, a 400, or one type |
| `list_log`: `includeActivityLog=true` on `GET /streams/{id}/objects` | 0 (in the list answer) | documented, not its key, nor whether it is whole |

A run starts per type and checks the cheaper paths on its first changed conversations that have
activities of the configured types, those with the longest logs first: the rows a cheaper path
gives, normalised and filtered to the configured types, must equal the per-type rows (the same
`activity_id`s, every field equal). The list's log costs nothing to check (the list answer holds it)
and is checked first; every type in one answer costs one request per sample conversation and is
checked only once the list's log is out. A path is taken for the rest of the run once
`SAMPLE_SIZE` sample conversations agreed and, between them, showed every configured type (an
answer holding one type only agrees on a conversation that has no other). Any disagreement drops
that path for the run, with a warning line and a `warnings` counter. A sample without activities
proves nothing: the run stays per type and keeps checking. A path that has not shown every
configured type after `MAX_SAMPLES` agreeing conversations is given up (inconclusive: per type).

A verdict for a cheaper path is kept in the source state (`activity_path`: the path, the types it
was shown for, when, and a digest of the base URL) and recalled by the next run or checkpoint slice
of the same account within `client.REMEMBER_SECONDS` (24 hours), so a small incremental run does not pay the whole
check again: it re-checks a conversation that has activities (`per_type` beside the remembered
path), more only until those re-checked showed every configured type, and goes back to checking
from scratch if one differs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .client import BadRequest, CommBoxClient, NotFound, account_memory, recall_memory
from .coerce import Warnings, as_list
from .config import SourceSettings
from .normalise import activity_rows
from .settings import OBJECT_ACTIVITIES

logger = logging.getLogger("commbox.activities")

PER_TYPE = "per_type"
ALL_TYPES = "all_types"
LIST_LOG = "list_log"
# The cheaper paths, cheapest first: the first one still in the running is the one being checked.
CHEAPER = (LIST_LOG, ALL_TYPES)
DESCRIPTIONS = {
    LIST_LOG: "the list's activity log (includeActivityLog)",
    ALL_TYPES: "every type in one answer (no activityType)",
    PER_TYPE: "one request per activity type",
}
# Agreeing sample conversations a cheaper path needs (and every configured type shown among them).
SAMPLE_SIZE = 3
# A path still short of every configured type after this many agreeing conversations is given up.
MAX_SAMPLES = 20
# Conversations read per type at a time while checking, longest logs first: the sample and one
# spare. Each costs a request per type that the chosen path would not have sent, so a small change
# (30 conversations) pays 8 for the check; the list's log is compared on every one of them.
CHECK_CHUNK = SAMPLE_SIZE + 1
# How long a batch waits for another one's re-check of a recalled path before reading per type.
RECHECK_WAIT_SECONDS = 30.0

Row = dict[str, Any]
Ref = dict[str, Any]
FanOut = Callable[[Callable[[Ref, Any], Any], list[Ref]], list[Any]]


@dataclass
class _Candidate:
    """How a cheaper path has fared this run."""

    agreed: int = 0
    types: set[int] = field(default_factory=set)
    out: bool = False


class ActivityPaths:
    """Reads activities for one run, by the cheapest path verified so far (see the module docstring).

    Shared by the run's fan-out batches (dlt runs them in parallel) and read by the list calls
    (`list_log_wanted`), so its verdict is guarded by a lock and read without one.

    Args:
        client: the run's client.
        settings: the run's settings (`activity_types`, `activity_paths`).
        warnings: the run's warnings counter.
        scrub: pseudonymises raw items (the list's log arrives already scrubbed with its conversation).
        finish: the row as loaded, from a normalised row and its conversation's ref (versioned, compacted).
    """

    def __init__(
        self,
        client: CommBoxClient,
        settings: SourceSettings,
        warnings: Warnings,
        *,
        scrub: Callable[[Any], Any],
        finish: Callable[[Row, Ref], Row],
    ) -> None:
        self.client = client
        self.types = tuple(settings.activity_types)
        self.warnings = warnings
        self.scrub = scrub
        self.finish = finish
        # Whether this run loads activities at all (a run of a subset of the tables may not).
        self.selected = True
        self._lock = threading.Lock()
        self._candidates = {name: _Candidate() for name in CHEAPER}
        # The path the rest of the run uses; None while the cheaper paths are being checked.
        self.chosen: str | None = None
        if settings.activity_paths == PER_TYPE or not self.types:
            self.chosen = PER_TYPE
        self._base_url = settings.base_url
        # The source state the verdict is kept in (`recall`), and whether a recalled verdict still
        # waits for this run's one-conversation re-check.
        self._state: dict[str, Any] | None = None
        self._recheck = False
        self._rechecked_types: set[int] = set()
        # A recalled path is used only once this run's re-check has borne it out: batches running
        # meanwhile read per type (a path that no longer holds must not load a single row).
        self._provisional = False
        self._recheck_done = threading.Condition()

    def recall(self, state: dict[str, Any]) -> None:
        """Take the verdict an earlier run or slice of this account kept in `state` (the source
        state, where this run keeps its own), when it is recent and covers the configured types;
        the first conversation with activities re-checks it."""
        self._state = state
        memory = recall_memory(state.get("activity_path"), self._base_url)
        if self.chosen is not None or memory is None:
            return
        try:
            covers = set(self.types) <= {int(t) for t in memory["types"]}
        except (KeyError, TypeError, ValueError):
            return
        if memory.get("path") in CHEAPER and covers:
            self.chosen = memory["path"]
            self._recheck = self._provisional = True
            logger.info(
                "activities: %s, as an earlier run verified; re-checking one", DESCRIPTIONS[self.chosen]
            )

    def list_log_wanted(self) -> bool:
        """Whether list calls should ask for `includeActivityLog`: only while the list's log is
        still being checked or has been taken (it makes every list page heavier)."""
        if not self.selected:
            return False
        chosen = self.chosen
        return chosen == LIST_LOG or (chosen is None and not self._candidates[LIST_LOG].out)

    def summary(self) -> dict[str, Any]:
        """The path in use and how each cheaper path fared so far, for logs and benchmarks."""
        with self._lock:
            return {
                "path": self.chosen or "checking",
                **{
                    name: {"agreed": c.agreed, "types": sorted(c.types), "out": c.out}
                    for name, c in self._candidates.items()
                },
            }

    # ------------------------------------------------------------------ reading
    def read(self, refs: list[Ref], fan_out: FanOut) -> list[Row]:
        """The activity rows of `refs` (one window's changed conversations), fetched on `fan_out`.

        While no path is chosen, conversations are read per type a chunk at a time and each chunk
        checks the cheaper paths; the rest of the batch goes the chosen way as soon as there is one.
        """
        rows: list[Row] = []
        pending = list(refs)
        if self.chosen is None or self._recheck:
            # Longest logs first: the sample should be the conversations with the most activities.
            pending.sort(key=lambda ref: -_log_length(ref))
        while pending:
            path = self.chosen
            if path in CHEAPER and self._provisional:
                if self._claim_recheck():
                    ref, pending = pending[0], pending[1:]
                    expected = self.per_type(ref)
                    rows.extend(expected)
                    self._recheck_with(path, ref, expected)
                    continue
                # Another batch is re-checking the recalled path (a request or two): wait for its
                # verdict, or for the turn to re-check one of these; the documented way if it is slow.
                if self._wait_for_recheck(path):
                    continue
                answers = fan_out(lambda ref, _: self.per_type(ref), pending)
                rows.extend(row for found in answers for row in found)
                break
            if path is not None:
                answers = fan_out(lambda ref, _, path=path: self._read(ref, path), pending)
                rows.extend(row for found in answers for row in found)
                break
            chunk, pending = pending[:CHECK_CHUNK], pending[CHECK_CHUNK:]
            answers = fan_out(lambda ref, _: self.per_type(ref), chunk)
            rows.extend(row for found in answers for row in found)
            self._check(chunk, answers, fan_out)
        return rows

    def per_type(self, ref: Ref) -> list[Row]:
        """One request per configured type: the documented path, always right."""
        rows: dict[str, Row] = {}
        path = OBJECT_ACTIVITIES.format(object_id=ref["object_id"])
        for activity_type in self.types:
            try:
                data = self.client.get(path, {"activityType": activity_type}).data
            except NotFound:
                self.warnings["activities: 404 for a listed conversation, skipped"] += 1
                continue
            items = self.scrub(as_list(data))
            for row in activity_rows(items, ref["object_id"], ref["stream_id"], activity_type, self.warnings):
                # Accounts that ignore activityType send every type each time: keep the one asked for.
                if row["activity_type"] == activity_type:
                    rows[row["activity_id"]] = self.finish(row, ref)
        return list(rows.values())

    def _read(self, ref: Ref, path: str) -> list[Row]:
        if path == LIST_LOG:
            if "activity_log" not in ref:
                # Listed before the log was asked for, or served without it: the documented way.
                self.warnings[
                    "activities: a listed conversation came without its activity log, read per type"
                ] += 1
                return self.per_type(ref)
            try:
                return self._rows(ref, as_list(ref["activity_log"]), self.warnings)
            except ValueError:
                self.warnings["activities: an activity log that is not a list, read per type"] += 1
                return self.per_type(ref)
        if path == ALL_TYPES:
            try:
                data = self.client.get(OBJECT_ACTIVITIES.format(object_id=ref["object_id"])).data
            except NotFound:
                self.warnings["activities: 404 for a listed conversation, skipped"] += 1
                return []
            except BadRequest as error:
                self._drop(ALL_TYPES, f"refused after it was verified ({error})")
                return self.per_type(ref)
            return self._rows(ref, self.scrub(as_list(data)), self.warnings)
        return self.per_type(ref)

    def _rows(self, ref: Ref, items: list[Any], warnings: Warnings) -> list[Row]:
        """Rows of an answer holding every type, kept to the configured types, as `per_type` keys
        and finishes them. No type was asked for, so an item without a readable one (0) is of no
        configured type: it is dropped, and a check against the per-type rows fails on it."""
        rows: dict[str, Row] = {}
        for row in activity_rows(items, ref["object_id"], ref["stream_id"], 0, warnings):
            if row["activity_type"] in self.types:
                rows[row["activity_id"]] = self.finish(row, ref)
        return list(rows.values())

    # ------------------------------------------------------------------ checking
    def _wait_for_recheck(self, path: str) -> bool:
        """Wait while another batch re-checks `path`; False if that took over `RECHECK_WAIT_SECONDS`."""
        with self._recheck_done:
            return self._recheck_done.wait_for(
                lambda: not (self.chosen == path and self._provisional and not self._recheck),
                timeout=RECHECK_WAIT_SECONDS,
            )

    def _claim_recheck(self) -> bool:
        with self._lock:
            claimed, self._recheck = self._recheck, False
            return claimed

    def _recheck_with(self, path: str, ref: Ref, expected: list[Row]) -> None:
        """Compare a recalled path with the per-type rows of one conversation: agreeing keeps it,
        differing drops it (the run checks afresh); no activities or a vanished conversation proves
        nothing, and the next conversation is re-checked instead."""
        got = (self._log_rows(ref) if path == LIST_LOG else self._all_types_rows(ref)) if expected else None
        if got is not None:
            self._judge(path, ref, expected, got)
        with self._lock:
            if got is not None and self.chosen == path:
                self._rechecked_types.update(row["activity_type"] for row in expected)
            # Until the re-checked conversations showed every configured type: an answer cut to
            # its newest item agrees on a conversation with one activity.
            self._recheck = self.chosen == path and not set(self.types) <= self._rechecked_types
            self._provisional = self._recheck
        with self._recheck_done:
            self._recheck_done.notify_all()

    def _check(self, chunk: list[Ref], answers: list[list[Row]], fan_out: FanOut) -> None:
        """Compare the cheaper paths with the per-type rows of the chunk's conversations that have
        activities; choose a path when one has agreed often enough."""
        samples = sorted(
            ((ref, rows) for ref, rows in zip(chunk, answers, strict=True) if rows),
            key=lambda pair: -len(pair[1]),
        )
        if not samples:
            return  # nothing to compare: per type, and the next chunk checks again
        if self._live() == LIST_LOG:
            for ref, rows in samples:
                got = self._log_rows(ref)
                self._judge(LIST_LOG, ref, rows, got)
        if self._live() == ALL_TYPES:
            wanted = self._all_types_sample(samples)
            found = fan_out(lambda ref, _: self._all_types_rows(ref), [ref for ref, _ in wanted])
            for (ref, rows), got in zip(wanted, found, strict=True):
                if got is not None:
                    self._judge(ALL_TYPES, ref, rows, got)
        self._decide()

    def _log_rows(self, ref: Ref) -> list[Row] | str:
        if "activity_log" not in ref:
            return "no activity log in the list answer"
        try:
            return self._rows(ref, as_list(ref["activity_log"]), Warnings())
        except ValueError:
            return "the activity log is not a list"

    def _all_types_rows(self, ref: Ref) -> list[Row] | str | None:
        try:
            data = self.client.get(OBJECT_ACTIVITIES.format(object_id=ref["object_id"])).data
        except NotFound:
            return None  # gone since it was listed: proves nothing
        except BadRequest as error:
            return f"refused ({error})"
        try:
            return self._rows(ref, self.scrub(as_list(data)), Warnings())
        except ValueError:
            return "the answer is not a list"

    def _all_types_sample(self, samples: list[tuple[Ref, list[Row]]]) -> list[tuple[Ref, list[Row]]]:
        """Up to the conversations still needed, those showing a type not yet shown first: each
        costs a request."""
        with self._lock:
            candidate = self._candidates[ALL_TYPES]
            need = max(1, SAMPLE_SIZE - candidate.agreed)
            shown = set(candidate.types)
        ranked = sorted(samples, key=lambda pair: -len({row["activity_type"] for row in pair[1]} - shown))
        return ranked[:need]

    def _judge(self, name: str, ref: Ref, expected: list[Row], got: list[Row] | str) -> None:
        if isinstance(got, str):
            self._drop(name, f"conversation {ref['object_id']}: {got}")
            return
        want = {row["activity_id"]: row for row in expected}
        have = {row["activity_id"]: row for row in got}
        if want == have:
            with self._lock:
                candidate = self._candidates[name]
                candidate.agreed += 1
                candidate.types.update(row["activity_type"] for row in expected)
            return
        if want.keys() != have.keys():
            why = f"{len(have)} rows where the per-type answers give {len(want)} ({len(want.keys() - have.keys())} missing)"
        else:
            why = "the same activities with different fields"
        self._drop(name, f"conversation {ref['object_id']}: {why}")

    def _drop(self, name: str, why: str) -> None:
        with self._lock:
            candidate = self._candidates[name]
            if candidate.out:
                return
            candidate.out = True
            if self.chosen == name:
                self.chosen = None
            if self._state is not None and (self._state.get("activity_path") or {}).get("path") == name:
                self._state.pop("activity_path", None)
        self.warnings[f"activities: {DESCRIPTIONS[name]} differs from the per-type answers, not used"] += 1
        logger.warning(
            "activities: %s differs from the per-type answers (%s); reading them another way this run",
            DESCRIPTIONS[name],
            why,
        )
        self._decide()

    def _live(self) -> str | None:
        """The cheapest path still in the running, None when all are out."""
        return next((name for name in CHEAPER if not self._candidates[name].out), None)

    def _decide(self) -> None:
        message = None
        with self._lock:
            if self.chosen is not None:
                return
            name = self._live()
            if name is None:
                self.chosen = PER_TYPE
                message = "activities: no cheaper path gave the per-type rows; %s for the rest of the run"
                name = PER_TYPE
            else:
                candidate = self._candidates[name]
                if candidate.agreed >= SAMPLE_SIZE and set(self.types) <= candidate.types:
                    self.chosen = name
                    message = "activities: %s gave the per-type rows; using it for the rest of the run"
                    if self._state is not None:
                        self._state["activity_path"] = account_memory(
                            {"path": name, "types": sorted(self.types)}, self._base_url
                        )
                elif candidate.agreed >= MAX_SAMPLES:
                    candidate.out = True  # inconclusive: some configured type never showed up
                    logger.info(
                        "activities: %s agreed on %s conversations without showing types %s; not used",
                        DESCRIPTIONS[name],
                        candidate.agreed,
                        sorted(set(self.types) - candidate.types),
                    )
        if message is not None:
            logger.info(message, DESCRIPTIONS[name])
        elif self.chosen is None and self._live() != name:
            self._decide()  # the path just given up hands over to the next one


def _log_length(ref: Ref) -> int:
    log = ref.get("activity_log")
    return len(log) if isinstance(log, list) else 0
