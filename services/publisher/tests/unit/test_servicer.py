"""Page tokens are opaque, bound to their filters, and refuse tampering."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from postd.publisher.v1 import publisher_pb2 as pb
from postd_common.errors import InvalidArgument
from postd_publisher.ports import Cursor
from postd_publisher.servicer import decode_token, encode_token, page_size


def test_a_token_round_trips_for_the_same_filters() -> None:
    request = pb.ListJobsRequest(tenant_id="t", platform="facebook", page_size=10)
    cursor = Cursor(datetime(2030, 1, 1, tzinfo=UTC), "b5e0c7a2-5f3e-4c1e-9a57-2d1f3c4b5a69")
    token = encode_token(cursor, request)
    # Page size and the token itself may change between pages; filters may not.
    follow = pb.ListJobsRequest(tenant_id="t", platform="facebook", page_size=50, page_token=token)
    assert decode_token(token, follow) == cursor
    other = pb.ListJobsRequest(tenant_id="t", platform="linkedin", page_token=token)
    with pytest.raises(InvalidArgument):
        decode_token(token, other)


@pytest.mark.parametrize("token", ["not-base64!", "e30", "eyJhdCI6IDF9"])
def test_malformed_tokens_are_invalid_argument(token: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        decode_token(token, pb.ListJobsRequest(tenant_id="t"))
    assert info.value.field == "page_token"


def test_page_size_defaults_and_clamps() -> None:
    assert page_size(0) == 50
    assert page_size(10_000) == 500
    with pytest.raises(InvalidArgument):
        page_size(-1)
