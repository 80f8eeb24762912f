// Sign in with an API key: POST /v1/sessions sets the HttpOnly session cookie.

import { signIn, whoAmI } from "../api.js";
import { h, announce } from "../dom.js";

export async function render(main, ctx) {
  const next = ctx.query.get("next") || "/";
  const safeNext = next.startsWith("/") && !next.startsWith("//") ? next : "/";
  const error = h("p", { class: "error-text", id: "signin-error", role: "alert" });
  const input = h("input", {
    id: "api-key",
    name: "api_key",
    type: "password",
    autocomplete: "current-password",
    required: true,
    spellcheck: "false",
    "aria-describedby": "api-key-hint signin-error",
    "data-autofocus": "",
  });
  const submit = h("button", { type: "submit", class: "primary" }, "Sign in");
  const form = h("form", { class: "card signin-card", novalidate: true },
    h("h1", null, "Sign in to POSTD"),
    h("p", { class: "muted" }, "Use an API key of your team. The dashboard keeps a session cookie; the key itself is not stored in this browser."),
    h("div", { class: "field" },
      h("label", { for: "api-key" }, "API key"),
      input,
      h("span", { class: "hint", id: "api-key-hint" }, "It starts with postd_. On a local stack it is in .postd/dev-api-key.")),
    error,
    h("div", { class: "row" }, submit));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    const key = input.value.trim();
    if (!key) {
      input.setAttribute("aria-invalid", "true");
      error.textContent = "Enter an API key.";
      input.focus();
      return;
    }
    submit.disabled = true;
    submit.setAttribute("aria-busy", "true");
    try {
      await signIn(key);
      input.value = "";
      ctx.signedIn(await whoAmI());
      announce("Signed in.");
      ctx.navigate(safeNext, { replace: true });
    } catch (err) {
      input.setAttribute("aria-invalid", "true");
      error.textContent = err.status === 401 ? "This API key is not recognised, or it was revoked." : err.message;
      input.focus();
    } finally {
      submit.disabled = false;
      submit.removeAttribute("aria-busy");
    }
  });
  main.append(form);
}
