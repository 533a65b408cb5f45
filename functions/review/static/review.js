// The review page's progressive enhancement: decide in place with fetch, and keyboard shortcuts.
// Every form also works without this file. No inline script anywhere, so the page's CSP forbids it.
"use strict";

(function () {
  const items = () => Array.from(document.querySelectorAll(".item"));
  let current = 0;

  function setCurrent(index, focus) {
    const all = items();
    if (!all.length) return;
    current = Math.max(0, Math.min(index, all.length - 1));
    all.forEach((el, i) => el.classList.toggle("current", i === current));
    if (focus) {
      all[current].focus({ preventScroll: true });
      all[current].scrollIntoView({ block: "nearest", behavior: "smooth" });
    }
  }

  function updateSummary(review) {
    const summary = document.getElementById("summary");
    if (!summary || !review) return;
    summary.textContent = `${review.pending} pending, ${review.approved} approved, ${review.rejected} rejected.`;
    const state = document.querySelector(".state");
    if (state && review.state === "decided") {
      state.textContent = "Every image is decided; thank you. The workflow has been told.";
      state.dataset.state = "decided";
    }
    const all = document.querySelector(".approve-all button");
    if (all) {
      if (review.pending === 0) all.closest("form").remove();
      else all.textContent = `Approve all remaining (${review.pending})`;
    }
  }

  function showResult(result) {
    const card = document.getElementById(`item-${result.item_id}`);
    if (!card) return;
    const status = card.querySelector(".status");
    if (result.decision) {
      card.dataset.state = result.decision.verdict;
      status.className = `status ${result.decision.verdict}`;
      const form = card.querySelector("form.decision");
      if (form) form.remove();
    }
    status.textContent = result.message;
  }

  async function submitDecision(form, body) {
    const card = form.closest(".item");
    const status = card ? card.querySelector(".status") : document.querySelector(".notice");
    form.querySelectorAll("button").forEach((b) => (b.disabled = true));
    try {
      const response = await fetch(form.action, {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify(body),
        credentials: "same-origin",
        cache: "no-store",
      });
      const data = await response.json();
      if (data.results) data.results.forEach(showResult);
      if (data.error && status) {
        status.className = "status error";
        status.textContent = data.error;
      }
      updateSummary(data.review);
      if (!response.ok && !data.results) form.querySelectorAll("button").forEach((b) => (b.disabled = false));
      if (body.approve_all) return;
      const next = items().findIndex((el, i) => i > current && el.dataset.state === "pending");
      if (next >= 0) setCurrent(next, true);
    } catch (error) {
      if (status) {
        status.className = "status error";
        status.textContent = "Could not reach the server; your decision was not saved. Try again.";
      }
      form.querySelectorAll("button").forEach((b) => (b.disabled = false));
    }
  }

  function fieldsOf(form) {
    const data = new FormData(form);
    return { e: data.get("e"), k: data.get("k"), s: data.get("s"), csrf: data.get("csrf") };
  }

  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (!(form instanceof HTMLFormElement) || form.method !== "post") return;
    event.preventDefault();
    if (form.classList.contains("approve-all")) {
      submitDecision(form, { ...fieldsOf(form), approve_all: true });
      return;
    }
    const verdict = event.submitter ? event.submitter.value : "approved";
    const data = new FormData(form);
    const index = items().indexOf(form.closest(".item"));
    if (index >= 0) setCurrent(index, false);
    submitDecision(form, {
      ...fieldsOf(form),
      decisions: [
        {
          item_id: data.get("item_id"),
          verdict: verdict,
          reason: verdict === "rejected" ? data.get("reason") || null : null,
          note: data.get("note") || null,
        },
      ],
    });
  });

  function press(selector) {
    const card = items()[current];
    const button = card && card.querySelector(selector);
    if (button) button.click();
  }

  document.addEventListener("keydown", (event) => {
    const target = event.target;
    if (target instanceof HTMLSelectElement && event.key === "Enter" && target.value) {
      event.preventDefault(); // Enter on a chosen reason rejects: the keyboard path of "r"
      const reject = target.form && target.form.querySelector("button.reject");
      if (reject) reject.click();
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (target instanceof HTMLInputElement || target instanceof HTMLTextAreaElement || target instanceof HTMLSelectElement) return;
    const help = document.getElementById("help");
    switch (event.key) {
      case "j":
        setCurrent(current + 1, true);
        break;
      case "k":
        setCurrent(current - 1, true);
        break;
      case "a":
        press("button.approve");
        break;
      case "r": {
        const card = items()[current];
        const select = card && card.querySelector("select[name=reason]");
        if (!select) return;
        if (select.value) press("button.reject");
        else select.focus();
        break;
      }
      case "?":
        if (help.open) help.close();
        else help.showModal();
        break;
      default:
        return;
    }
    event.preventDefault();
  });

  document.addEventListener("focusin", (event) => {
    const card = event.target instanceof Element && event.target.closest(".item");
    if (card) setCurrent(items().indexOf(card), false);
  });

  const firstPending = items().findIndex((el) => el.dataset.state === "pending");
  setCurrent(firstPending >= 0 ? firstPending : 0, false);
})();
