"""The peer: dlt's declarative `rest_api` source pointed at the same API, configured as well as it can be.

Per stream, `objects` over one window covering the whole history (`unixStartTime`/`unixEndTime`, the
window parameters) with a page-number paginator (`pageNumber` from 1, stopping at the first empty
page: the API sends no total), `includeChilds=true`; transcript and one resource per activity type
resolved from each object's id; every resource `parallelized`. A `map` step copies `id` into
`objectId` for the one list object in five that comes in the API's second shape, so that `resolve`
finds the id on every object. Objects and transcripts merge on the object id; activities carry no id
of their own and are appended. Nothing else is tuned: this is what a user would write.
"""

from __future__ import annotations

from typing import Any

from dlt.sources.rest_api import rest_api_source


def _object_id(item: dict[str, Any]) -> dict[str, Any]:
    if "objectId" not in item:
        item["objectId"] = item.get("id")
    return item


def peer_source(
    base_url: str,
    api_key: str,
    stream_ids: list[int],
    *,
    start: int,
    end: int,
    activity_types: tuple[int, ...] = (2, 6),
    transcripts: bool = True,
) -> Any:
    resources: list[dict[str, Any]] = []
    for stream_id in stream_ids:
        objects = f"objects_{stream_id}"
        resources.append(
            {
                "name": objects,
                "table_name": "objects",
                "primary_key": "objectId",
                "write_disposition": "merge",
                "endpoint": {
                    "path": f"streams/{stream_id}/objects",
                    "params": {
                        "unixStartTime": start,
                        "unixEndTime": end,
                        "timeFilter": "updatedtime",
                        "order": "updatedtime",
                        "sort": "asc",
                        "pageSize": 100,
                        "includeChilds": "true",
                    },
                    "paginator": {
                        "type": "page_number",
                        "base_page": 1,
                        "page_param": "pageNumber",
                        "total_path": None,
                        "stop_after_empty_page": True,
                    },
                },
                "processing_steps": [{"map": _object_id}],
            }
        )
        if transcripts:
            resources.append(
                {
                    "name": f"transcripts_{stream_id}",
                    "table_name": "transcripts",
                    "primary_key": "objectId",
                    "write_disposition": "merge",
                    "endpoint": {
                        "path": f"streams/{stream_id}/objects/{{resources.{objects}.objectId}}/transcript",
                        "paginator": "single_page",
                    },
                }
            )
        for activity_type in activity_types:
            resources.append(
                {
                    "name": f"activities_{activity_type}_{stream_id}",
                    "table_name": "activities",
                    "write_disposition": "append",
                    "endpoint": {
                        "path": f"objects/{{resources.{objects}.objectId}}/activities",
                        "params": {"activityType": activity_type},
                        "paginator": "single_page",
                    },
                }
            )
    return rest_api_source(
        {
            "client": {
                "base_url": base_url,
                "auth": {"type": "bearer", "token": api_key},
            },
            "resource_defaults": {
                "endpoint": {"data_selector": "data"},
                "parallelized": True,
            },
            "resources": resources,
        },
        name="commbox_peer",
    )
