// Create post: pick accounts, compose with each platform's limits live, preview,
// schedule in the person's time zone, confirm, then follow the post (post.js).

import { get, post, capabilities, newIdempotencyKey, ApiError } from "../api.js";
import { h, clear, announce, num, plural, bytes, duration, charCount, debounce, nextId, confirmDialog } from "../dom.js";
import { platformIcon, platformName } from "../icons.js";
import { connectionBadge, can } from "../status.js";

const MAX_ACCOUNTS = 2000; // beyond this, the picker asks for a search
const FORMAT_WORDS = {
  text: "text post", link: "link post", image: "image post", carousel: "carousel", reel: "reel",
  video: "video", document: "document post", standard: "update", event: "event", offer: "offer",
  email_campaign: "email campaign",
};
const MEDIA_KINDS = [["image", "Image"], ["video", "Video"], ["gif", "GIF"], ["document", "Document (PDF)"]];

/** The format a post takes on a platform: the same rules as POSTD's validator. */
export function chooseFormat(cap, content) {
  const has = (name) => cap.formats.find((f) => f.format === name) || null;
  const explicit = content.options[`${cap.platform}.format`];
  if (explicit) return { name: explicit, format: has(explicit) };
  const kinds = content.media.map((m) => m.kind);
  let name;
  if (!kinds.length) {
    name = content.link && has("link") ? "link" : "text";
    if (!has(name)) {
      // Platforms whose formats are chosen by an option (an update, a campaign).
      const plain = cap.formats.find((f) => f.min_media_count === 0);
      if (plain) name = plain.format;
    }
  } else if (kinds.includes("document")) {
    name = "document";
  } else if (kinds.length > 1 && has("carousel")) {
    name = "carousel";
  } else if (kinds.includes("video")) {
    name = ["video", "reel"].find((n) => has(n)) || "video";
  } else {
    name = "image";
  }
  return { name, format: has(name) };
}

function mediaRule(fmt) {
  if (!fmt.max_media_count && !fmt.min_media_count) return `${FORMAT_WORDS[fmt.format] || fmt.format}: no media`;
  const count = fmt.min_media_count === fmt.max_media_count
    ? `exactly ${fmt.min_media_count}`
    : `${fmt.min_media_count}–${fmt.max_media_count || "any"}`;
  const kinds = (fmt.media || []).map((m) => {
    const types = (m.mime_types || []).map((t) => t.split("/")[1].toUpperCase()).join(", ");
    const extra = [];
    if (m.max_size_bytes) extra.push(`up to ${bytes(m.max_size_bytes)}`);
    if (m.max_duration) extra.push(`up to ${duration(m.max_duration)}`);
    if (m.min_width) extra.push(`at least ${m.min_width}×${m.min_height} px`);
    return `${m.kind}${types ? ` (${types})` : ""}${extra.length ? `, ${extra.join(", ")}` : ""}`;
  });
  return `${FORMAT_WORDS[fmt.format] || fmt.format}: ${count} ${kinds.join(" or ") || "items"}`;
}

