"""Extract the key sets of the vendor's documented example responses into ``vendor_keys.json``.

Run from the repository root whenever the vendor's OpenAPI description changes::

    python tests/contract/extract_vendor_keys.py ../shared/reference/commbox-openapi.json

The contract tests read only the committed JSON, so a clone without the vendor documents still
runs them. The output names every object in an endpoint's 200 example by a dotted path from the
envelope (``""`` is the envelope, ``data`` its payload, ``data.childs`` a message inside an item);
arrays are transparent, because the vendor serves ``childs`` as a list or, for one child, as an
object. A path lists one key set per documented ``oneOf`` variant (duplicates removed), in the
vendor's key order.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

# The read endpoints an export calls (the vendor's reference README lists the same ones).
READ_ENDPOINTS = (
    "/core/systemstatus",
    "/managers",
    "/objects/{OBJECT_ID}/activities",
    "/stats/streams",
    "/stats/streamsSLAExceptions",
    "/streams/{STREAM_ID}/objects",
    "/streams/{STREAM_ID}/objects/{OBJECT_ID}",
    "/streams/{STREAM_ID}/objects/{OBJECT_ID}/transcript",
    "/streams/{STREAM_ID}/streamavailability",
    "/users/{USER_ID}",
)
DEFAULT_SPEC = Path(__file__).resolve().parents[3] / "shared/reference/commbox-openapi.json"
OUTPUT = Path(__file__).resolve().with_name("vendor_keys.json")


def _resolve(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = spec
        for part in node["$ref"][2:].split("/"):
            target = target[part]
        node = target
    return node


def _walk(spec: dict[str, Any], node: dict[str, Any], path: str, out: dict[str, list[list[str]]]) -> None:
    """Add to ``out`` the key set of every object under ``node``, keyed by its dotted path."""
    node = _resolve(spec, node)
    if "oneOf" in node:
        for variant in node["oneOf"]:
            _walk(spec, variant, path, out)
        return
    if "items" in node:
        _walk(spec, node["items"], path, out)
        return
    props = node.get("properties")
    if not props:
        return
    keys = list(props)
    alternatives = out.setdefault(path, [])
    if keys not in alternatives:
        alternatives.append(keys)
    for key, sub in props.items():
        _walk(spec, sub, f"{path}.{key}" if path else key, out)


def _example_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "string" if isinstance(value, str) else type(value).__name__


def extract(spec: dict[str, Any]) -> dict[str, Any]:
    """Key sets per read endpoint, plus the type of the example's envelope ``status`` and ``data``.

    Returns:
        ``{"endpoints": {path: {"status": "number"|"string", "data": "null"|"object"|"array",
        "shapes": {dotted_path: [[key, ...], ...]}}}}``.
    """
    endpoints: dict[str, Any] = {}
    for name in READ_ENDPOINTS:
        response = spec["paths"][name]["get"]["responses"]["200"]
        schema = _resolve(spec, response["content"]["application/json"]["schema"])
        shapes: dict[str, list[list[str]]] = {}
        _walk(spec, schema, "", shapes)
        props = schema["properties"]
        data = _resolve(spec, props["data"])
        if "items" in data or data.get("type") == "array":
            data_kind = "array"
        elif "properties" in data:
            data_kind = "object"
        else:
            data_kind = _example_type(data.get("example"))
        endpoints[name] = {
            "status": _example_type(_resolve(spec, props["status"]).get("example")),
            "data": data_kind,
            "shapes": shapes,
        }
    return {
        "source": "vendor OpenAPI description (commbox-openapi.json), 200 examples of the read endpoints",
        "endpoints": endpoints,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", nargs="?", type=Path, default=DEFAULT_SPEC, help="the vendor OpenAPI JSON")
    parser.add_argument("-o", "--output", type=Path, default=OUTPUT, help="where to write the key sets")
    args = parser.parse_args(argv)
    try:
        spec = json.loads(args.spec.read_text())
    except (OSError, ValueError) as exc:
        print(f"extract_vendor_keys: cannot read {args.spec}: {exc}", file=sys.stderr)
        return 2
    try:
        result = extract(spec)
    except KeyError as exc:
        print(f"extract_vendor_keys: {args.spec} lacks {exc}", file=sys.stderr)
        return 2
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.output} ({len(result['endpoints'])} endpoints)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
