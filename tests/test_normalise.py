"""Every quirk in the vendor's examples (shared/reference/README.md) normalises to one clean value."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from pipelines.commbox.coerce import Warnings, parse_json_text, parse_timestamp, to_int
from pipelines.commbox.normalise import BadRecord, activity_rows, manager_row, object_bundle, transcript_row

BASE_OBJECT = {
    "objectId": 62824402,
    "streamId": 345,
    "substreamId": 0,
    "statusId": 1,
    "type": 5,
    "createdTime": "2024-09-17T07:51:52.2581942Z",
    "updatedTime": "2024-09-17T08:00:00.0000000Z",
    "message": "Hi!&nbsp;<br><br>How are you today?",
}


def bundle_of(**fields):
    return object_bundle({**BASE_OBJECT, **fields}, stream_id=345, warnings=Warnings())


@pytest.mark.parametrize(
    ("fields", "column", "expected"),
    [
        ({"streamId": None, "streamid": 345}, "stream_id", 345),
        ({"substreamId": None, "subStreamId": 7}, "sub_stream_id", 7),
        ({"substreamid": 9}, "sub_stream_id", 0),  # the first spelling present wins
        (
            {"closedTime": "2024-09-18T10:00:00.1234567Z"},
            "closed_at",
            datetime(2024, 9, 18, 10, 0, 0, 123456, UTC),
        ),
        ({"closeTime": "2024-09-18T10:00:00Z"}, "closed_at", datetime(2024, 9, 18, 10, tzinfo=UTC)),
        ({"closedTime": "null,"}, "closed_at", None),
        ({"closedTime": "null"}, "closed_at", None),
        ({"closedTime": ""}, "closed_at", None),
        ({"closedTime": None}, "closed_at", None),
        ({"userStreamProviderType": "4"}, "user_stream_provider_type", 4),
        ({"streamProviderType": "5"}, "stream_provider_type", 5),
        ({"assignedManagerId": 0}, "assigned_manager_id", None),
        ({"assignedManagerId": "571562"}, "assigned_manager_id", 571562),
        ({"firstName": "null"}, "first_name", None),
        ({"user_identity": "37389853"}, "user_identity_id", 37389853),
        ({"message": "<div>Hi&nbsp;<br></div>"}, "message", "<div>Hi&nbsp;<br></div>"),
    ],
    ids=lambda value: str(value)[:40],
)
def test_object_fields_unify_drifting_names_and_types(fields, column, expected):
    assert bundle_of(**fields)["object"][column] == expected


def test_object_with_id_instead_of_object_id_is_keyed():
    raw = {k: v for k, v in BASE_OBJECT.items() if k not in ("objectId", "streamId")} | {
        "id": 234,
        "streamid": 1,
    }
    row = object_bundle(raw, stream_id=1, warnings=Warnings())["object"]
    assert (row["object_id"], row["stream_id"]) == (234, 1)


def test_object_without_an_id_is_a_bad_record():
    raw = {k: v for k, v in BASE_OBJECT.items() if k != "objectId"}
    with pytest.raises(BadRecord):
        object_bundle(raw, stream_id=1, warnings=Warnings())


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-08-06T07:51:52.2581942Z", datetime(2024, 8, 6, 7, 51, 52, 258194, UTC)),
        ("2024-10-30T13:23:33", datetime(2024, 10, 30, 13, 23, 33, tzinfo=UTC)),  # zone-less = UTC
        ("2024-10-30T15:23:33+02:00", datetime(2024, 10, 30, 13, 23, 33, tzinfo=UTC)),
        ("2025-04-15T07:24:52.956Z", datetime(2025, 4, 15, 7, 24, 52, 956000, UTC)),
        ("null", None),
        ("null,", None),
        ("", None),
    ],
)
def test_timestamps_become_utc(value, expected):
    assert parse_timestamp(value) == expected


def test_unparseable_timestamp_is_kept_raw_and_counted():
    warnings = Warnings()
    row = object_bundle({**BASE_OBJECT, "closedTime": "yesterday"}, 345, warnings)["object"]
    assert row["closed_at"] is None
    assert row["closed_at_raw"] == "yesterday"
    assert sum(warnings.values()) == 1


@pytest.mark.parametrize(
    ("value", "expected"), [("1769668,", 1769668), ("42", 42), (42.0, 42), ("null", None)]
)
def test_ids_arriving_as_strings_become_integers(value, expected):
    assert to_int(value) == expected


def test_user_quirks_phone_as_number_locale_spelling_and_birthday():
    bundle = bundle_of(
        user={
            "id": "36167229",
            "uniqueId": 12387654,
            "phone1": 12129871234,
            "phone2": "",
            "email": "johndoe@gmail.com",
            "firstName": "null",
            "Locale": "en_US",
            "birthday": "01/31/1980",
            "content": '{"brand_name":"","GF":"0"}',
        }
    )
    user = bundle["users"][0]
    assert user["user_id"] == 36167229
    assert user["phone1"] == "12129871234"
    assert user["phone2"] is None
    assert user["unique_id"] == "12387654"
    assert user["first_name"] is None
    assert user["locale"] == "en_US"
    assert user["birthday"] == date(1980, 1, 31)
    assert user["content__GF"] == "0"
    assert bundle["object"]["user_id"] == 36167229


def test_a_lone_child_object_is_a_list_of_one():
    child = {
        "id": 460525246,
        "objectId": 62824402,
        "createdTime": "2024-08-17T07:51:52.2581942Z",
        "message": "x",
    }
    bundle = bundle_of(childs=child)
    assert [c["child_id"] for c in bundle["childs"]] == [460525246]


def test_child_object_id_spellings_and_sender_side():
    childs = [
        {
            "id": 978944,
            "object_id": "1234",
            "createdTime": "2024-08-06T07:55:52.2581942Z",
            "message": "some other message...",
            "user": {"id": 520803, "managerId": 520803, "isManager": True, "identity": {"id": 531811}},
        },
        {
            "id": 123456,
            "objectId": 1234,
            "createdTime": "2024-08-06T07:51:52.2581942Z",
            "user": {"id": 520760, "managerId": 0, "isManager": "false", "identity": {"id": 531826}},
        },
    ]
    rows = bundle_of(childs=childs)["childs"]
    assert [(r["child_id"], r["object_id"], r["is_manager"], r["manager_id"]) for r in rows] == [
        (978944, 62824402, True, 520803),
        (123456, 62824402, False, None),
    ]
    assert [r["position"] for r in rows] == [0, 1]  # newest first, as listed


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"num_likes":5,"user_likes":false}', {"num_likes": 5, "user_likes": False}),
        (
            '{ "{\\"subject\\":\\"RE: hi\\",\\"attachments\\":null}" },   ',
            {"subject": "RE: hi", "attachments": None},
        ),
        ('{"guidRT":"82c9","isConnected"true}', None),  # not JSON: kept raw only
        ("null", None),
    ],
)
def test_content_json_string_is_parsed_when_it_can_be(raw, expected):
    assert parse_json_text(raw) == expected


def test_content_is_kept_raw_and_parsed_into_columns():
    row = bundle_of(content='{"subject":"Re: checking up","is_email":false}')["object"]
    assert row["content"] == '{"subject":"Re: checking up","is_email":false}'
    assert row["content__subject"] == "Re: checking up"
    assert row["content__is_email"] is False
    broken = bundle_of(content='{"isConnected"true}')["object"]
    assert broken["content"] == '{"isConnected"true}'
    assert not any(key.startswith("content__") for key in broken)


def test_unmapped_fields_are_kept():
    row = bundle_of(brandNewField="x", priorityScore=3)["object"]
    assert row["brandNewField"] == "x"
    assert row["priorityScore"] == 3


def test_activities_have_stable_ids_and_change_columns():
    items = [
        {
            "objectId": "383591",
            "user": {"id": 536267, "first_name": "Sam", "identity": {"identityId": 547219}},
            "type": 2,
            "data": '{"oldStatus": 1, "newStatus": "2"}',
            "createdTime": "2024-10-30T13:23:33",
        },
        {
            "objectId": "383591",
            "type": 6,
            "data": '{"oldManagerId":0,"newManagerId":571562}',
            "createdTime": "2024-10-30T13:23:34",
        },
    ]
    first = activity_rows(items, 383591, 17, 2, Warnings())
    again = activity_rows(items, 383591, 17, 2, Warnings())
    assert [r["activity_id"] for r in first] == [r["activity_id"] for r in again]
    assert (first[0]["status_from_id"], first[0]["status_to_id"]) == (1, 2)
    assert first[0]["created_at"] == datetime(2024, 10, 30, 13, 23, 33, tzinfo=UTC)
    assert (first[1]["manager_from_id"], first[1]["manager_to_id"]) == (None, 571562)
    assert first[0]["identity_id"] == 547219


def test_identical_activities_stay_two_rows():
    item = {"objectId": "1", "type": 1, "data": '{"text":"same"}', "createdTime": "2024-10-30T13:23:33"}
    rows = activity_rows([item, dict(item)], 1, 17, 1, Warnings())
    assert len({r["activity_id"] for r in rows}) == 2


def test_transcript_field_spelled_trasncript():
    row = transcript_row(
        {"objectId": 378015, "streamid": 17558, "trasncript": "\\n[2/29/2024] Bot: hi"}, 378015, 1, Warnings()
    )
    assert row["transcript"] == "\\n[2/29/2024] Bot: hi"
    assert row["stream_id"] == 17558


def test_manager_identity_as_string_and_team_list():
    row = manager_row(
        {"id": 520760, "identityId": "2192427", "team": "2343,2445,4342", "permissionId": 5}, Warnings()
    )
    assert (row["identity_id"], row["team_ids"], row["is_bot"]) == (2192427, "2343,2445,4342", True)


def test_an_identity_named_with_and_without_its_email_keeps_the_email():
    """The customer's identity in the conversation's `user` block has no e-mail address; the same
    identity as the sender of the customer's messages has one: the bundle keeps one row, with it."""
    raw = {
        "objectId": 9,
        "streamId": 3,
        "createdTime": "2024-03-01T10:00:00Z",
        "updatedTime": "2024-03-01T10:05:00Z",
        "user": {"id": 5, "identity": {"identityId": 77, "streamProviderId": "p-1", "firstName": "Dana"}},
        "childs": [
            {
                "id": 1,
                "createdTime": "2024-03-01T10:00:00Z",
                "user": {
                    "id": 5,
                    "isManager": False,
                    "identity": {"identityId": 77, "streamProviderEmail": "dana@example.com"},
                },
            }
        ],
    }
    bundle = object_bundle(raw, 3, Warnings())
    assert bundle["identities"] == [
        {
            "identity_id": 77,
            "user_id": 5,
            "stream_provider_id": "p-1",
            "first_name": "Dana",
            "stream_provider_email": "dana@example.com",
        }
    ]
