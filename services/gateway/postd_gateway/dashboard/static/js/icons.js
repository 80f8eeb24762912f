// Platform icons, drawn as small inline SVGs (32×32 view box). They are simplified
// marks in each platform's colour, enough to recognise a row at a glance.

import { s } from "./dom.js";

const W = "#ffffff";

const DRAW = {
  facebook: () => [
    s("circle", { cx: 16, cy: 16, r: 15, fill: "#1877F2" }),
    s("path", { fill: W, d: "M17.6 27v-8.6h2.9l.45-3.4H17.6v-2.2c0-1 .3-1.6 1.7-1.6h1.8V8.2c-.3 0-1.4-.15-2.6-.15-2.6 0-4.3 1.6-4.3 4.4V15h-2.9v3.4h2.9V27z" }),
  ],
  instagram: () => [
    s("rect", { x: 1, y: 1, width: 30, height: 30, rx: 8, fill: "#C72D74" }),
    s("rect", { x: 8, y: 8, width: 16, height: 16, rx: 5, fill: "none", stroke: W, "stroke-width": 2.2 }),
    s("circle", { cx: 16, cy: 16, r: 3.8, fill: "none", stroke: W, "stroke-width": 2.2 }),
    s("circle", { cx: 20.8, cy: 11.2, r: 1.2, fill: W }),
  ],
  linkedin: () => [
    s("rect", { x: 1, y: 1, width: 30, height: 30, rx: 5, fill: "#0A66C2" }),
    s("rect", { x: 7.5, y: 13, width: 3.6, height: 11.5, fill: W }),
    s("circle", { cx: 9.3, cy: 9, r: 2.1, fill: W }),
    s("path", { fill: W, d: "M14 13h3.4v1.6c.5-.9 1.7-1.9 3.5-1.9 3.6 0 4.3 2.4 4.3 5.5v6.3h-3.6v-5.6c0-1.3 0-3-1.9-3s-2.1 1.4-2.1 2.9v5.7H14z" }),
  ],
  tiktok: () => {
    const note = "M17.8 6.5h3.2c.2 2.3 1.8 4 4 4.2v3.3c-1.5 0-2.9-.5-4-1.3v6.7c0 3.4-2.7 6-6 6s-5.9-2.5-5.9-5.9c0-3.6 3.1-6.2 6.7-5.7v3.4c-1.7-.5-3.3.6-3.3 2.3 0 1.5 1.2 2.6 2.6 2.6 1.5 0 2.7-1.2 2.7-2.7z";
    return [
      s("rect", { x: 1, y: 1, width: 30, height: 30, rx: 7, fill: "#111111" }),
      s("path", { fill: "#25F4EE", d: note, transform: "translate(-0.9 -0.6)" }),
      s("path", { fill: "#FE2C55", d: note, transform: "translate(0.9 0.6)" }),
      s("path", { fill: W, d: note }),
    ];
  },
  google_business: () => [
    s("rect", { x: 1, y: 1, width: 30, height: 30, rx: 7, fill: "#1A73E8" }),
    s("path", { fill: W, d: "M8.5 8h15l1.8 5.6a2.9 2.9 0 0 1-5.3 1.6 2.9 2.9 0 0 1-4 0 2.9 2.9 0 0 1-4 0 2.9 2.9 0 0 1-5.3-1.6z" }),
    s("path", { fill: W, d: "M8.5 17.6h15V25h-15z" }),
    s("rect", { x: 14, y: 20, width: 4, height: 5, fill: "#1A73E8" }),
  ],
  mailchimp: () => [
    s("circle", { cx: 16, cy: 16, r: 15, fill: "#FFE01B" }),
    s("rect", { x: 8, y: 10.5, width: 16, height: 11.5, rx: 1.6, fill: "none", stroke: "#241C15", "stroke-width": 2 }),
    s("path", { d: "M8.6 11.5 16 17.2l7.4-5.7", fill: "none", stroke: "#241C15", "stroke-width": 2, "stroke-linejoin": "round" }),
  ],
  youtube: () => [
    s("rect", { x: 2, y: 7, width: 28, height: 18, rx: 6, fill: "#FF0000" }),
    s("path", { fill: W, d: "M13.2 11.5v9l7.8-4.5z" }),
  ],
  pinterest: () => [
    s("circle", { cx: 16, cy: 16, r: 15, fill: "#E60023" }),
    s("path", { fill: W, d: "M16.6 6.8c-5.3 0-8 3.8-8 7 0 1.9.7 3.6 2.3 4.3.3.1.5 0 .6-.3l.2-.9c.1-.3 0-.4-.2-.7-.5-.5-.8-1.2-.8-2.2 0-2.8 2.1-5.4 5.5-5.4 3 0 4.7 1.8 4.7 4.3 0 3.2-1.4 5.9-3.5 5.9-1.2 0-2-1-1.8-2.1.3-1.4 1-3 1-4 0-.9-.5-1.7-1.5-1.7-1.2 0-2.2 1.3-2.2 3 0 1.1.4 1.8.4 1.8l-1.5 6.3c-.4 1.9-.1 4.2 0 4.4 0 .1.2.2.3.1.1-.2 1.5-1.8 1.9-3.4l.7-2.9c.4.7 1.5 1.3 2.6 1.3 3.4 0 5.7-3.1 5.7-7.3 0-3.2-2.7-6.2-6.7-6.2z" }),
  ],
  shopify: () => [
    s("rect", { x: 1, y: 1, width: 30, height: 30, rx: 7, fill: "#4B7F2A" }),
    s("path", { fill: W, d: "M9.5 12.5h13l-1.2 13h-10.6z" }),
    s("path", { d: "M13 12.5V11a3 3 0 0 1 6 0v1.5", fill: "none", stroke: W, "stroke-width": 2 }),
  ],
  slack: () => [
    s("rect", { x: 1, y: 1, width: 30, height: 30, rx: 7, fill: "#4A154B" }),
    s("rect", { x: 7, y: 12, width: 18, height: 3, rx: 1.5, fill: "#36C5F0" }),
    s("rect", { x: 7, y: 17, width: 18, height: 3, rx: 1.5, fill: "#2EB67D" }),
    s("rect", { x: 12, y: 7, width: 3, height: 18, rx: 1.5, fill: "#ECB22E" }),
    s("rect", { x: 17, y: 7, width: 3, height: 18, rx: 1.5, fill: "#E01E5A" }),
  ],
};

