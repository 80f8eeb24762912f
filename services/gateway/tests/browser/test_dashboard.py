"""The dashboard in real headless Chromium against the whole stack (`make up` on free
ports): sign in with the dev key, connect Meta and LinkedIn on the sandbox's consent
pages, create a post to two platforms (blocked while it is over LinkedIn's limit,
then published), see a revoked connection's badge after Refresh now and reconnect it.
Every page passes axe-core and the layout check; screenshots of the three main pages
are saved at 1280x800 in test-artifacts/screenshots/."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from .checks import Console, axe_violations, layout_problems
from .conftest import Stack

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.timeout(600)]

VIEWPORT = {"width": 1280, "height": 800}
# The Meta user the sandbox's consent page signs in as by default.
META_USER = "10000000000001"


async def check_page(page: Any, what: str) -> None:
    """axe-core and the layout check, at the top of the page."""
    await page.evaluate("() => window.scrollTo(0, 0)")
    violations = await axe_violations(page)
    assert not violations, f"accessibility violations on {what}:\n" + "\n".join(violations)
    problems = await layout_problems(page)
    assert not problems, f"layout problems on {what}:\n" + "\n".join(problems)


async def sign_in(page: Any, stack: Stack) -> None:
    await page.goto(stack.gateway + "/")
    await page.wait_for_url(re.compile(r"/sign-in"))
    await page.get_by_label("API key").fill(stack.api_key)
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_role("heading", name="Linked accounts", level=1).wait_for()


async def approve_consent(page: Any, stack: Stack, platform: str) -> None:
    """On the sandbox's own consent page (a real HTML form), approve."""
    await page.wait_for_url(re.compile(re.escape(stack.sandbox)))
    await page.get_by_role("heading", name=re.compile(rf"{platform} \(sandbox\)")).wait_for()
    await page.get_by_role("button", name="Approve").click()
    await page.wait_for_url(re.compile(re.escape(stack.gateway) + r"/(\?.*)?$"))


async def eventually(
    context: Any, url: str, ready: Any, params: dict[str, str] | None = None, tries: int = 60
) -> Any:
    """GET ``url`` (as the signed-in browser) until ``ready(body)``; half a second apart."""
    for _ in range(tries):
        response = await context.request.get(url, params=params)
        body = await response.json()
        if response.ok and ready(body):
            return body
        await asyncio.sleep(0.5)
    raise AssertionError(f"{url} never got there: {body}")


def connection_row(page: Any, platform: str, name: str) -> Any:
    rows = page.locator(f"li.conn[data-platform={platform}]")
    return rows.filter(has=page.get_by_role("heading", name=name))


