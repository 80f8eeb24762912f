"""Domain errors map to the gRPC status codes callers act on."""

from __future__ import annotations

import grpc
import pytest

from postd_common import errors
from postd_common.grpcutil import MD_ERROR_CODE, MD_RETRY_AFTER, error_metadata, status_for


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.NotFound("x"), grpc.StatusCode.NOT_FOUND),
        (errors.Conflict("x"), grpc.StatusCode.ABORTED),
        (errors.FailedPrecondition("x"), grpc.StatusCode.FAILED_PRECONDITION),
        (errors.DataLoss("x"), grpc.StatusCode.DATA_LOSS),
        (errors.Unavailable("x", retry_after=2.5), grpc.StatusCode.UNAVAILABLE),
    ],
)
def test_status_for_each_domain_error(error: errors.DomainError, code: grpc.StatusCode) -> None:
    assert status_for(error) == code


def test_subclasses_map_like_their_base() -> None:
    class StoreDown(errors.Unavailable):
        pass

    assert status_for(StoreDown("db down")) == grpc.StatusCode.UNAVAILABLE


def test_metadata_carries_code_and_retry_advice() -> None:
    md = dict(error_metadata(errors.Unavailable("kms down", retry_after=2.5)))
    assert md[MD_ERROR_CODE] == "unavailable"
    assert md[MD_RETRY_AFTER] == "2.5"
    assert dict(error_metadata(errors.DataLoss("bad")))[MD_ERROR_CODE] == "data_loss"
