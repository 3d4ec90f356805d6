"""Standard Webhooks signatures, checked against the specification's reference library."""

from __future__ import annotations

import base64
import time
from datetime import timedelta

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from domain.errors import InvalidInput
from domain.webhooks import (
    MAX_RETRY_DELAY,
    new_signing_secret,
    parse_endpoint,
    retry_delay,
    sign,
    signed_headers,
    subscribes,
)


def test_the_specifications_test_vector() -> None:
    # the example of the Standard Webhooks reference implementations' test suites
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    signature = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_signed_headers_verify_with_the_standardwebhooks_library() -> None:
    secret = new_signing_secret()
    body = b'{"type":"access.blocked","timestamp":"2026-05-01T00:00:00Z","data":{"x":"\xc3\xa9"}}'
    headers = signed_headers(secret, "whe_0123", int(time.time()), body)
    assert Webhook(secret).verify(body, headers) == {
        "type": "access.blocked",
        "timestamp": "2026-05-01T00:00:00Z",
        "data": {"x": "é"},
    }
    with pytest.raises(WebhookVerificationError):
        Webhook(new_signing_secret()).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body + b" ", headers)


def test_secrets_are_whsec_base64_of_32_random_bytes() -> None:
    secret = new_signing_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    assert new_signing_secret() != secret


def test_retry_delays_double_from_the_base_up_to_a_day() -> None:
    assert [retry_delay(30, n).total_seconds() for n in (1, 2, 3, 4)] == [30, 60, 120, 240]
    assert retry_delay(0.2, 1) == timedelta(seconds=0.2)
    assert retry_delay(30, 40) == MAX_RETRY_DELAY


def test_endpoint_validation() -> None:
    url, types, description = parse_endpoint(
        {"url": "https://example.com/hook", "event_types": ["access.blocked", "access.blocked"]}
    )
    assert (url, types, description) == ("https://example.com/hook", ["access.blocked"], None)
    assert subscribes(["*"], "usage.late_event")
    assert not subscribes(["access.blocked"], "access.restored")
    for body, field in (
        ({"event_types": ["*"]}, "url"),
        ({"url": "ftp://x/y", "event_types": ["*"]}, "url"),
        ({"url": "https:///nohost", "event_types": ["*"]}, "url"),
        ({"url": "https://x.example", "event_types": []}, "event_types"),
        ({"url": "https://x.example", "event_types": ["*", "budget.nope"]}, "event_types.1"),
    ):
        with pytest.raises(InvalidInput) as caught:
            parse_endpoint(body)
        assert caught.value.field == field
