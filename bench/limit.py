"""The limit: a bare fetcher that sends the minimal set of requests and does nothing but parse the JSON.

Per stream, one window over the whole history paged with `pageNumber` (ceil(objects / 100) calls, the
page count taken from ground truth, so not even a trailing empty page is sent); then one transcript and
one call per activity type for every conversation; plus the fixed calls the pipeline also makes. The
work goes through one queue to `concurrency` threads, each with one keep-alive `http.client`
connection: list pages first, and each page's fan-out queued as soon as the page is parsed.
"""

from __future__ import annotations

import http.client
import math
import queue
import threading
from collections import Counter
from typing import Any
from urllib.parse import urlencode, urlsplit

import orjson

FIXED_PATHS = (
    "/core/systemstatus",
    "/stats/streams",
    "/stats/streamsSLAExceptions",
    "/managers",
)


def fixed_paths(stream_ids: list[int]) -> list[str]:
    """The calls a full run makes once, whatever the data: clock, stats, managers, availability."""
    return [*FIXED_PATHS, *(f"/streams/{s}/streamavailability/true" for s in stream_ids)]


def list_path(stream_id: int, start: int, end: int, page: int) -> str:
    query = urlencode(
        {
            "unixStartTime": start,
            "unixEndTime": end,
            "timeFilter": "updatedtime",
            "order": "updatedtime",
            "sort": "asc",
            "pageSize": 100,
            "pageNumber": page,
            "includeChilds": "true",
        }
    )
    return f"/streams/{stream_id}/objects?{query}"


def fetch_all(
    base_url: str,
    api_key: str,
    streams: dict[int, int],
    *,
    start: int,
    end: int,
    concurrency: int,
    activity_types: tuple[int, ...] = (2, 6),
    transcripts: bool = True,
) -> dict[str, Any]:
    """Fetch everything; `streams` maps stream id to its number of conversations (ground truth)."""
    parts = urlsplit(base_url)
    headers = {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}
    tasks: queue.Queue[tuple[str, str, int] | None] = queue.Queue()
    rows: Counter[str] = Counter()
    lock = threading.Lock()

    def fan_out(items: list[Any], stream_id: int) -> None:
        for item in items:
            object_id = item.get("objectId", item.get("id"))
            if transcripts:
                tasks.put(("transcripts", f"/streams/{stream_id}/objects/{object_id}/transcript", stream_id))
            for activity_type in activity_types:
                tasks.put(("activities", f"/objects/{object_id}/activities?activityType={activity_type}", 0))

    def worker() -> None:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        local: Counter[str] = Counter()
        while True:
            task = tasks.get()
            if task is None:
                tasks.task_done()
                break
            kind, path, stream_id = task
            try:
                connection.request("GET", path, headers=headers)
                response = connection.getresponse()
                body = response.read()
                if response.status != 200:
                    local[f"error: HTTP {response.status}"] += 1
                    continue
                data = orjson.loads(body)["data"]
                if kind == "objects":
                    local["objects"] += len(data)
                    for item in data:
                        childs = item.get("childs")
                        local["childs"] += len(childs) if isinstance(childs, list) else int(bool(childs))
                    fan_out(data, stream_id)
                elif kind != "fixed":
                    local[kind] += len(data) if isinstance(data, list) else 1
            finally:
                tasks.task_done()
        connection.close()
        with lock:
            rows.update(local)

    for path in fixed_paths(list(streams)):
        tasks.put(("fixed", path, 0))
    for stream_id, count in streams.items():
        for page in range(1, math.ceil(count / 100) + 1):
            tasks.put(("objects", list_path(stream_id, start, end, page), stream_id))
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    tasks.join()
    for _ in threads:
        tasks.put(None)
    for thread in threads:
        thread.join()
    errors = {key: rows.pop(key) for key in list(rows) if key.startswith("error: ")}
    return {"rows": dict(rows), "errors": errors}
