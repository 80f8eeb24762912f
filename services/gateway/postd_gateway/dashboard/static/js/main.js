// The dashboard's entry point: who is signed in, the client-side router, the shell.

import { get, signOut, whoAmI, whenSignedOut, hasSession } from "./api.js";
import { h, clear, announce } from "./dom.js";

const BASE = document.querySelector('meta[name="postd-base"]').content || "/";

// Path (relative to BASE) -> page module. Keep in step with PAGES in dashboard/__init__.py.
const ROUTES = [
  { path: "", nav: "accounts", title: "Linked accounts", load: () => import("./pages/accounts.js") },
  { path: "posts/new", nav: "compose", title: "Create post", load: () => import("./pages/compose.js") },
  { path: "posts", nav: "posts", title: "Posts", load: () => import("./pages/posts.js") },
  { path: "posts/:id", nav: "posts", title: "Post", load: () => import("./pages/post.js") },
  { path: "analytics", nav: "analytics", title: "Analytics", load: () => import("./pages/analytics.js") },
  { path: "health", nav: "health", title: "Health", load: () => import("./pages/health.js") },
  { path: "dlq", nav: "dlq", title: "Dead letters", load: () => import("./pages/dlq.js") },
  { path: "webhook-events", nav: "webhooks", title: "Webhooks", load: () => import("./pages/webhooks.js") },
  { path: "notifications", nav: "notifications", title: "Notifications", load: () => import("./pages/notifications.js") },
  { path: "sign-in", nav: "", title: "Sign in", public: true, load: () => import("./pages/signin.js") },
];

const main = document.getElementById("main");
const shell = document.getElementById("shell");
const sidebar = document.getElementById("sidebar");
const who = document.getElementById("who");
let me = null;
let leave = null; // the current page's clean-up (timers, polling)
let renderToken = 0;

export function href(path) {
  return BASE + path.replace(/^\//, "");
}

function match(pathname) {
  if (!pathname.startsWith(BASE) && pathname + "/" !== BASE) return null;
  const rest = pathname.slice(BASE.length).replace(/\/+$/, "");
  for (const route of ROUTES) {
    const want = route.path.split("/");
    const got = rest === "" ? [""] : rest.split("/");
    if (want.length !== got.length) continue;
    const params = {};
    if (want.every((part, i) => (part.startsWith(":") ? ((params[part.slice(1)] = decodeURIComponent(got[i])), true) : part === got[i]))) {
      return { route, params };
    }
  }
  return null;
}

/** Go to a dashboard path such as "/posts/new" (or a full path under BASE). */
export function navigate(path, { replace = false } = {}) {
  const target = path.startsWith(BASE) ? path : href(path);
  if (replace) history.replaceState(null, "", target);
  else history.pushState(null, "", target);
  render({ focus: true });
}

function setShell(signedIn) {
  shell.classList.toggle("signed-out", !signedIn);
  sidebar.hidden = !signedIn;
  clear(who);
  if (signedIn && me) {
    const button = h("button", { type: "button", class: "small", onClick: doSignOut }, "Sign out");
    who.append(h("span", null, `Signed in as ${me.subject} · ${me.role}`), button);
  }
}

function markNav(nav) {
  for (const a of sidebar.querySelectorAll("a[data-page]")) {
    if (a.dataset.page === nav) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

async function doSignOut() {
  try {
    await signOut();
  } catch {
    // Signed out already, or unreachable: either way the cookies go.
  }
  me = null;
  announce("Signed out.");
  navigate("/sign-in", { replace: true });
}

function toSignIn() {
  const here = location.pathname.slice(BASE.length) + location.search;
  const next = here && !here.startsWith("sign-in") ? `?next=${encodeURIComponent("/" + here)}` : "";
  me = null;
  history.replaceState(null, "", href("sign-in") + next);
  render({ focus: true });
}

async function render({ focus = false } = {}) {
  const token = ++renderToken;
  rendered = location.pathname + location.search;
  if (leave) {
    try { leave(); } catch { /* a page's clean-up must not stop navigation */ }
    leave = null;
  }
  const found = match(location.pathname);
  if (!found) {
    setShell(Boolean(me));
    clear(main).append(h("h1", { tabindex: "-1" }, "Page not found"),
      h("p", null, "There is no dashboard page at this address. ", h("a", { href: href("/"), "data-nav": "" }, "Go to linked accounts")));
    return;
  }
  const { route, params } = found;
  if (!route.public && !me && !hasSession()) return toSignIn();
  // Who is signed in and the page's code, fetched side by side.
  const [module, who_] = await Promise.all([
    route.load(),
    route.public || me ? me : whoAmI().catch(() => null),
  ]);
  if (token !== renderToken) return;
  if (!route.public && !who_) return toSignIn();
  const first = !me && who_;
  me = who_;
  setShell(!route.public);
  markNav(route.nav);
  document.title = `${route.title} · POSTD`;
  clear(main);
  const ctx = {
    params,
    query: new URLSearchParams(location.search),
    me,
    navigate,
    href,
    setTitle: (title) => { document.title = `${title} · POSTD`; },
    signedIn: (who_) => { me = who_; refreshUnread(); },
    refreshUnread,
  };
  try {
    leave = (await module.render(main, ctx)) || null;
  } catch (err) {
    main.append(h("div", { class: "notice error", role: "alert" }, h("p", null, err.message || String(err))));
  }
  if (focus && token === renderToken) {
    const preferred = main.querySelector("[data-autofocus]");
    const heading = main.querySelector("h1");
    if (preferred) {
      preferred.focus();
    } else if (heading) {
      heading.setAttribute("tabindex", "-1");
      heading.focus({ preventScroll: false });
    } else {
      main.focus();
    }
  }
  if (!route.public && first) refreshUnread();
}

// ---------------------------------------------------------------- unread notifications

let unreadTimer = 0;
export async function refreshUnread() {
  clearTimeout(unreadTimer);
  const badge = document.getElementById("unread-count");
  try {
    const page = await get("/v1/notifications", { unread_only: true, limit: 1 });
    const n = page.unread_count || 0;
    badge.hidden = n === 0;
    document.getElementById("unread-n").textContent = String(n);
  } catch {
    badge.hidden = true;
  }
  if (me) unreadTimer = setTimeout(refreshUnread, 60000);
}

// ---------------------------------------------------------------- wiring

document.addEventListener("click", (event) => {
  if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const link = event.target.closest("a[data-nav]");
  if (!link || link.target) return;
  const url = new URL(link.href);
  if (url.origin !== location.origin || !match(url.pathname)) return;
  event.preventDefault();
  history.pushState(null, "", url.pathname + url.search);
  render({ focus: true });
});

// A change of the hash alone (the skip link, an anchor) is not a new page.
let rendered = location.pathname + location.search;
window.addEventListener("popstate", () => {
  if (location.pathname + location.search === rendered) return;
  render({ focus: true });
});
document.querySelector(".skip-link").addEventListener("click", (event) => {
  event.preventDefault();
  main.focus();
});
whenSignedOut(() => {
  if (me) {
    announce("Your session has ended. Please sign in again.", { assertive: true });
    toSignIn();
  }
});

render({ focus: false });