async def test_dashboard_end_to_end(stack: Stack, browser: Any, screenshots: Any) -> None:
    context = await browser.new_context(
        viewport=VIEWPORT, locale="en-GB", timezone_id="Europe/Berlin"
    )
    page = await context.new_page()
    page.set_default_timeout(20_000)
    console = Console(stack.gateway)
    console.attach(page)

    # ------------------------------------------------------------ sign in
    await page.goto(stack.gateway + "/")
    await page.wait_for_url(re.compile(r"/sign-in"))
    await check_page(page, "sign in")
    # Keyboard only: the key field has the focus; Enter submits.
    await page.keyboard.type(stack.api_key)
    await page.keyboard.press("Enter")
    await page.get_by_role("heading", name="Linked accounts", level=1).wait_for()
    assert await page.evaluate("() => !document.cookie.includes('postd_session')")  # HttpOnly

    # ------------------------------------------------------------ connect Meta, then LinkedIn
    await page.get_by_role("link", name="Connect Facebook").click()
    await approve_consent(page, stack, "Facebook")
    status = page.get_by_role("status").filter(has_text="Connected")
    await status.first.wait_for()
    assert "Facebook" in (await status.first.inner_text())
    coffee = connection_row(page, "facebook", "Sandbox Coffee Co")
    await coffee.get_by_text("Healthy").wait_for()
    await page.get_by_role("link", name="Connect LinkedIn").click()
    await approve_consent(page, stack, "LinkedIn")
    await page.locator("li.conn[data-platform=linkedin]").first.wait_for()
    assert await page.locator("li.conn").count() >= 3
    await check_page(page, "linked accounts")
    await page.screenshot(path=str(screenshots / "linked-accounts.png"))

    # Keyboard: the first Tab reaches the skip link, which moves the focus to the page;
    # the next Tab lands on a control there, with a visible focus ring.
    await page.reload()
    await page.get_by_role("heading", name="Linked accounts", level=1).wait_for()
    await page.keyboard.press("Tab")
    assert await page.evaluate("() => document.activeElement.textContent") == "Skip to content"
    await page.keyboard.press("Enter")
    assert await page.evaluate("() => document.activeElement.id") == "main"
    await page.keyboard.press("Tab")
    focused = await page.evaluate(
        "() => { const e = document.activeElement; const s = getComputedStyle(e);"
        " return [e.closest('main') !== null, s.outlineStyle, parseFloat(s.outlineWidth)]; }"
    )
    assert focused[0]
    assert focused[1] == "solid"
    assert focused[2] >= 2
    assert page.url.rstrip("/") == stack.gateway

    # ------------------------------------------------------------ create post: over the limit
    await page.get_by_role("link", name="Create post").click()
    await page.get_by_role("heading", name="Create post", level=1).wait_for()
    await page.get_by_role("checkbox", name="Sandbox Coffee Co Facebook").check()
    await page.locator("#targets input[data-platform=linkedin]:not([disabled])").first.check()
    too_long = "POSTD browser test. " * 155  # 3,100 characters; LinkedIn takes 3,000
    await page.get_by_label("Text", exact=True).fill(too_long)
    counters = page.get_by_role("list", name="Characters per account")
    await counters.locator("li.over").filter(has_text="LinkedIn").wait_for()
    assert "100 over" in await counters.locator("li.over").inner_text()
    assert await counters.locator("li.over").count() == 1  # Facebook takes 63,206
    review = page.get_by_role("button", name="Review and publish")
    assert await review.get_attribute("aria-disabled") == "true"
    problems = page.locator("#post-problems")
    await problems.get_by_text(re.compile(r"100 characters over the limit of 3,000")).wait_for()
    # The server's own verdict shows next to LinkedIn's preview too.
    await page.locator("article.preview .violations").get_by_text(re.compile("3,000")).wait_for()
    # Still focusable (aria-disabled), so a keyboard user learns why: no confirmation,
    # the reasons are announced.
    await review.focus()
    await page.keyboard.press("Enter")
    assert await page.locator("dialog[open]").count() == 0
    assert await problems.locator("[role=alert]").count() == 1
    await check_page(page, "create post (over the limit)")
    await page.screenshot(path=str(screenshots / "create-post.png"))

    # ------------------------------------------------------------ fix it, publish, follow it
    marker = uuid.uuid4().hex[:12]
    text = f"Fresh bread at 7 from the POSTD dashboard ({marker})."
    await page.get_by_label("Text", exact=True).fill(text)
    await page.get_by_text("Ready to publish.").wait_for()
    assert await review.get_attribute("aria-disabled") == "false"
    await review.click()
    dialog = page.get_by_role("dialog", name="Publish this post?")
    await dialog.wait_for()
    await check_page(page, "publish confirmation")
    await dialog.get_by_role("button", name="Publish").click()
    await page.wait_for_url(re.compile(r"/posts/[A-Za-z0-9-]+$"))
    targets = page.get_by_role("list", name="Targets")
    await targets.locator("li[data-state=published]").nth(1).wait_for(timeout=60_000)
    assert await targets.locator("li").count() == 2
    await page.get_by_text(re.compile(r"^Published · created")).wait_for()
    posted = await context.request.get(
        f"{stack.sandbox}/_sandbox/posts", params={"text_contains": marker}
    )
    assert (await posted.json())["count"] == 2
    await check_page(page, "post status")
    await page.screenshot(path=str(screenshots / "post.png"))

    # ------------------------------------------------------------ schedule in another time zone
    day = (datetime.now(UTC) + timedelta(days=2)).date()
    wanted = datetime(day.year, day.month, day.day, 10, 0, tzinfo=ZoneInfo("America/New_York"))
    await page.get_by_role("link", name="Create post").click()
    await page.get_by_role("checkbox", name="Sandbox Coffee Co Facebook").check()
    await page.get_by_label("Text", exact=True).fill(f"Tomorrow's loaves ({marker}).")
    await page.get_by_label("Schedule").check()
    await page.get_by_label("Date and time").fill(f"{day.isoformat()}T10:00")
    zone = page.get_by_label("Time zone")
    assert await zone.input_value() == "Europe/Berlin"  # the person's own, from Intl
    await zone.select_option("America/New_York")
    await page.get_by_text(re.compile(r"^Publishes on .* in America/New York\.$")).wait_for()
    await page.get_by_text("Ready to publish.").wait_for()
    await review.click()
    dialog = page.get_by_role("dialog", name="Schedule this post?")
    await dialog.get_by_role("button", name="Schedule").click()
    await page.wait_for_url(re.compile(r"/posts/[A-Za-z0-9-]+$"))
    await page.get_by_text(re.compile(r"^Scheduled · created")).wait_for()
    post_id = page.url.rsplit("/", 1)[-1]
    scheduled = await (await context.request.get(f"{stack.gateway}/v1/posts/{post_id}")).json()
    assert datetime.fromisoformat(scheduled["publish_at"]) == wanted.astimezone(UTC)
    assert scheduled["schedule"]["local"] == {
        "local_time": f"{day.isoformat()}T10:00",
        "time_zone": "America/New_York",
    }
    await page.get_by_role("button", name="Cancel post").click()
    await page.get_by_role("dialog").get_by_role("button", name="Cancel post").click()
    await page.get_by_text(re.compile(r"^Cancelled · created")).wait_for()

    listing = await context.request.get(
        f"{stack.gateway}/v1/connections", params={"platform": "facebook"}
    )
    coffee_page = next(
        c for c in (await listing.json())["items"] if c["account_name"] == "Sandbox Coffee Co"
    )

    # ------------------------------------------------------------ dead letters, replayed
    # Facebook refuses the next two posts as abusive (not retryable: straight to the DLQ).
    fault = await context.request.post(
        f"{stack.sandbox}/_sandbox/faults",
        data={
            "platform": "meta",
            "kind": "platform_error",
            "error": "meta_blocked",
            "path_contains": "/feed",
            "times": 2,
        },
    )
    assert fault.ok
    auth = {"Authorization": f"Bearer {stack.api_key}"}
    for n in range(2):
        made = await context.request.post(
            f"{stack.gateway}/v1/posts",
            headers={**auth, "Idempotency-Key": f"dlq-{marker}-{n}"},
            data={
                "content": {"text": f"Blocked once, then fine ({marker}, {n})."},
                "targets": [{"connection_id": coffee_page["id"]}],
            },
        )
        assert made.status == 201, await made.text()
    await eventually(context, f"{stack.gateway}/v1/dlq", lambda body: len(body["items"]) == 2)
    await page.get_by_role("link", name="Dead letters").click()
    rows = page.locator("#dlq-table tbody tr")
    await rows.nth(1).wait_for()
    assert "Facebook blocked this post" in await rows.first.inner_text()
    await page.get_by_role("checkbox", name="Select every dead letter shown").check()
    await page.get_by_role("button", name="Replay selected (2)").click()
    await page.get_by_text("2 jobs put back on schedule.").wait_for()
    assert await page.locator("progress").evaluate("(p) => p.value === p.max")
    await eventually(
        context,
        f"{stack.sandbox}/_sandbox/posts",
        lambda body: body["count"] == 2,
        params={"text_contains": f"Blocked once, then fine ({marker}"},
    )
    await check_page(page, "dead letters after a replay")
    await page.screenshot(path=str(screenshots / "dead-letters.png"))

    # ------------------------------------------------------------ webhook events, replayed
    sent = await context.request.post(
        f"{stack.sandbox}/_sandbox/webhooks/send",
        data={
            "url": f"{stack.gateway}/webhooks/facebook",
            "platform": "meta",
            "event": "comment",
            "account": coffee_page["external_id"],
        },
    )
    assert (await sent.json())["status"] == 200
    # Stored at once, normalised (typed) shortly after: the page lists what is there
    # when it loads, so it is opened once the event has its type.
    await eventually(
        context,
        f"{stack.gateway}/v1/webhook-events",
        lambda body: len(body["items"]) > 0,
        params={"type": "comment.created"},
    )
    await page.get_by_role("link", name="Webhooks").click()
    event_row = page.locator("tbody tr").filter(has_text="comment.created").first
    await event_row.wait_for()
    await event_row.get_by_role("checkbox").check()
    await page.get_by_role("button", name="Replay selected (1)").click()
    await page.get_by_text("1 event re-emitted.").wait_for()
    await check_page(page, "webhooks after a replay")
    await page.screenshot(path=str(screenshots / "webhooks.png"))

    # ------------------------------------------------------------ posts for analytics
    # Twelve text posts and twelve photos on the Page, through the API; analytics
    # collects them from the sandbox every 10 seconds (the stack's test pace).
    for n in range(12):
        for content in (
            {"text": f"Daily special {n} ({marker})."},
            {
                "text": f"Latte art {n} ({marker}).",
                "media": [
                    {
                        "url": f"https://media.example.test/{marker}-{n}.jpg",
                        "mime_type": "image/jpeg",
                        "width": 1080,
                        "height": 1080,
                    }
                ],
            },
        ):
            made = await context.request.post(
                f"{stack.gateway}/v1/posts",
                headers={**auth, "Idempotency-Key": f"analytics-{marker}-{n}-{len(content)}"},
                data={"content": content, "targets": [{"connection_id": coffee_page["id"]}]},
            )
            assert made.status == 201, await made.text()

    await eventually(
        context,
        f"{stack.gateway}/v1/analytics",
        lambda body: body["totals"]["posts"] >= 27,
        params={"time_zone": "Europe/Berlin"},
        tries=120,
    )

    # ------------------------------------------------------------ analytics
    # Two days pass on the platforms; the next snapshots carry grown figures, and the
    # photos' higher engagement shows as a finding with its evidence.
    advanced = await context.request.post(
        f"{stack.sandbox}/_sandbox/clock", data={"advance_seconds": 2 * 86400}
    )
    assert advanced.ok
    insights = await eventually(
        context,
        f"{stack.gateway}/v1/analytics/insights",
        lambda body: any(
            i["verdict"] == "finding" and i["kind"] == "content_type" for i in body["insights"]
        ),
        params={"time_zone": "Europe/Berlin"},
        tries=180,
    )
    assert any(i["summary"].startswith("On Facebook your images get") for i in insights["insights"])
    await page.get_by_role("navigation", name="Main").get_by_role("link", name="Analytics").click()
    await page.get_by_role("heading", name="Analytics", level=1).wait_for()
    await page.get_by_text("Days in Europe/Berlin.", exact=False).wait_for()
    await page.locator("svg.chart").first.wait_for()
    status_line = page.get_by_role("status").filter(has_text=re.compile(r"^Showing \d+ posts"))
    await status_line.wait_for()
    # The finding in plain words, with its n and confidence.
    listed = page.get_by_role("list", name="Insights")
    item = listed.locator("li.finding").filter(has_text="On Facebook your images get").first
    await item.wait_for()
    assert "Finding" in await item.inner_text()
    assert re.search(r"n = \d+ and \d+", await item.inner_text())
    assert await listed.locator("li.not_enough_data").count() >= 1
    # By platform and by content type, as charts and as tables.
    await page.get_by_role("heading", name="By platform", exact=True).wait_for()
    await page.get_by_role("table", name="Figures by content type").get_by_text("Images").wait_for()
    totals = await (
        await context.request.get(
            f"{stack.gateway}/v1/analytics", params={"time_zone": "Europe/Berlin"}
        )
    ).json()
    assert totals["totals"]["posts"] >= 24
    assert totals["totals"]["impressions"] > 0
    await check_page(page, "analytics")
    await page.screenshot(path=str(screenshots / "analytics.png"), full_page=True)

    # ------------------------------------------------------------ revoked at the platform
    page_id = coffee_page["external_id"]
    for account in (META_USER, page_id):
        revoked = await context.request.post(
            f"{stack.sandbox}/_sandbox/tokens/revoke", data={"platform": "meta", "account": account}
        )
        assert revoked.ok
    await page.get_by_role("link", name="Linked accounts").click()
    coffee = connection_row(page, "facebook", "Sandbox Coffee Co")
    await coffee.get_by_role("button", name="Refresh now").click()
    badge = coffee.locator("h3 .badge")
    await badge.filter(has_text=re.compile(r"^(Revoked|Requires action)$")).wait_for()
    plain_words = re.compile("Facebook ended POSTD's access")
    await coffee.locator(".conn-error").get_by_text(plain_words).wait_for()
    await page.wait_for_function(
        "() => /Sandbox Coffee Co: (Revoked|Requires action)/"
        ".test(document.getElementById('announcer').textContent)"
    )
    # The focus stays on the row's Refresh now button for keyboard users.
    assert await page.evaluate("() => document.activeElement.textContent") == "Refresh now"
    await check_page(page, "linked accounts (revoked)")

    # ------------------------------------------------------------ reconnect, one click
    reconnect = coffee.get_by_role("link", name="Reconnect")
    href = await reconnect.get_attribute("href")
    assert "reconnect=" in href
    assert "capability=publish" in href
    await reconnect.click()
    await approve_consent(page, stack, "Facebook")
    await page.get_by_role("status").filter(has_text="Connected").first.wait_for()
    coffee = connection_row(page, "facebook", "Sandbox Coffee Co")
    await coffee.get_by_text("Healthy").wait_for()
    # Its story: the status history says what happened, in order.
    await coffee.get_by_text("Health, history and missed posts").click()
    history = coffee.get_by_role("heading", name="Status history")
    await history.wait_for()
    assert "Revoked" in await coffee.locator("details ul").first.inner_text()

    # ------------------------------------------------------------ disconnect, confirmed
    bakery = connection_row(page, "facebook", "Sandbox Bakery")
    await bakery.get_by_role("button", name="Disconnect").click()
    confirm = page.get_by_role("dialog", name="Disconnect Sandbox Bakery?")
    await confirm.get_by_role("button", name="Cancel").click()  # nothing happens
    assert await bakery.locator("h3 .badge").inner_text() == "Healthy"
    await bakery.get_by_role("button", name="Disconnect").click()
    await confirm.get_by_role("button", name="Disconnect").click()
    await bakery.locator("h3 .badge").filter(has_text="Disconnected").wait_for()
    assert await bakery.get_by_role("button").count() == 0

    # ------------------------------------------------------------ health
    await page.get_by_role("link", name="Health").click()
    await page.get_by_role("heading", name="Health", level=1).wait_for()
    await page.locator("svg.chart").first.wait_for()
    await page.get_by_role("heading", name="API performance per platform").wait_for()
    await check_page(page, "health")
    await page.screenshot(path=str(screenshots / "health.png"))

    # ------------------------------------------------------------ calm and fast
    # A full load of each main page until its data shows, timed by the browser from
    # the start of the navigation (shell, modules, API calls, drawing); best of two,
    # the second with the assets in the cache, as for a person who comes back.
    loads: dict[str, float] = {}
    for path, ready in (
        ("/", page.get_by_role("status").filter(has_text="Showing")),
        ("/posts/new", page.locator("#targets li").first),
        ("/health", page.locator("svg.chart").first),
    ):
        for _ in range(2):
            await page.goto(stack.gateway + path)
            await ready.wait_for()
            took = await page.evaluate("() => performance.now()") / 1000
            loads[path] = min(loads.get(path, took), took)
    print("page loads:", {p: f"{s * 1000:.0f} ms" for p, s in loads.items()})
    assert max(loads.values()) < 1.0, loads

    # ------------------------------------------------------------ the other pages
    for link, heading in (("Posts", "Posts"), ("Notifications", "Notifications")):
        await page.get_by_role("navigation", name="Main").get_by_role("link", name=link).click()
        await page.get_by_role("heading", name=heading, level=1).wait_for()
        loaded = page.get_by_role("status").filter(has_text=re.compile(r"Showing|No |empty"))
        await loaded.first.wait_for()
        await check_page(page, link)
        await page.screenshot(path=str(screenshots / f"{link.lower()}.png"))

    # ------------------------------------------------------------ sign out
    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_url(re.compile(r"/sign-in"))
    gone = await context.request.get(f"{stack.gateway}/v1/me")
    assert gone.status == 401

    # ------------------------------------------------------------ the badges' words
    # (the page's own modules, imported as the dashboard imports them)
    assets = await page.get_attribute('meta[name="postd-assets"]', "content")
    badges = await page.evaluate(
        """async (assets) => {
            const { connectionState } = await import(`${assets}/js/status.js`);
            const now = Date.parse("2026-03-01T12:00:00Z");
            const inDays = (d) => new Date(now + d * 86400000 - 60000).toISOString();
            return [
                connectionState({ status: "healthy", expires_at: null }, now),
                connectionState({ status: "expiring_soon", expires_at: inDays(3) }, now),
                connectionState({ status: "healthy", expires_at: inDays(1) }, now),
                connectionState(
                    { status: "healthy", expires_at: inDays(1), has_refresh_token: true }, now),
                connectionState({ status: "attention" }, now),
                connectionState({ status: "revoked" }, now),
                connectionState({ status: "disconnected" }, now),
            ].map((s) => `${s.label}/${s.tone}`);
        }""",
        assets,
    )
    assert badges == [
        "Healthy/ok",
        "Expires in 3 days/warn",
        "Expires in 1 day/warn",
        "Healthy/ok",
        "Requires action/bad",
        "Revoked/bad",
        "Disconnected/neutral",
    ]

    # ------------------------------------------------------------ a viewer sees, cannot act
    created = await context.request.post(
        f"{stack.gateway}/v1/api-keys",
        headers={"Authorization": f"Bearer {stack.api_key}", "Idempotency-Key": marker},
        data={"name": "browser test viewer", "role": "viewer"},
    )
    assert created.status == 201
    viewer = Stack(stack.gateway, stack.sandbox, (await created.json())["key"], stack.log)
    await sign_in(page, viewer)
    await page.locator("li.conn").first.wait_for()
    assert await page.get_by_role("button", name="Refresh now").count() == 0
    assert await page.get_by_role("button", name="Disconnect").count() == 0
    assert await page.get_by_role("link", name="Connect Facebook").count() == 0
    await check_page(page, "linked accounts (viewer)")
    await page.get_by_role("link", name="Create post").click()
    await page.get_by_text("Creating posts needs the editor role").wait_for()

    assert not console.errors, "the browser console reported:\n" + "\n".join(console.errors)
    await context.close()
