"""Checks run inside the page: accessibility (axe-core), layout (nothing overlaps,
nothing is cut off) and what the browser console said (CSP refusals, script errors)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

AXE = Path(__file__).with_name("vendor") / "axe-core" / "axe.min.js"
# WCAG 2.1 A and AA (labels, roles, names, contrast, ...) and axe's best practices
# (landmarks, one main, heading order, regions).
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"]


@cache
def _axe_source() -> str:
    return AXE.read_text(encoding="utf-8")


async def axe_violations(page: Any) -> list[str]:
    """Every axe violation on the page as one readable line each (empty: none).

    The script goes in through the DevTools protocol, not a <script> tag, so the
    page's Content-Security-Policy stays exactly as served."""
    if not await page.evaluate("() => typeof window.axe === 'object'"):
        await page.evaluate(_axe_source())
    results = await page.evaluate(
        """async (tags) => {
            const r = await window.axe.run(document, {
                runOnly: { type: "tag", values: tags },
                resultTypes: ["violations"],
            });
            return r.violations.map((v) => ({
                id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.slice(0, 5).map(
                    (n) => n.target.join(" ") + " :: " + n.failureSummary),
            }));
        }""",
        AXE_TAGS,
    )
    return [
        f"{v['id']} ({v['impact']}): {v['help']}\n    " + "\n    ".join(v["nodes"]) for v in results
    ]


LAYOUT_CHECK = Path(__file__).with_name("layout_check.js")


async def layout_problems(page: Any) -> list[str]:
    problems: list[str] = await page.evaluate(LAYOUT_CHECK.read_text(encoding="utf-8"))
    return problems


@dataclass
class Console:
    """What the dashboard printed: errors (CSP refusals are errors) and uncaught
    exceptions, on pages of ``origin`` (the sandbox's consent pages are not ours)."""

    origin: str
    errors: list[str] = field(default_factory=list)

    def attach(self, page: Any) -> None:
        page.on("console", lambda message: self._message(page, message))
        page.on("pageerror", lambda error: self._error(page, error))

    def _ours(self, page: Any) -> bool:
        return str(page.url).startswith(self.origin)

    def _message(self, page: Any, message: Any) -> None:
        if message.type == "error" and self._ours(page):
            where = (message.location or {}).get("url", "")
            self.errors.append(f"{message.text} ({where})" if where else message.text)

    def _error(self, page: Any, error: Any) -> None:
        if self._ours(page):
            self.errors.append(f"uncaught: {error}")
