// Run in the page by checks.layout_problems(): what a person would see as broken
// at this window size. Returns one sentence per problem.
(() => {
  const problems = [];
  const doc = document.documentElement;
  if (doc.scrollWidth > window.innerWidth + 1) {
    problems.push(`the page scrolls sideways: ${doc.scrollWidth}px wide in a ${window.innerWidth}px window`);
  }
  const visible = (el) => {
    const r = el.getBoundingClientRect();
    const style = getComputedStyle(el);
    return r.width > 0 && r.height > 0 && style.visibility !== "hidden" && !el.closest(".visually-hidden, [hidden], details:not([open]) > :not(summary)");
  };
  // Text cut off: a box that hides what overflows it, holding more than it shows.
  for (const el of document.querySelectorAll("main *, header *, nav *, dialog *")) {
    if (!visible(el) || el.closest("svg")) continue;
    const style = getComputedStyle(el);
    const clipsX = ["hidden", "clip"].includes(style.overflowX);
    const clipsY = ["hidden", "clip"].includes(style.overflowY);
    if ((clipsX && el.scrollWidth > el.clientWidth + 1) || (clipsY && el.scrollHeight > el.clientHeight + 1)) {
      if (el.matches(".meter, .meter *, progress")) continue;
      problems.push(`cut off: <${el.tagName.toLowerCase()} class="${el.className}"> "${(el.textContent || "").trim().slice(0, 60)}"`);
    }
  }
  // Controls and labels on top of each other (under an open modal dialog, only the
  // dialog counts: the page behind it is inert).
  const scope = document.querySelector("dialog[open]") || document;
  const boxes = [...scope.querySelectorAll("a, button, input, select, textarea, label, h1, h2, h3, .badge, .stat")]
    .filter(visible)
    .map((el) => [el, el.getBoundingClientRect()]);
  for (let i = 0; i < boxes.length; i += 1) {
    for (let j = i + 1; j < boxes.length; j += 1) {
      const [a, ra] = boxes[i];
      const [b, rb] = boxes[j];
      if (a.contains(b) || b.contains(a)) continue;
      const overlapX = Math.min(ra.right, rb.right) - Math.max(ra.left, rb.left);
      const overlapY = Math.min(ra.bottom, rb.bottom) - Math.max(ra.top, rb.top);
      if (overlapX > 2 && overlapY > 2) {
        const name = (el) => `<${el.tagName.toLowerCase()}> "${(el.textContent || el.getAttribute("aria-label") || "").trim().slice(0, 40)}"`;
        problems.push(`overlap: ${name(a)} and ${name(b)}`);
      }
    }
  }
  return problems;
})
