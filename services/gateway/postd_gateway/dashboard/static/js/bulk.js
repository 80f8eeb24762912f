// Long work in the open: a progress bar with words, and batches that report as they go.

import { h, num, nextId } from "./dom.js";

export function progressBox(label) {
  const id = nextId("progress");
  const bar = h("progress", { id, max: 1, value: 0 });
  const words = h("p", { class: "small", role: "status", "aria-live": "polite" });
  const el = h("div", { class: "progress", hidden: true },
    h("label", { for: id }, label), bar, words);
  let lastSpoken = 0;
  return {
    el,
    start(text) {
      el.hidden = false;
      bar.removeAttribute("value"); // indeterminate until the total is known
      words.textContent = text;
    },
    set(done, total, text) {
      el.hidden = false;
      bar.max = Math.max(total, 1);
      bar.value = done;
      // Speak at most every quarter, so a long run does not flood a screen reader.
      const quarter = Math.floor((done / Math.max(total, 1)) * 4);
      if (quarter !== lastSpoken || done === total) {
        lastSpoken = quarter;
        words.textContent = text || `${num(done)} of ${num(total)} done.`;
      } else {
        words.setAttribute("aria-live", "off");
        words.textContent = text || `${num(done)} of ${num(total)} done.`;
        words.setAttribute("aria-live", "polite");
      }
    },
    finish(text) {
      bar.max = 1;
      bar.value = 1;
      words.textContent = text;
    },
  };
}

/** Run `work(batch)` over `items` in batches; `onProgress(done, total)` after each. */
export async function inBatches(items, size, work, onProgress) {
  let done = 0;
  const results = [];
  for (let i = 0; i < items.length; i += size) {
    const batch = items.slice(i, i + size);
    results.push(await work(batch));
    done += batch.length;
    onProgress(done, items.length);
  }
  return results;
}
