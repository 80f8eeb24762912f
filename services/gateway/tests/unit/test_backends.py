"""gRPC status + POSTD trailing metadata -> problem documents."""

from __future__ import annotations

import grpc
from google.protobuf.any_pb2 import Any as AnyMessage
from google.rpc import status_pb2  # type: ignore[import-untyped]

from postd.common.v1 import common_pb2 as common
from postd_gateway.backends import problem_from_rpc, rest_field


def rpc_error(code, details="", metadata=()):
    return grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), grpc.aio.Metadata(*metadata), details=details
    )


def test_codes_and_fields_come_from_metadata():
    problem = problem_from_rpc(
        rpc_error(
            grpc.StatusCode.FAILED_PRECONDITION,
            "Instagram is disabled for this tenant.",
            (("postd-error-code", "platform_disabled"), ("postd-error-field", "platform")),
        ),
        {},
    )
    assert (problem.status, problem.code) == (409, "platform_disabled")
    assert problem.detail == "Instagram is disabled for this tenant."
    assert [e.field for e in problem.errors] == ["platform"]


def test_retry_after_is_passed_on():
    problem = problem_from_rpc(
        rpc_error(grpc.StatusCode.UNAVAILABLE, "db down", (("postd-retry-after", "2.5"),)), {}
    )
    assert problem.status == 503
    assert problem.headers["Retry-After"] == "3"
    assert (
        problem_from_rpc(rpc_error(grpc.StatusCode.UNAVAILABLE), {}).headers["Retry-After"] == "1"
    )


def test_internal_details_are_not_shown():
    problem = problem_from_rpc(
        rpc_error(grpc.StatusCode.INTERNAL, "Traceback ... access_token=EAAB123"), {}
    )
    assert problem.status == 502
    assert "EAAB" not in problem.detail
    refused = problem_from_rpc(rpc_error(grpc.StatusCode.PERMISSION_DENIED, "gateway may not"), {})
    assert (refused.status, refused.code) == (502, "backend_refused")


def test_a_validation_report_becomes_a_422_with_fields():
    report = common.ValidationReport(valid=False)
    target = report.targets.add(valid=False, platform="instagram")
    target.violations.add(
        field="content.text",
        code="text_too_long",
        message="Too long.",
        severity=common.VIOLATION_SEVERITY_ERROR,
    )
    target.violations.add(
        field="content.link",
        code="link_ignored",
        message="Not shown.",
        severity=common.VIOLATION_SEVERITY_WARNING,
    )
    packed = AnyMessage()
    packed.Pack(report)
    status = status_pb2.Status(code=3, message="invalid", details=[packed])
    problem = problem_from_rpc(
        rpc_error(
            grpc.StatusCode.INVALID_ARGUMENT,
            "invalid",
            (("grpc-status-details-bin", status.SerializeToString()),),
        ),
        {},
    )
    assert (problem.status, problem.code) == (422, "validation_failed")
    assert [(e.field, e.message) for e in problem.errors] == [("content.text", "Too long.")]


def test_rest_field_names():
    assert rest_field("page_token", {}) == "cursor"
    assert rest_field("statuses", {"statuses": "status"}) == "status"
    assert rest_field("filter.categories", {"filter.categories": "category"}) == "category"
    assert rest_field("targets[0].content.text", {}) == "targets[0].content.text"
    assert (
        problem_from_rpc(
            rpc_error(grpc.StatusCode.NOT_FOUND, "gone", (("postd-error-code", "Bad Code!"),)), {}
        ).code
        == "not_found"
    )
