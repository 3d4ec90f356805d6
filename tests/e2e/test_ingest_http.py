"""Usage ingestion over real HTTP: both payload shapes, idempotency, batches, limits."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime, timedelta, timezone

import httpx

from tests.e2e.support import (
    Server,
    create_meter,
    error_of,
    iso,
    list_events,
    ok,
    send,
    uid,
    wait_events,
)

MiB = 1024 * 1024


def micro_instant(days: int = 2) -> datetime:
    """`days` ago at 01:07:30.123456 UTC: microseconds that must survive the round trip."""
    day = datetime.now(UTC) - timedelta(days=days)
    return day.replace(hour=1, minute=7, second=30, microsecond=123456)


def test_meter_id_shape_is_stored_with_its_microsecond_timestamp(server: Server) -> None:
    c = server.client
    meter, customer, key = uid("met_tokens"), uid("cus"), uid("evt")
    create_meter(c, key=meter, event_type=uid("tokens"), aggregation="SUM")
    at = micro_instant()
    stamp = iso(at)
    assert stamp.endswith(".123456Z")
    reply = send(
        c,
        idempotency_key=key,
        meter_id=meter,
        customer=customer,
        value=450,
        timestamp=stamp,
        properties={"model": "gpt-x", "region": "eu"},
    )
    assert reply["id"].startswith("evt_")
    assert reply["object"] == "usage_event"
    assert reply["status"] == "accepted"
    assert reply["idempotency_key"] == key
    assert reply["meter_id"] == meter
    assert reply["customer"] == customer
    assert reply["value"] == "450"
    assert reply["timestamp"] == stamp
    assert reply["created_at"].endswith("Z")

    [stored] = wait_events(c, 1, customer=customer)
    assert stored["id"] == reply["id"]
    assert stored["timestamp"] == stamp
    assert stored["value"] == "450"
    assert stored["meter_id"] == meter
    assert stored["idempotency_key"] == key
    assert stored["properties"] == {"model": "gpt-x", "region": "eu"}
    assert stored["status"] == "accepted"


def test_event_type_shape_with_customer_id_and_metadata(server: Server) -> None:
    c = server.client
    event_type, customer = uid("api_call"), uid("cus")
    stamp = iso(micro_instant(days=3))
    reply = send(
        c,
        event_type=event_type,
        customer_id=customer,
        timestamp=stamp,
        properties={"endpoint": "/search", "cached": False, "bytes": 512},
        metadata={"request_id": "req_42", "sdk": {"name": "py", "version": "1.2"}},
    )
    assert reply["status"] == "accepted"
    assert reply["event_type"] == event_type
    assert reply["customer"] == customer
    assert reply["value"] == "1"  # value defaults to 1
    assert reply["timestamp"] == stamp

    [stored] = wait_events(c, 1, customer=customer)
    assert stored["id"] == reply["id"]
    assert stored["event_type"] == event_type
    assert stored["timestamp"] == stamp
    assert stored["properties"] == {"endpoint": "/search", "cached": False, "bytes": 512}
    assert stored["metadata"] == {"request_id": "req_42", "sdk": {"name": "py", "version": "1.2"}}
    assert list_events(c, customer=customer, event_type=event_type) == [stored]
    assert list_events(c, customer=customer, event_type=uid("other")) == []


def test_offset_timestamp_is_answered_in_utc(server: Server) -> None:
    at = micro_instant(days=4)
    local = at.astimezone(timezone(timedelta(hours=5, minutes=30))).isoformat()
    assert local.endswith("+05:30")
    reply = send(server.client, event_type=uid("t"), customer=uid("cus"), timestamp=local)
    assert reply["timestamp"] == iso(at)


def test_values_are_exact_decimals(server: Server) -> None:
    c, customer, event_type = server.client, uid("cus"), uid("t")
    assert send(c, event_type=event_type, customer=customer, value=0.1)["value"] == "0.1"
    assert send(c, event_type=event_type, customer=customer, value="2.50")["value"] == "2.50"
    assert send(c, event_type=event_type, customer=customer, value="892300")["value"] == "892300"
    raw = b'{"event_type": "%s", "customer": "%s", "value": 0.30000000000000004}' % (
        event_type.encode(),
        customer.encode(),
    )
    assert ok(c.post("/v1/usage-events", content=raw))["value"] == "0.30000000000000004"
    values = sorted(e["value"] for e in wait_events(c, 4, customer=customer))
    assert values == ["0.1", "0.30000000000000004", "2.50", "892300"]


def test_defaults_key_value_and_timestamp(server: Server) -> None:
    c, customer, event_type = server.client, uid("cus"), uid("t")
    before = datetime.now(UTC) - timedelta(seconds=5)
    first = send(c, event_type=event_type, customer=customer)
    after = datetime.now(UTC) + timedelta(seconds=5)
    assert first["value"] == "1"
    assert first["idempotency_key"]  # assigned by the server and returned
    sent_at = datetime.fromisoformat(first["timestamp"].replace("Z", "+00:00"))
    assert before <= sent_at <= after
    # without a key, the same event sent again is a new event
    second = send(c, event_type=event_type, customer=customer)
    assert second["status"] == "accepted"
    assert second["id"] != first["id"]
    assert second["idempotency_key"] != first["idempotency_key"]
    assert len(wait_events(c, 2, customer=customer)) == 2


def test_retry_with_same_payload_is_a_duplicate_with_the_same_id(server: Server) -> None:
    c, customer, key = server.client, uid("cus"), uid("evt")
    at = micro_instant(days=1)
    event = {
        "idempotency_key": key,
        "event_type": uid("t"),
        "customer": customer,
        "value": 7,
        "timestamp": iso(at),
        "properties": {"model": "m1"},
    }
    first = send(c, **event)
    again = send(c, **event)
    assert first["status"] == "accepted"
    assert again["status"] == "duplicate"
    assert again["id"] == first["id"]
    assert again["created_at"] == first["created_at"]
    assert again["timestamp"] == first["timestamp"]
    # the same instant written with another offset is the same payload
    shifted = {**event, "timestamp": at.astimezone(timezone(timedelta(hours=-4))).isoformat()}
    assert send(c, **shifted) == again
    assert [e["id"] for e in wait_events(c, 1, customer=customer)] == [first["id"]]


def test_retry_without_timestamp_answers_the_original_timestamp(server: Server) -> None:
    c, key = server.client, uid("evt")
    event = {"idempotency_key": key, "event_type": uid("t"), "customer": uid("cus")}
    first = send(c, **event)
    again = send(c, **event)
    assert again["status"] == "duplicate"
    assert again["id"] == first["id"]
    assert again["timestamp"] == first["timestamp"]


def test_a_retried_batch_answers_duplicates_with_the_original_ids(server: Server) -> None:
    c, customer, event_type = server.client, uid("cus"), uid("t")
    events = [
        {"idempotency_key": uid("a"), "event_type": event_type, "customer": customer},
        {"idempotency_key": uid("b"), "event_type": event_type, "customer": customer, "value": 2},
    ]
    first = ok(c.post("/v1/usage-events/batch", json={"events": events}))
    again = ok(c.post("/v1/usage-events/batch", json={"events": events}))
    assert (again["accepted"], again["duplicates"], again["rejected"]) == (0, 2, 0)
    assert [r["id"] for r in again["results"]] == [r["id"] for r in first["results"]]
    assert [r["status"] for r in again["results"]] == ["duplicate", "duplicate"]
    assert len(wait_events(c, 2, customer=customer)) == 2
    empty = ok(c.post("/v1/usage-events/batch", json={"events": []}))
    assert empty == {"accepted": 0, "duplicates": 0, "rejected": 0, "results": []}


def test_same_key_with_another_payload_is_409(server: Server) -> None:
    c, customer, key, event_type = server.client, uid("cus"), uid("evt"), uid("t")
    first = send(c, idempotency_key=key, event_type=event_type, customer=customer, value=5)
    response = c.post(
        "/v1/usage-events",
        json={"idempotency_key": key, "event_type": event_type, "customer": customer, "value": 6},
    )
    error = error_of(response, 409)
    assert error["type"] == "conflict"
    assert error["field"] == "idempotency_key"
    [stored] = wait_events(c, 1, customer=customer)
    assert stored["id"] == first["id"]
    assert stored["value"] == "5"


def test_batch_with_valid_invalid_and_duplicate_events(server: Server) -> None:
    c, customer, event_type = server.client, uid("cus"), uid("t")
    at = micro_instant(days=2)
    earlier = {"idempotency_key": uid("k0"), "event_type": event_type, "customer": customer}
    original = send(c, **earlier, value=3, timestamp=iso(at))
    k1, k3 = uid("k1"), uid("k3")
    events = [
        {"idempotency_key": k1, "event_type": event_type, "customer": customer, "value": 1},
        {  # too old
            "idempotency_key": uid("k2"),
            "event_type": event_type,
            "customer": customer,
            "timestamp": iso(datetime.now(UTC) - timedelta(days=40)),
        },
        {**earlier, "value": 3, "timestamp": iso(at)},  # a retry of a stored event
        {
            "idempotency_key": k3,
            "event_type": event_type,
            "customer": customer,
            "value": "2.5",
            "timestamp": iso(at + timedelta(minutes=1)),
        },
        {"idempotency_key": k1, "event_type": event_type, "customer": customer, "value": 1},
        {**earlier, "value": 4, "timestamp": iso(at)},  # the stored key, another payload
        7,  # not an object
        {"idempotency_key": uid("k7"), "event_type": event_type},  # no customer
    ]
    body = ok(c.post("/v1/usage-events/batch", json={"events": events}))
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (2, 2, 4)
    results = body["results"]
    assert [r["index"] for r in results] == list(range(8))
    assert [r["status"] for r in results] == [
        "accepted",
        "rejected",
        "duplicate",
        "accepted",
        "duplicate",
        "rejected",
        "rejected",
        "rejected",
    ]
    assert results[2]["id"] == original["id"]
    assert results[4]["id"] == results[0]["id"]
    assert results[1]["error"]["field"] == "events.1.timestamp"
    assert results[1]["error"]["type"] == "validation_error"
    assert results[5]["error"]["field"] == "events.5.idempotency_key"
    assert results[5]["error"]["type"] == "conflict"
    assert results[6]["error"]["field"] == "events.6"
    assert results[7]["error"]["field"] == "events.7.customer"
    for r in results:
        if r["status"] == "rejected":
            assert set(r["error"]) == {"type", "message", "field"}
        else:
            assert r["id"].startswith("evt_")

    stored = wait_events(c, 3, customer=customer)
    assert {e["id"] for e in stored} == {original["id"], results[0]["id"], results[3]["id"]}
    assert sorted(e["value"] for e in stored) == ["1", "2.5", "3"]


def test_batch_of_1000_is_accepted_and_1001_is_422(server: Server) -> None:
    c, event_type = server.client, uid("t")
    full, over = uid("cus"), uid("cus")
    events = [
        {"idempotency_key": f"e{i}", "event_type": event_type, "customer": full}
        for i in range(1000)
    ]
    body = ok(c.post("/v1/usage-events/batch", json={"events": events}))
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (1000, 0, 0)
    assert len(body["results"]) == 1000

    too_many = [{**e, "customer": over} for e in events] + [
        {"idempotency_key": "e1000", "event_type": event_type, "customer": over}
    ]
    error = error_of(c.post("/v1/usage-events/batch", json={"events": too_many}), 422)
    assert error["field"] == "events"
    assert len(wait_events(c, 1000, customer=full)) == 1000
    # nothing of the refused batch was stored: a later event is listed alone
    marker = send(c, event_type=event_type, customer=over)
    assert [e["id"] for e in wait_events(c, 1, customer=over)] == [marker["id"]]


def padded(event: dict, size: int) -> bytes:
    """The JSON of `event` padded (in its metadata) to exactly `size` bytes."""
    event = {**event, "metadata": {"pad": ""}}
    bare = len(json.dumps(event).encode())
    event["metadata"]["pad"] = "x" * (size - bare)
    body = json.dumps(event).encode()
    assert len(body) == size
    return body


def test_body_over_1_mib_is_413(server: Server) -> None:
    c, customer, event_type = server.client, uid("cus"), uid("t")
    headers = {"Content-Type": "application/json"}
    exact = padded({"event_type": event_type, "customer": customer}, MiB)
    assert ok(c.post("/v1/usage-events", content=exact, headers=headers))["status"] == "accepted"

    # each refused body on a connection of its own: see test_connection_after_413_...
    over = padded({"event_type": event_type, "customer": customer}, MiB + 1)
    with server.client_for(server.key) as once:
        error = error_of(once.post("/v1/usage-events", content=over, headers=headers), 413)
    assert error["type"] == "body_too_large"

    batch = json.dumps(
        {"events": [{"event_type": event_type, "customer": customer, "metadata": {"p": "x" * MiB}}]}
    ).encode()
    with server.client_for(server.key) as once:
        error_of(once.post("/v1/usage-events/batch", content=batch, headers=headers), 413)
    assert len(wait_events(c, 1, customer=customer)) == 1


def read_response_head(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data.partition(b"\r\n\r\n")[0]


def after_413(server: Server, body: bytes) -> str:
    """Send a too-large request's head, read the 413, then try the connection again: 'closed'
    when the reply said `Connection: close`, 'usable' when a next request is answered,
    'dropped' when the connection died without the reply saying so."""
    head = (
        "POST /v1/usage-events HTTP/1.1\r\nHost: xtopay\r\n"
        f"Authorization: Bearer {server.key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    port = int(server.base_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head)  # the server answers from Content-Length alone
        reply = read_response_head(sock).decode("latin-1")
        assert reply.startswith("HTTP/1.1 413"), reply
        if "connection: close" in reply.lower():
            return "closed"
        try:
            sock.sendall(body + b"GET /health HTTP/1.1\r\nHost: xtopay\r\n\r\n")
            answer = read_response_head(sock)
        except OSError:
            return "dropped"
    return "usable" if answer.startswith(b"HTTP/1.1 200") else "dropped"


def test_connection_after_413_is_closed_or_still_usable(server: Server) -> None:
    body = padded({"event_type": uid("t"), "customer": uid("cus")}, 2 * MiB)
    outcomes: list[str] = []
    while len(outcomes) < 500 and "dropped" not in outcomes:  # the failure is a race
        outcomes.append(after_413(server, body))
    assert "dropped" not in outcomes, f"dropped after {len(outcomes)} tries"


def test_malformed_json_is_400(server: Server) -> None:
    c = server.client
    headers = {"Content-Type": "application/json"}
    bodies = {
        "/v1/usage-events": [b'{"customer": "c", ', b"not json", b"{", b"", b'{"value": 1,}'],
        "/v1/usage-events/batch": [b'{"events": [', b"not json", b"{", b"", b'{"events": [],}'],
    }
    for path, malformed in bodies.items():
        for body in malformed:
            error = error_of(c.post(path, content=body, headers=headers), 400)
            assert error["type"] == "invalid_json"


def test_malformed_json_is_400_whatever_its_first_key(server: Server) -> None:
    c = server.client
    headers = {"Content-Type": "application/json"}
    cases = [
        ("/v1/usage-events/batch", b'{"customer": "c", '),
        ("/v1/usage-events", b'{"events": [}'),
        ("/v1/usage-events", b'{"value": [1, }'),
    ]
    statuses = [c.post(path, content=body, headers=headers).status_code for path, body in cases]
    assert statuses == [400, 400, 400]


def test_missing_or_unknown_key_is_401(server: Server) -> None:
    customer, event_type = uid("cus"), uid("t")
    event = {"event_type": event_type, "customer": customer}
    bad_clients = [
        server.client_for(None),
        server.client_for("xtp_sk_not_a_real_key"),
        httpx.Client(base_url=server.base_url, headers={"Authorization": f"Basic {server.key}"}),
        httpx.Client(base_url=server.base_url, headers={"Authorization": "Bearer"}),
    ]
    for client in bad_clients:
        with client:
            assert error_of(client.post("/v1/usage-events", json=event), 401)
            error_of(client.post("/v1/usage-events/batch", json={"events": [event]}), 401)
            error_of(client.get("/v1/usage-events"), 401)
            error = error_of(client.get(f"/v1/meters/{uid('m')}/usage"), 401)
            assert error["type"] == "authentication_error"
    marker = send(server.client, event_type=event_type, customer=customer)
    assert [e["id"] for e in wait_events(server.client, 1, customer=customer)] == [marker["id"]]


def test_listing_pages_through_events_with_a_cursor(server: Server) -> None:
    c, customer, event_type = server.client, uid("cus"), uid("t")
    at = iso(micro_instant(days=5))
    base = {"event_type": event_type, "customer": customer, "timestamp": at}
    events = [{**base, "idempotency_key": f"p{i}"} for i in range(5)]
    ok(c.post("/v1/usage-events/batch", json={"events": events}))
    everything = wait_events(c, 5, customer=customer)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"customer": customer, "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = ok(c.get("/v1/usage-events", params=params))
        seen += [e["id"] for e in page["data"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == [e["id"] for e in everything]
    assert len(set(seen)) == 5
    for limit in (0, 1001):
        assert error_of(c.get("/v1/usage-events", params={"limit": limit}), 422)["field"] == "limit"
