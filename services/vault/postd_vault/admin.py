"""The operator's tool: ``python -m postd_vault admin <command>``.

Talks to a running vault over gRPC as the ``operator`` identity (signing with
``.postd/identity/operator.key``, or ``POSTD_OPERATOR_KEY_FILE``); the vault allows
that identity key management and nothing that reads a secret.

    rotate [--reason TEXT]              new KEK version, made primary at once
                                        (alias: rotate-key)
    rewrap [--batch-size N] [--max-batches N]
                                        move data keys to the primary, batch by batch,
                                        printing progress; safe to stop and run again
    status                              primary, rewrap progress, versions
                                        (alias: rotation-status)
    key-versions                        the versions alone
    disable-version N [--reason TEXT]   disable a version nothing uses ("3", "v3" or
                                        the full id)
    audit [--tenant T] [--since 30d] [--limit N]
                                        latest audit events
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TextIO

import grpc

from postd.vault.v1 import vault_pb2, vault_pb2_grpc
from postd_common.config import ConfigError
from postd_common.grpcutil import open_channel
from postd_common.identity import IdentityError, IdentitySigner
from postd_vault.config import AdminSettings, load_admin_settings

_STATE = {
    vault_pb2.REWRAP_STATE_COMPLETE: "complete",
    vault_pb2.REWRAP_STATE_PENDING: "pending",
    vault_pb2.REWRAP_STATE_RUNNING: "running",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m postd_vault admin", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    # Aliases are the names docs/runbooks use.
    rotate = commands.add_parser(
        "rotate", aliases=["rotate-key"], help="create a new primary KEK version"
    )
    rotate.add_argument("--reason", default="")
    rewrap = commands.add_parser("rewrap", help="rewrap data keys to the primary version")
    rewrap.add_argument("--batch-size", type=int, default=0)
    rewrap.add_argument("--max-batches", type=int, default=0, help="0 = until done")
    commands.add_parser(
        "status", aliases=["rotation-status"], help="rotation status and key versions"
    )
    commands.add_parser("key-versions", help="key versions with their data-key counts")
    disable = commands.add_parser("disable-version", help="disable an unused key version")
    disable.add_argument("version")
    disable.add_argument("--reason", default="")
    audit = commands.add_parser("audit", help="latest audit events")
    audit.add_argument("--tenant", default="")
    audit.add_argument("--since", type=_age, default=None, help="e.g. 30d, 12h, 45m")
    audit.add_argument("--limit", type=int, default=20)
    return parser


_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_COMMANDS = {"rotate-key": "rotate", "rotation-status": "status"}


def _age(text: str) -> timedelta:
    """``30d`` / ``12h`` / ``45m`` / ``90s`` as a duration."""
    number, unit = text[:-1], text[-1:]
    if unit not in _UNITS or not number.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not like 30d, 12h, 45m or 90s")
    return timedelta(seconds=int(number) * _UNITS[unit])


def _reason(given: str, command: str) -> str:
    return given or f"{command} from the admin CLI by {getpass.getuser()}"


async def run_command(
    args: argparse.Namespace, stub: vault_pb2_grpc.VaultServiceStub, out: TextIO, timeout: float
) -> None:
    """Run one command against ``stub``; raises grpc.aio.AioRpcError."""
    command = _COMMANDS.get(args.command, args.command)
    if command == "rotate":
        reply = await stub.RotateKey(
            vault_pb2.RotateKeyRequest(reason=_reason(args.reason, "rotate")), timeout=timeout
        )
        print(f"new primary: {reply.primary.key_version}", file=out)
        print(f"previous:    {reply.previous.key_version}", file=out)
        print("run `python -m postd_vault admin rewrap` to move data keys to it", file=out)
    elif command == "rewrap":
        await _rewrap(stub, args.batch_size, args.max_batches, out, timeout)
    elif command == "status":
        await _status(stub, out, timeout)
    elif command == "key-versions":
        await _versions(stub, out, timeout)
    elif command == "disable-version":
        reply = await stub.DisableKeyVersion(
            vault_pb2.DisableKeyVersionRequest(
                key_version=args.version, reason=_reason(args.reason, "disable-version")
            ),
            timeout=timeout,
        )
        print(f"disabled: {reply.key_version.key_version}", file=out)
    elif command == "audit":
        request = vault_pb2.ListAuditEventsRequest(tenant_id=args.tenant, page_size=args.limit)
        if args.since is not None:
            request.since.FromDatetime(datetime.now(UTC) - args.since)
        reply = await stub.ListAuditEvents(request, timeout=timeout)
        for event in reply.events:
            action = vault_pb2.AuditAction.Name(event.action).removeprefix("AUDIT_ACTION_")
            print(
                f"{event.occurred_at.ToDatetime().isoformat(timespec='seconds')}Z "
                f"{action.lower():<26} {event.actor:<14} ok={event.success!s:<5} "
                f"tenant={event.tenant_id or '-'} connection={event.connection_id or '-'} "
                f"{event.secret_name} {event.key_version} {event.detail}",
                file=out,
            )


async def _rewrap(
    stub: vault_pb2_grpc.VaultServiceStub,
    batch_size: int,
    max_batches: int,
    out: TextIO,
    timeout: float,
) -> None:
    # One batch per call, so progress shows after each commit and Ctrl-C loses nothing.
    total = batches = 0
    while True:
        reply = await stub.RunRewrap(
            vault_pb2.RunRewrapRequest(batch_size=batch_size, max_batches=1), timeout=timeout
        )
        total += reply.rewrapped
        batches += reply.batches
        if reply.batches:
            print(
                f"batch {batches}: rewrapped {reply.rewrapped} ({total} in all), "
                f"{reply.remaining} remain",
                file=out,
                flush=True,
            )
        if reply.complete or reply.batches == 0 or (max_batches and batches >= max_batches):
            break
    state = "complete" if reply.complete else f"{reply.remaining} remain"
    print(f"rewrap: {total} data keys rewrapped in {batches} batches; {state}", file=out)


async def _status(stub: vault_pb2_grpc.VaultServiceStub, out: TextIO, timeout: float) -> None:
    status = await stub.GetRotationStatus(vault_pb2.GetRotationStatusRequest(), timeout=timeout)
    print(f"primary key version: {status.primary_key_version}", file=out)
    print(
        f"data keys: {status.total} total, {status.rewrapped} on the primary, "
        f"{status.remaining} to rewrap ({_STATE.get(status.state, 'unknown')})",
        file=out,
    )
    await _versions(stub, out, timeout)


async def _versions(stub: vault_pb2_grpc.VaultServiceStub, out: TextIO, timeout: float) -> None:
    versions = await stub.ListKeyVersions(
        vault_pb2.ListKeyVersionsRequest(page_size=500), timeout=timeout
    )
    for version in versions.key_versions:
        state = vault_pb2.KeyVersionState.Name(version.state).removeprefix("KEY_VERSION_STATE_")
        mark = "*" if version.primary else " "
        print(
            f" {mark} {version.key_version}  {state.lower():<8} "
            f"{version.data_key_count} data keys  ({version.provider})",
            file=out,
        )


async def _main_async(args: argparse.Namespace, settings: AdminSettings) -> int:
    try:
        signer = IdentitySigner.from_file("operator", settings.operator_key_file)
    except (OSError, IdentityError, ValueError):
        print(
            f"no usable operator key at {settings.operator_key_file}: `make up` creates "
            "one; elsewhere mount the operator's key and set POSTD_OPERATOR_KEY_FILE",
            file=sys.stderr,
        )
        return 2
    channel = open_channel(settings.vault_addr, signer=signer, audience="vault")
    try:
        await run_command(
            args, vault_pb2_grpc.VaultServiceStub(channel), sys.stdout, settings.timeout_seconds
        )
    except grpc.aio.AioRpcError as exc:
        print(f"vault refused: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    finally:
        await channel.close()
    return 0


def main(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    args = _parser().parse_args(list(argv))
    try:
        settings = load_admin_settings(environ)
    except ConfigError as exc:
        print("invalid configuration: " + "; ".join(exc.problems), file=sys.stderr)
        return 2
    try:
        return asyncio.run(_main_async(args, settings))
    except KeyboardInterrupt:
        print("interrupted; committed batches stay done", file=sys.stderr)
        return 130
