"""Validation over real HTTP: every 422 names its field, and nothing refused is stored."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.e2e.support import (
    Server,
    create_meter,
    error_of,
    hours_ago,
    iso,
    ok,
    send,
    uid,
    wait_events,
    wait_value,
)


def refused(server: Server, event: dict[str, Any], field: str) -> dict[str, Any]:
    """POST the event alone and in a batch: 422 naming `field` (prefixed in the batch)."""
    error = error_of(server.client.post("/v1/usage-events", json=event), 422)
    assert error["type"] == "validation_error"
    assert error["field"] == field, error
    body = ok(server.client.post("/v1/usage-events/batch", json={"events": [{}, event]}))
    assert body["rejected"] == 2
    assert body["results"][1]["status"] == "rejected"
    assert body["results"][1]["error"]["field"] == f"events.1.{field}"
    return error


def assert_nothing_stored(server: Server, customer: str) -> None:
    """Only a marker sent afterwards is listed for the customer."""
    marker = send(server.client, event_type=uid("marker"), customer=customer)
    assert [e["id"] for e in wait_events(server.client, 1, customer=customer)] == [marker["id"]]


def test_timestamp_more_than_5_minutes_ahead(server: Server) -> None:
    customer, event_type = uid("cus"), uid("t")
    ahead = datetime.now(UTC) + timedelta(minutes=10)
    event = {"event_type": event_type, "customer": customer, "timestamp": iso(ahead)}
    refused(server, event, "timestamp")
    assert_nothing_stored(server, customer)
    soon = datetime.now(UTC) + timedelta(minutes=2)  # within the allowed clock skew
    reply = send(server.client, event_type=event_type, customer=uid("cus"), timestamp=iso(soon))
    assert reply["timestamp"] == iso(soon)


def test_timestamp_older_than_35_days(server: Server) -> None:
    customer, event_type = uid("cus"), uid("t")
    old = datetime.now(UTC) - timedelta(days=35, minutes=5)
    refused(
        server, {"event_type": event_type, "customer": customer, "timestamp": iso(old)}, "timestamp"
    )
    assert_nothing_stored(server, customer)
    recent = datetime.now(UTC) - timedelta(days=34, hours=23)
    reply = send(server.client, event_type=event_type, customer=uid("cus"), timestamp=iso(recent))
    assert reply["timestamp"] == iso(recent)


def test_timestamp_that_is_not_rfc3339(server: Server) -> None:
    for text in ("yesterday", "2026-13-01T00:00:00Z", "1717000000"):
        refused(server, {"event_type": "t", "customer": uid("cus"), "timestamp": text}, "timestamp")


def test_properties_with_more_than_50_keys(server: Server) -> None:
    customer, event_type = uid("cus"), uid("t")
    too_many = {f"p{i}": i for i in range(51)}
    event = {"event_type": event_type, "customer": customer, "properties": too_many}
    refused(server, event, "properties")
    assert_nothing_stored(server, customer)
    fifty = {f"p{i}": i for i in range(50)}
    assert send(server.client, event_type=event_type, customer=uid("cus"), properties=fifty)


def test_metadata_with_more_than_50_keys(server: Server) -> None:
    metadata = {f"m{i}": "x" for i in range(51)}
    refused(server, {"event_type": "t", "customer": uid("cus"), "metadata": metadata}, "metadata")


@pytest.mark.parametrize(
    "value", [{"nested": "object"}, ["a", "list"], None], ids=["object", "list", "null"]
)
def test_property_values_must_be_flat(server: Server, value: Any) -> None:
    customer = uid("cus")
    event = {"event_type": "t", "customer": customer, "properties": {"ok": 1, "model": value}}
    refused(server, event, "properties.model")
    assert_nothing_stored(server, customer)


def test_missing_customer(server: Server) -> None:
    refused(server, {"event_type": "t", "value": 1}, "customer")
    refused(server, {"event_type": "t", "customer": ""}, "customer")


def test_missing_both_event_type_and_meter_id(server: Server) -> None:
    customer = uid("cus")
    error = refused(server, {"customer": customer, "value": 3}, "event_type")
    assert "meter_id" in error["message"]
    assert_nothing_stored(server, customer)


def test_unknown_meter_id(server: Server) -> None:
    customer = uid("cus")
    refused(server, {"meter_id": uid("met_nope"), "customer": customer}, "meter_id")
    assert_nothing_stored(server, customer)


def test_customer_and_customer_id_that_differ(server: Server) -> None:
    refused(server, {"event_type": "t", "customer": "a", "customer_id": "b"}, "customer_id")


def test_idempotency_key_length(server: Server) -> None:
    refused(server, {"idempotency_key": "", "event_type": "t", "customer": "c"}, "idempotency_key")
    long = "k" * 256
    refused(
        server, {"idempotency_key": long, "event_type": "t", "customer": "c"}, "idempotency_key"
    )
    key = uid("k").ljust(255, "k")
    reply = send(server.client, idempotency_key=key, event_type="t", customer=uid("cus"))
    assert reply["idempotency_key"] == key


def test_value_must_be_a_finite_number(server: Server) -> None:
    for value in ("NaN", "Infinity", "-Infinity"):
        refused(server, {"event_type": "t", "customer": uid("cus"), "value": value}, "value")
    for value in ("twelve", True, [1]):
        refused(server, {"event_type": "t", "customer": uid("cus"), "value": value}, "value")


def test_unknown_field(server: Server) -> None:
    refused(server, {"event_type": "t", "customer": "c", "quantity": 5}, "quantity")


def test_event_failing_a_meter_schema_names_the_property(server: Server) -> None:
    c, event_type, customer = server.client, uid("llm"), uid("cus")
    meter = uid("tok")
    create_meter(
        c,
        key=meter,
        event_type=event_type,
        aggregation="SUM",
        value_property="tokens",
        schema={"required": {"tokens": "number"}},
    )
    for props in ({}, {"tokens": "many"}, {"tokens": True}, {"model": "x"}):
        event = {"event_type": event_type, "customer": customer, "properties": props}
        error = refused(server, event, "properties.tokens")
        assert "tokens" in error["message"]
    # the same through meter_id
    event = {"meter_id": meter, "customer": customer, "properties": {"tokens": "lots"}}
    refused(server, event, "properties.tokens")
    assert_nothing_stored(server, customer)
    other = uid("cus")
    r = hours_ago(20)
    send(c, event_type=event_type, customer=other, timestamp=iso(r), properties={"tokens": "2.5"})
    send(c, event_type=event_type, customer=other, timestamp=iso(r), properties={"tokens": 10})
    params = {"customer": other, "from": iso(r), "to": iso(r + timedelta(hours=1))}
    assert wait_value(c, meter, "12.5", params) == "12.5"


def test_json_that_is_not_an_object(server: Server) -> None:
    c = server.client
    for body in ([], "event", 5):
        error = error_of(c.post("/v1/usage-events", json=body), 422)
        assert error["type"] == "validation_error"
    error = error_of(c.post("/v1/usage-events/batch", json={"events": "all"}), 422)
    assert error["field"] == "events"
    error_of(c.post("/v1/usage-events/batch", json={"evts": []}), 422)


def test_meter_definition_errors(server: Server) -> None:
    c, key = server.client, uid("m")
    create_meter(c, key=key, event_type="t", aggregation="COUNT")
    error = error_of(
        c.post("/v1/meters", json={"key": key, "event_type": "t", "aggregation": "SUM"}), 409
    )
    assert error["field"] == "key"
    cases = [
        ({"key": uid("m"), "event_type": "t", "aggregation": "MEDIAN"}, "aggregation"),
        ({"key": uid("m"), "event_type": "t", "aggregation": "UNIQUE_COUNT"}, "unique_property"),
        ({"key": uid("m"), "aggregation": "COUNT"}, "event_type"),
        ({"event_type": "t", "aggregation": "COUNT"}, "key"),
        (
            {
                "key": uid("m"),
                "event_type": "t",
                "aggregation": "COUNT",
                "filters": [{"property": "x", "operator": "like", "value": "a"}],
            },
            "filters.0.operator",
        ),
        (
            {
                "key": uid("m"),
                "event_type": "t",
                "aggregation": "COUNT",
                "filters": [{"property": "x", "operator": "in", "value": "a"}],
            },
            "filters.0.value",
        ),
        (
            {
                "key": uid("m"),
                "event_type": "t",
                "aggregation": "COUNT",
                "schema": {"required": {"tokens": "integer"}},
            },
            "schema.required.tokens",
        ),
    ]
    for spec, field in cases:
        error = error_of(c.post("/v1/meters", json=spec), 422)
        assert error["field"] == field, (spec, error)


def test_usage_query_errors(server: Server) -> None:
    c, meter = server.client, uid("m")
    create_meter(c, key=meter, event_type=uid("t"), aggregation="COUNT", group_by=["model"])
    r = hours_ago(10)
    window = {"from": iso(r), "to": iso(r + timedelta(hours=1))}
    path = f"/v1/meters/{meter}/usage"
    error = error_of(c.get(f"/v1/meters/{uid('missing')}/usage", params=window), 404)
    assert error["type"] == "not_found"
    cases = [
        ({**window, "window_size": "WEEK"}, "window_size"),
        ({**window, "time_zone": "Mars/Olympus"}, "time_zone"),
        ({**window, "group_by": "region"}, "group_by"),
        ({"from": window["to"], "to": window["from"]}, "to"),
        ({"from": "last tuesday"}, "from"),
        ({"to": "2026-01-01T00:00:00"}, "to"),  # no offset
    ]
    for params, field in cases:
        error = error_of(c.get(path, params=params), 422)
        assert error["field"] == field, (params, error)
    error = error_of(c.get(f"/v1/customers/{uid('nobody')}/usage"), 404)
    assert error["type"] == "not_found"
    error_of(c.get("/v1/usage-events", params={"from": "soon"}), 422)
    error_of(c.get("/v1/usage-events", params={"cursor": "%%%"}), 422)
