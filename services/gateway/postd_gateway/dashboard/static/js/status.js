// How statuses read to a person: connection badges, job and post states.

import { h, words, capitalise } from "./dom.js";

const DAY = 86400 * 1000;
// A token that cannot refresh itself is worth a warning this long before it ends.
const WARN_DAYS = 7;

export function daysLeft(iso, now = Date.now()) {
  if (!iso) return null;
  return Math.ceil((new Date(iso).getTime() - now) / DAY);
}

/** {label, tone} for a connection: healthy / expires in N days / requires action / revoked. */
export function connectionState(c, now = Date.now()) {
  const days = daysLeft(c.expires_at, now);
  const expiring = (text) => ({
    label: days === null ? text : days <= 0 ? "Expired" : `Expires in ${days} ${days === 1 ? "day" : "days"}`,
    tone: days !== null && days <= 0 ? "bad" : "warn",
  });
  switch (c.status) {
    case "healthy":
      if (days !== null && days <= WARN_DAYS && !c.has_refresh_token) return expiring("Expires soon");
      return { label: "Healthy", tone: "ok" };
    case "expiring_soon":
      return expiring("Expires soon");
    case "attention":
      return { label: "Requires action", tone: "bad" };
    case "revoked":
      return { label: "Revoked", tone: "bad" };
    case "disconnected":
      return { label: "Disconnected", tone: "neutral" };
    default:
      return { label: capitalise(words(c.status)) || "Unknown", tone: "neutral" };
  }
}

export function badge(label, tone) {
  return h("span", { class: ["badge", tone] }, label);
}

export function connectionBadge(c, now) {
  const { label, tone } = connectionState(c, now);
  return h("span", { class: ["badge", tone], "data-status": c.status }, label);
}

/** A connection a person must act on. */
export function needsPerson(c) {
  return c.status === "revoked" || c.status === "attention" || c.status === "expiring_soon";
}

const JOB_TONES = {
  published: "ok",
  failed: "bad",
  cancelled: "neutral",
  paused: "warn",
  retrying: "warn",
  awaiting_approval: "warn",
  rejected: "bad",
  partially_published: "warn",
};

export function jobBadge(state) {
  const tone = JOB_TONES[state] || "neutral";
  return h("span", { class: ["badge", tone], "data-state": state }, capitalise(words(state)));
}

const RANK = { viewer: 1, editor: 2, admin: 3, owner: 4 };

/** Whether the signed-in person's role reaches `role` (the API checks it too). */
export function can(me, role) {
  return Boolean(me) && (RANK[me.role] || 0) >= RANK[role];
}

export const TERMINAL_JOB_STATES = new Set(["published", "failed", "cancelled"]);
export const TERMINAL_POST_STATES = new Set(["published", "partially_published", "failed", "cancelled", "rejected"]);
