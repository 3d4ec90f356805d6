"""The server process itself: health, the OpenAPI document, and a restart on the same store."""

from __future__ import annotations

from datetime import timedelta

import httpx

from tests.e2e.support import (
    Server,
    ServerProcess,
    create_meter,
    hours_ago,
    iso,
    ok,
    send,
    uid,
    usage_value,
    wait_events,
    wait_value,
)

CONTRACT_PATHS = ("/v1/usage-events", "/v1/usage-events/batch", "/v1/meters/{key}/usage")


def test_health(server: Server) -> None:
    response = httpx.get(server.base_url + "/health")  # no key needed
    body = ok(response)
    assert body["status"] == "ok"


def openapi(server: Server) -> dict:
    response = httpx.get(server.base_url + "/schema/openapi.json")
    assert "json" in response.headers["content-type"]
    return ok(response)


def test_openapi_document_lists_the_contract_paths(server: Server) -> None:
    document = openapi(server)
    assert document["openapi"].startswith("3.")
    paths = document["paths"]
    for path in CONTRACT_PATHS:
        assert path in paths, sorted(paths)
    assert "post" in paths["/v1/usage-events"]
    assert "get" in paths["/v1/usage-events"]
    assert "post" in paths["/v1/usage-events/batch"]
    assert "get" in paths["/v1/meters/{key}/usage"]
    names = {p["name"] for p in paths["/v1/meters/{key}/usage"]["get"]["parameters"]}
    assert {"customer", "from", "to", "window_size", "time_zone", "group_by"} <= names


def resolve(document: dict, schema: dict) -> dict:
    """A schema with its $ref followed."""
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        schema = document["components"]["schemas"][name]
    return schema


def test_openapi_document_describes_the_request_bodies(server: Server) -> None:
    document = openapi(server)
    paths = document["paths"]
    expected = {
        "/v1/usage-events": {"idempotency_key", "meter_id", "event_type", "customer", "value"},
        "/v1/usage-events/batch": {"events"},
    }
    for path, fields in expected.items():
        body = paths[path]["post"].get("requestBody")
        assert body is not None, path
        schema = resolve(document, body["content"]["application/json"]["schema"])
        assert fields <= set(schema.get("properties", {})), (path, schema)


def test_openapi_document_describes_the_error_envelope(server: Server) -> None:
    document = openapi(server)
    operation = document["paths"]["/v1/usage-events"]["post"]
    assert {"400", "401", "409", "413", "422"} <= set(operation["responses"])
    for code in ("400", "401", "409", "413", "422"):
        schema = resolve(
            document, operation["responses"][code]["content"]["application/json"]["schema"]
        )
        error = resolve(document, schema["properties"]["error"])
        assert {"type", "message", "field"} <= set(error["properties"]), (code, error)


def test_restart_on_the_same_store_keeps_data_and_keys(fresh_server: Server) -> None:
    c, event_type, customer, meter = fresh_server.client, uid("t"), uid("cus"), uid("m")
    create_meter(c, key=meter, event_type=event_type, aggregation="SUM")
    r = hours_ago(5)
    first = send(c, event_type=event_type, customer=customer, value=4, timestamp=iso(r))
    params = {"customer": customer, "from": iso(r), "to": iso(r + timedelta(hours=1))}
    assert wait_value(c, meter, "4", params) == "4"
    fresh_server.process.stop()

    again = ServerProcess(fresh_server.process.database_url, fresh_server.process.workdir)
    try:
        again.start(expect_key=False)
        assert again.key is None  # the development key is printed on the first start only
        with httpx.Client(
            base_url=again.base_url, headers={"Authorization": f"Bearer {fresh_server.key}"}
        ) as client:
            assert [e["id"] for e in wait_events(client, 1, customer=customer)] == [first["id"]]
            assert usage_value(client, meter, params) == "4"
            retry = send(
                client,
                idempotency_key=first["idempotency_key"],
                event_type=event_type,
                customer=customer,
                value=4,
                timestamp=iso(r),
            )
            assert (retry["status"], retry["id"]) == ("duplicate", first["id"])
            send(client, event_type=event_type, customer=customer, value=6, timestamp=iso(r))
            assert wait_value(client, meter, "10", params) == "10"
    finally:
        again.stop()
