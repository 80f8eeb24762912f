"""``make audit`` (tools/audit.py): it audits the lock file as locked, and without the
vulnerability database it fails saying so — it never passes without having looked."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_audit() -> ModuleType:
    spec = importlib.util.spec_from_file_location("postd_audit", ROOT / "tools/audit.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_unreachable_database_fails_loudly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    audit = load_audit()
    monkeypatch.setattr(audit, "reachable", lambda host, port: "gaierror: no such host")
    ran: list[Any] = []
    monkeypatch.setattr(audit.subprocess, "run", lambda *a, **k: ran.append(a))
    assert audit.main() == 2
    assert not ran  # pip-audit was not run, and nothing pretends it was
    assert "nothing was audited" in capsys.readouterr().err


def test_reachable_database_audits_the_lock_as_locked(monkeypatch: pytest.MonkeyPatch) -> None:
    audit = load_audit()
    monkeypatch.setattr(audit, "reachable", lambda host, port: None)
    seen: list[list[str]] = []

    class Done:
        returncode = 1  # a finding

    def run(command: list[str], **kwargs: Any) -> Done:
        seen.append(command)
        return Done()

    monkeypatch.setattr(audit.subprocess, "run", run)
    assert audit.main() == 1  # a finding fails the target
    command = seen[0]
    assert command[1:3] == ["-m", "pip_audit"]
    for flag in ("--require-hashes", "--disable-pip", "--strict"):
        assert flag in command
    assert command[command.index("--requirement") + 1].endswith("requirements.lock")


def test_every_locked_requirement_is_pinned_with_hashes() -> None:
    """What --require-hashes --disable-pip needs: no resolution, exact versions."""
    text = (ROOT / "requirements.lock").read_text()
    entries = re.split(
        r"\n(?=[A-Za-z0-9])", text.split("\n", 1)[1] if text.startswith("#") else text
    )
    requirements = [e for e in entries if e.strip() and not e.lstrip().startswith("#")]
    assert len(requirements) > 50
    for entry in requirements:
        head = entry.split("\\", 1)[0].strip()
        assert re.match(r"^[A-Za-z0-9_.\[\],-]+==[^\s;]+", head), head
        assert "--hash=sha256:" in entry, head
