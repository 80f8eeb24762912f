"""The runbooks stay honest: every page the index lists exists, every admin command that
a service does not implement yet is marked planned, every metric named is one the code
exports, and every repository path named exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUNBOOKS = ROOT / "docs" / "runbooks"
PAGES = (
    "token-refresh-failures.md",
    "dlq-growing.md",
    "platform-outage.md",
    "kms-key-rotation.md",
    "broker-loss.md",
    "database-failover.md",
    "webhooks.md",
    "publish-backlog.md",
    "slo-burn.md",
)


def text_of(page: str) -> str:
    return (RUNBOOKS / page).read_text()


def code_text() -> str:
    sources = [
        *ROOT.glob("libs/common/postd_common/**/*.py"),
        *ROOT.glob("services/*/postd_*/**/*.py"),
    ]
    return "\n".join(p.read_text() for p in sources)


def test_the_index_lists_every_page() -> None:
    index = text_of("README.md")
    for page in PAGES:
        assert (RUNBOOKS / page).is_file()
        assert f"]({page})" in index


def has_admin_command(package: str) -> bool:
    main = next(ROOT.glob(f"services/*/{package}/__main__.py"), None)
    return main is not None and re.search(r"""["']admin["']""", main.read_text()) is not None


def test_admin_commands_not_yet_implemented_are_marked_planned() -> None:
    for page in ("README.md", *PAGES):
        for number, line in enumerate(text_of(page).splitlines(), 1):
            for package in re.findall(r"python -m (postd_\w+) admin", line):
                if not has_admin_command(package):
                    assert "(planned" in line, f"{page}:{number}: {line.strip()}"
    helper_calls = re.compile(r"^\s*postd_admin \S")
    for number, line in enumerate(text_of("kms-key-rotation.md").splitlines(), 1):
        if helper_calls.match(line) and not has_admin_command("postd_vault"):
            assert "(planned" in line, f"kms-key-rotation.md:{number}: {line.strip()}"


def test_metrics_named_are_exported_by_the_code() -> None:
    code = code_text()
    for page in ("README.md", *PAGES):
        for metric in set(re.findall(r"\bpostd_[a-z_]+_(?:total|seconds)\b", text_of(page))):
            assert f'"{metric.removesuffix("_total")}' in code, f"{page}: {metric}"


def test_repository_paths_named_exist() -> None:
    for page in ("README.md", *PAGES):
        for path in set(
            re.findall(r"\b((?:deploy|protos|libs|services)/[\w.-]+/[\w./-]*\w)", text_of(page))
        ):
            if "<" not in path:
                assert (ROOT / path).exists(), f"{page}: {path}"