export async function render(main, ctx) {
  if (!can(ctx.me, "editor")) {
    main.append(h("h1", null, "Create post"),
      h("p", null, `Creating posts needs the editor role or higher; you are signed in as ${ctx.me.role}.`));
    return null;
  }
  const caps = await capabilities();
  const capOf = Object.fromEntries(caps.map((c) => [c.platform, c]));
  main.append(h("div", { class: "page-head" },
    h("div", null,
      h("h1", null, "Create post"),
      h("p", null, "One post to several accounts. Each platform's limits are checked as you type."))));

  // ---------------------------------------------------------------- accounts
  const connections = [];
  let truncated = false;
  let cursor;
  do {
    const page = await get("/v1/connections", { limit: 500, cursor });
    connections.push(...page.items.filter((c) => c.status !== "disconnected" && capOf[c.platform]));
    cursor = page.next_cursor;
    if (connections.length >= MAX_ACCOUNTS && cursor) {
      truncated = true;
      break;
    }
  } while (cursor);
  const byId = Object.fromEntries(connections.map((c) => [c.id, c]));
  if (!connections.length) {
    main.append(h("div", { class: "card" }, h("p", null, "No account can be published to yet. ",
      h("a", { href: ctx.href("/"), "data-nav": "" }, "Connect an account first."))));
    return null;
  }

  const selected = new Set();
  const preselect = ctx.query.getAll("connection");
  const search = h("input", { type: "search", id: "target-search", placeholder: "Filter accounts", "aria-controls": "targets" });
  const targetList = h("ul", { class: "targets", id: "targets" });
  const targetHint = h("p", { class: "hint", id: "targets-hint" });
  for (const c of connections) {
    const usable = c.status === "healthy" || c.status === "expiring_soon";
    const box = h("input", { type: "checkbox", value: c.id, id: `target-${c.id}`, disabled: !usable, "data-platform": c.platform });
    if (usable && preselect.includes(c.id)) {
      box.checked = true;
      selected.add(c.id);
    }
    box.addEventListener("change", () => {
      if (box.checked) selected.add(c.id);
      else selected.delete(c.id);
      changed();
    });
    targetList.append(h("li", { "data-name": `${c.account_name} ${platformName(c.platform, caps)}`.toLowerCase() },
      h("label", { for: `target-${c.id}` }, box, platformIcon(c.platform, { small: true }),
        h("span", null, `${c.account_name} `, h("span", { class: "why" }, `${platformName(c.platform, caps)}`)),
        usable ? null : [" ", connectionBadge(c)])));
  }
  search.addEventListener("input", () => {
    const q = search.value.trim().toLowerCase();
    for (const li of targetList.children) li.hidden = Boolean(q) && !li.dataset.name.includes(q);
  });
  const blocked = connections.some((c) => c.status !== "healthy" && c.status !== "expiring_soon");
  targetHint.textContent = [
    truncated ? `Showing the first ${num(connections.length)} accounts; filter to find others.` : "",
    blocked ? "Accounts that need reconnecting can be picked once they are reconnected." : "",
  ].join(" ").trim();
  targetHint.hidden = !targetHint.textContent;

  // ---------------------------------------------------------------- content
  const text = h("textarea", { id: "post-text", name: "text", rows: 8, "aria-describedby": "counter-summary" });
  const counterSummary = h("p", { class: "hint", id: "counter-summary", "aria-live": "polite" });
  const counters = h("ul", { class: "counters", "aria-label": "Characters per account" });
  const link = h("input", { type: "url", id: "post-link", name: "link", placeholder: "https://", inputmode: "url" });
  const title = h("input", { type: "text", id: "post-title", name: "title" });
  const titleField = h("div", { class: "field", hidden: true },
    h("label", { for: "post-title" }, "Title"), title,
    h("span", { class: "hint", id: "title-hint" }, "Used where the platform has one (link title, email subject, event title)."));
  title.setAttribute("aria-describedby", "title-hint");
  const mediaList = h("div", { id: "media-list" });
  const addMedia = h("button", { type: "button", class: "small" }, "Add media");
  const rules = h("ul", { class: "rules", id: "media-rules" });
  const options = h("div", { id: "platform-options" });
  const optionValues = {};
  const media = [];

  function mediaRow(item) {
    const id = nextId("media");
    const url = h("input", { type: "url", id: `${id}-url`, value: item.url, placeholder: "https://…" });
    const kind = h("select", { id: `${id}-kind` }, MEDIA_KINDS.map(([v, t]) => h("option", { value: v }, t)));
    kind.value = item.kind;
    const alt = h("input", { type: "text", id: `${id}-alt`, value: item.alt_text });
    const remove = h("button", { type: "button", class: "small", "aria-label": `Remove media item` }, "Remove");
    url.addEventListener("input", () => { item.url = url.value.trim(); changed(); });
    kind.addEventListener("change", () => { item.kind = kind.value; changed(); });
    alt.addEventListener("input", () => { item.alt_text = alt.value; changed(); });
    const row = h("div", null,
      h("div", { class: "media-item" },
        h("div", { class: "field" }, h("label", { for: `${id}-url` }, "Media URL"), url),
        h("div", { class: "field" }, h("label", { for: `${id}-kind` }, "Kind"), kind),
        remove),
      h("div", { class: "field" }, h("label", { for: `${id}-alt` }, "Alternative text"), alt));
    remove.addEventListener("click", () => {
      media.splice(media.indexOf(item), 1);
      row.remove();
      addMedia.focus();
      changed();
    });
    return row;
  }
  addMedia.addEventListener("click", () => {
    const item = { url: "", kind: "image", alt_text: "" };
    media.push(item);
    const row = mediaRow(item);
    mediaList.append(row);
    row.querySelector("input").focus();
    changed();
  });

  // ---------------------------------------------------------------- schedule
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  const zones = typeof Intl.supportedValuesOf === "function" ? Intl.supportedValuesOf("timeZone") : [zone];
  if (!zones.includes(zone)) zones.unshift(zone);
  const now = h("input", { type: "radio", name: "when", id: "when-now", value: "now", checked: true });
  const later = h("input", { type: "radio", name: "when", id: "when-later", value: "later" });
  const at = h("input", { type: "datetime-local", id: "publish-at", step: 60 });
  const tz = h("select", { id: "time-zone" }, zones.map((z) => h("option", { value: z }, z.replaceAll("_", " "))));
  tz.value = zone;
  const laterFields = h("div", { class: "inline-fields", hidden: true },
    h("div", { class: "field" }, h("label", { for: "publish-at" }, "Date and time"), at),
    h("div", { class: "field" }, h("label", { for: "time-zone" }, "Time zone"), tz));
  const scheduleHint = h("p", { class: "hint", id: "schedule-hint" });
  const approval = h("input", { type: "checkbox", id: "needs-approval" });
  for (const input of [now, later]) {
    input.addEventListener("change", () => {
      laterFields.hidden = !later.checked;
      if (later.checked && !at.value) {
        const soon = new Date(Date.now() + 3600 * 1000);
        soon.setMinutes(0, 0, 0);
        at.value = localInput(soon);
      }
      changed();
    });
  }
  at.addEventListener("input", () => changed());
  tz.addEventListener("change", () => changed());

  // ---------------------------------------------------------------- preview, submit
  const previews = h("div", { class: "preview-list", id: "previews" });
  const checkState = h("p", { class: "hint", role: "status" });
  const problems = h("div", { id: "post-problems", tabindex: "-1" });
  const submit = h("button", { type: "submit", class: "primary", id: "review" }, "Review and publish");

  const form = h("form", { class: "compose", novalidate: true, "aria-label": "New post" },
    h("div", null,
      h("fieldset", { "aria-describedby": "targets-hint" },
        h("legend", null, "Publish to"),
        connections.length > 8 ? h("div", { class: "field" }, h("label", { for: "target-search", class: "visually-hidden" }, "Filter accounts"), search) : null,
        targetList, targetHint),
      h("section", { class: "card", "aria-labelledby": "compose-h" },
        h("h2", { id: "compose-h" }, "Compose"),
        h("div", { class: "field" }, h("label", { for: "post-text" }, "Text"), text, counterSummary, counters),
        h("div", { class: "field" }, h("label", { for: "post-link" }, "Link (optional)"), link),
        titleField,
        h("fieldset", null, h("legend", null, "Media"), mediaList, addMedia,
          h("details", { class: "more" }, h("summary", null, "Media rules of the chosen platforms"), rules)),
        options,
        h("fieldset", null, h("legend", null, "When"),
          h("div", { class: "row" },
            h("label", { class: "check", for: "when-now" }, now, "Publish now"),
            h("label", { class: "check", for: "when-later" }, later, "Schedule")),
          laterFields, scheduleHint),
        h("label", { class: "check", for: "needs-approval" }, approval, "Needs an approval before it goes out"),
      ),
    ),
    h("section", { class: "review", "aria-labelledby": "preview-h" },
      h("div", { class: "submit-bar" }, submit, checkState),
      problems,
      h("h2", { id: "preview-h" }, "Preview"),
      previews));
  main.append(form);

  // ---------------------------------------------------------------- the model
  function content() {
    const opts = {};
    for (const [key, value] of Object.entries(optionValues)) {
      if (value !== "" && selectedPlatforms().has(key.split(".")[0])) opts[key] = value;
    }
    return {
      text: text.value,
      link: link.value.trim(),
      title: titleField.hidden ? "" : title.value,
      media: media.filter((m) => m.url),
      options: opts,
    };
  }
  function contentBody(c) {
    const out = {};
    if (c.text) out.text = c.text;
    if (c.link) out.link = c.link;
    if (c.title) out.title = c.title;
    if (c.media.length) out.media = c.media.map((m) => ({ url: m.url, kind: m.kind, ...(m.alt_text ? { alt_text: m.alt_text } : {}) }));
    if (Object.keys(c.options).length) out.options = c.options;
    return out;
  }
  function selectedPlatforms() {
    return new Set([...selected].map((id) => byId[id].platform));
  }
  function targets() {
    return [...selected].map((id) => byId[id]);
  }

  let serverReport = new Map(); // connection id -> violations
  let checking = false;
  let lastError = "";

  const validate = debounce(async () => {
    const list = targets();
    const c = content();
    if (!list.length || (!c.text && !c.media.length && !c.link)) {
      serverReport = new Map();
      checking = false;
      paint();
      return;
    }
    const body = { content: contentBody(c), targets: list.map((t) => ({ connection_id: t.id })) };
    const key = JSON.stringify(body);
    try {
      const report = await post("/v1/posts/validate", body);
      if (JSON.stringify({ content: contentBody(content()), targets: targets().map((t) => ({ connection_id: t.id })) }) !== key) return;
      serverReport = new Map(report.targets.map((t, i) => [list[i].id, t.violations || []]));
      lastError = "";
    } catch (err) {
      serverReport = new Map();
      lastError = err instanceof ApiError && err.errors.length
        ? err.errors.map((e) => `${e.field}: ${e.message}`).join("; ")
        : err.message;
    }
    checking = false;
    paint();
  }, 350);

  function localChecks() {
    const c = content();
    const length = charCount(c.text);
    return targets().map((t) => {
      const cap = capOf[t.platform];
      const chosen = chooseFormat(cap, c);
      const limit = chosen.format ? chosen.format.max_text_length : cap.max_text_length;
      const titleLimit = chosen.format ? chosen.format.max_title_length : 0;
      return { target: t, cap, chosen, length, limit, over: limit ? Math.max(length - limit, 0) : 0, titleLimit };
    });
  }

  function blockers(checks) {
    const out = [];
    if (!selected.size) out.push("Pick at least one account.");
    const c = content();
    if (!c.text.trim() && !c.media.length && !c.link) out.push("Write something, add a link or add media.");
    for (const k of checks) {
      const name = `${k.cap.display_name} · ${k.target.account_name}`;
      if (k.over) out.push(`${name}: the text is ${plural(k.over, "character", "characters")} over the limit of ${num(k.limit)}.`);
      if (!k.chosen.format) out.push(`${name}: ${k.cap.display_name} does not take ${FORMAT_WORDS[k.chosen.name] || k.chosen.name}s.`);
      for (const v of serverReport.get(k.target.id) || []) {
        if (v.severity !== "warning" && !(k.over && v.code === "text_too_long") && !(!k.chosen.format && v.code === "unsupported_format")) {
          out.push(`${name}: ${v.message}`);
        }
      }
    }
    if (later.checked) {
      if (!at.value) out.push("Choose when to publish.");
      else if (new Date(at.value).getTime() < Date.now() - 60000 && tz.value === zone) out.push("The scheduled time is in the past.");
    }
    if (lastError) out.push(`The post could not be checked: ${lastError}`);
    return out;
  }

  function paint() {
    const checks = localChecks();
    // counters
    clear(counters);
    for (const k of checks) {
      const ratio = k.limit ? Math.min(k.length / k.limit, 1) : 0;
      const meter = h("span", { class: ["meter", k.over ? "over" : ""], "aria-hidden": "true" }, h("span"));
      meter.firstChild.style.width = `${(ratio * 100).toFixed(1)}%`;
      counters.append(h("li", { "data-connection-id": k.target.id, class: k.over ? "over" : "", title: FORMAT_WORDS[k.chosen.name] || k.chosen.name },
        platformIcon(k.target.platform, { small: true }),
        h("span", { class: "who" }, k.target.account_name, h("span", { class: "visually-hidden" }, ` on ${k.cap.display_name}`)),
        meter,
        h("span", { class: ["n", k.over ? "over" : ""] },
          k.limit ? `${num(k.length)} / ${num(k.limit)}` : `${num(k.length)}`,
          k.over ? ` — ${num(k.over)} over` : "")));
    }
    const overs = checks.filter((k) => k.over);
    const summary = !checks.length
      ? "Pick accounts to see their limits."
      : overs.length
        ? `Too long for ${overs.map((k) => `${k.cap.display_name} (${num(k.over)} over)`).join(", ")}.`
        : `Within the limits of ${plural(checks.length, "account", "accounts")}.`;
    counterSummary.textContent = summary;
    text.setAttribute("aria-invalid", overs.length ? "true" : "false");

    // title, media rules and options follow the chosen platforms
    const platforms = [...selectedPlatforms()];
    titleField.hidden = !checks.some((k) => k.titleLimit > 0);
    clear(rules);
    for (const p of platforms) {
      const cap = capOf[p];
      rules.append(h("li", null, h("strong", null, `${cap.display_name}: `), cap.formats.map(mediaRule).join("; ")));
    }
    if (!platforms.length) rules.append(h("li", null, "Pick accounts to see their media rules."));
    paintOptions(checks);

    // schedule hint
    if (later.checked && at.value) {
      const local = new Date(at.value);
      scheduleHint.textContent = `Publishes on ${local.toLocaleString(undefined, { dateStyle: "full", timeStyle: "short" })} in ${tz.value.replaceAll("_", " ")}${tz.value === zone ? " (your time zone)" : ""}.`;
    } else {
      scheduleHint.textContent = later.checked ? "" : "Goes out as soon as each account is ready.";
    }

    // previews
    clear(previews);
    if (!checks.length) previews.append(h("p", { class: "muted" }, "Pick accounts to see how the post looks on each."));
    const c = content();
    for (const k of checks) previews.append(preview(k, c));

    // verdict
    const list = blockers(checks);
    clear(problems);
    if (list.length && (selected.size || text.value)) {
      problems.append(h("div", { class: "notice error", role: "status" },
        h("div", null, h("p", null, h("strong", null, "Not ready to publish yet:")),
          h("ul", null, list.map((t) => h("li", null, t))))));
    }
    submit.setAttribute("aria-disabled", list.length ? "true" : "false");
    const warnings = checks.flatMap((k) => (serverReport.get(k.target.id) || []).filter((v) => v.severity === "warning"));
    checkState.textContent = checking ? "Checking with each platform's rules…"
      : list.length ? "" : warnings.length ? `Ready, with ${plural(warnings.length, "warning", "warnings")}.` : selected.size ? "Ready to publish." : "";
  }

  function paintOptions(checks) {
    clear(options);
    const seen = new Set();
    for (const k of checks) {
      if (seen.has(k.cap.platform) || !k.chosen.format || !(k.chosen.format.options || []).length) continue;
      seen.add(k.cap.platform);
      const fields = k.chosen.format.options.map((opt) => {
        const key = `${k.cap.platform}.${opt}`;
        const id = `opt-${k.cap.platform}-${opt}`;
        const choices = (k.chosen.format.option_choices || []).find((x) => x.option === opt);
        const input = choices
          ? h("select", { id }, h("option", { value: "" }, "Default"), choices.values.map((v) => h("option", { value: v }, v)))
          : h("input", { type: "text", id });
        input.value = optionValues[key] || "";
        input.addEventListener(choices ? "change" : "input", () => { optionValues[key] = input.value; changed(); });
        return h("div", { class: "field" }, h("label", { for: id }, opt.replaceAll("_", " ")), input);
      });
      options.append(h("details", { class: "more" },
        h("summary", null, `${k.cap.display_name} options`),
        h("div", { class: "inline-fields" }, fields)));
    }
  }

  function preview(k, c) {
    // Scrolls when long, so it takes the focus: keyboard users can scroll it too.
    const body = h("div", { class: "body", tabindex: "0", role: "region", "aria-label": `Text on ${k.cap.display_name}` });
    const chars = [...c.text];
    const HEAD = 280;
    if (k.over) {
      // The start, then the text around the limit, with what is over it struck out.
      const resume = Math.max(k.limit - 80, HEAD);
      body.append(chars.slice(0, Math.min(HEAD, k.limit)).join(""),
        resume > HEAD ? h("span", { class: "muted" }, ` … (${num(resume - HEAD)} characters) … `) : chars.slice(HEAD, resume).join(""),
        chars.slice(resume, k.limit).join(""),
        h("span", { class: "cut" }, h("span", { class: "visually-hidden" }, " Over the limit from here: "),
          chars.slice(k.limit, k.limit + 160).join(""), k.over > 160 ? ` … (${num(k.over - 160)} more)` : ""));
    } else if (chars.length > HEAD * 2) {
      body.append(chars.slice(0, HEAD).join(""), h("span", { class: "muted" }, ` … (${num(chars.length - HEAD)} more characters)`));
    } else {
      body.append(c.text || h("span", { class: "muted" }, "No text."));
    }
    const violations = serverReport.get(k.target.id) || [];
    return h("article", { class: "preview", "data-connection-id": k.target.id, "aria-label": `Preview on ${k.cap.display_name}, ${k.target.account_name}` },
      h("header", null, platformIcon(k.target.platform, { small: true }), h("span", null, k.target.account_name), h("span", { class: "muted small" }, `· ${k.cap.display_name}`)),
      body,
      c.media.length ? h("div", { class: "media-ph" }, c.media.map((m) => h("span", null, m.kind))) : null,
      c.link ? h("p", { class: "link" }, c.title ? [h("strong", null, c.title), h("br")] : null, c.link) : null,
      violations.length ? h("ul", { class: "violations" }, violations.map((v) => h("li", { class: v.severity === "warning" ? "warning" : "error" }, v.message))) : null);
  }

  function changed() {
    checking = true;
    paint();
    validate();
  }
  text.addEventListener("input", changed);
  link.addEventListener("input", changed);
  title.addEventListener("input", changed);

  // ---------------------------------------------------------------- submit
  let idempotency = { body: "", key: "" };
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    validate.cancel();
    const checks = localChecks();
    const list = blockers(checks);
    if (list.length || submit.getAttribute("aria-disabled") === "true") {
      paint();
      problems.querySelector(".notice")?.setAttribute("role", "alert");
      problems.focus();
      announce(`Not ready to publish: ${list.join(" ")}`, { assertive: true });
      return;
    }
    const c = content();
    const body = { content: contentBody(c), targets: targets().map((t) => ({ connection_id: t.id })) };
    if (later.checked) body.schedule = { local: { local_time: at.value.length === 16 ? at.value : at.value.slice(0, 19), time_zone: tz.value } };
    if (approval.checked) body.requires_approval = true;
    const whenText = later.checked ? scheduleHint.textContent : "It goes out now.";
    const ok = await confirmDialog({
      title: later.checked ? "Schedule this post?" : "Publish this post?",
      body: [
        h("p", null, `To ${plural(checks.length, "account", "accounts")}:`),
        h("ul", null, checks.map((k) => h("li", null, `${k.target.account_name} (${k.cap.display_name})`))),
        h("p", null, whenText),
        approval.checked ? h("p", null, "It waits for an approval first.") : null,
      ],
      confirm: later.checked ? "Schedule" : "Publish",
    });
    if (!ok) return;
    const serial = JSON.stringify(body);
    if (idempotency.body !== serial) idempotency = { body: serial, key: newIdempotencyKey() };
    submit.setAttribute("aria-busy", "true");
    try {
      const out = await post("/v1/posts", body, { idempotencyKey: idempotency.key });
      announce(later.checked ? "Post scheduled." : "Post created; publishing.");
      ctx.navigate(`/posts/${encodeURIComponent(out.post.id)}`);
    } catch (err) {
      clear(problems);
      const details = err.errors && err.errors.length ? h("ul", null, err.errors.map((e) => h("li", null, e.message))) : null;
      problems.append(h("div", { class: "notice error", role: "alert" }, h("div", null, h("p", null, err.message), details)));
      problems.focus();
    } finally {
      submit.removeAttribute("aria-busy");
    }
  });

  paint();
  if (selected.size) validate();
  return () => validate.cancel();
}

function localInput(date) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}