const NAMES = {
  facebook: "Facebook",
  instagram: "Instagram",
  linkedin: "LinkedIn",
  tiktok: "TikTok",
  google_business: "Google Business Profile",
  mailchimp: "Mailchimp",
  youtube: "YouTube",
  pinterest: "Pinterest",
  shopify: "Shopify",
  slack: "Slack",
};

export function platformName(platform, capabilities) {
  const found = (capabilities || []).find((p) => p.platform === platform);
  if (found && found.display_name) return found.display_name;
  return NAMES[platform] || (platform ? platform[0].toUpperCase() + platform.slice(1).replaceAll("_", " ") : "Unknown");
}

/**
 * The platform's icon. Decorative (hidden from screen readers) unless `label` is
 * given, because a name is always written next to it.
 */
export function platformIcon(platform, { small = false, label = "" } = {}) {
  const draw = DRAW[platform];
  const children = draw
    ? draw()
    : [
        s("circle", { cx: 16, cy: 16, r: 15, fill: "#57606a" }),
        s("text", { x: 16, y: 21, "text-anchor": "middle", fill: W, "font-size": 15, "font-weight": 700 },
          (platform || "?")[0].toUpperCase()),
      ];
  const attrs = { viewBox: "0 0 32 32", class: small ? "platform-icon sm" : "platform-icon", focusable: "false" };
  if (label) {
    attrs.role = "img";
    attrs["aria-label"] = label;
  } else {
    attrs["aria-hidden"] = "true";
  }
  return s("svg", attrs, children);
}
