// Follows a running training on the model pages: polls the version's progress JSON and updates the
// panel in place; when the run ends (ready, failed or cancelled) reloads so the page shows the result
// and says it.
(function () {
  "use strict";
  var panel = document.querySelector("[data-progress-url]");
  if (!panel) return;
  var url = panel.getAttribute("data-progress-url");
  var POLL_MS = 2000;

  function duration(seconds) {
    if (seconds === null || seconds === undefined || seconds === "") return "–";
    seconds = Math.round(Number(seconds));
    var h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
    if (h) return h + " h " + m + " min";
    if (m) return m + " min " + s + " s";
    return s + " s";
  }

  function figure(value) {
    return value === null || value === undefined ? "–" : Number(value).toFixed(4);
  }

  function set(field, text) {
    var node = panel.querySelector('[data-field="' + field + '"]');
    if (node) node.textContent = text;
  }

  function show(p) {
    set("status_display", p.status_display);
    set("phase", p.phase);
    set("counter", p.counter);
    // Written at each poll, the same words would be read out again every two seconds.
    var heard = panel.querySelector('[data-role="progress-announcement"]');
    if (heard && p.announcement && heard.textContent !== p.announcement) heard.textContent = p.announcement;
    ["loss", "accuracy", "val_loss", "val_accuracy"].forEach(function (key) { set(key, figure(p[key])); });
    set("elapsed_seconds", duration(p.elapsed_seconds));
    set("eta_seconds", duration(p.eta_seconds));
    // No percent: every epoch is done and the held-out figures are being measured, for a time no
    // epoch tells, so the bar moves without a share rather than sitting full.
    var finishing = p.percent === null || p.percent === undefined;
    var bar = panel.querySelector('[data-field="percent"]');
    if (bar) bar.style.width = finishing ? "" : p.percent + "%";
    var meter = panel.querySelector('[role="progressbar"]');
    if (meter) {
      meter.classList.toggle("finishing", finishing);
      if (finishing) {
        meter.removeAttribute("aria-valuenow");
        meter.setAttribute("aria-valuetext", meter.dataset.finishingText);
      } else {
        meter.setAttribute("aria-valuenow", p.percent);
        meter.removeAttribute("aria-valuetext");
      }
    }
  }

  function poll() {
    // A poll is nobody's use of the page: the header leaves the sign-in's unused time running (idle.js).
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json", "X-Leukoscope-Background": "1" } })
      .then(function (response) {
        // 401: the sign-in expired; reloading goes through the login page and back here.
        if (response.status === 401) { window.location.reload(); return new Promise(function () {}); }
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (p) {
        show(p);
        if (p.status !== "training") {
          // The page drawn again says how the run ended (views.models: ?ended=), not the badge alone.
          var address = new URL(window.location.href);
          address.searchParams.set("ended", p.id);
          window.location.replace(address.href);
          return;
        }
        window.setTimeout(poll, POLL_MS);
      })
      .catch(function () { window.setTimeout(poll, POLL_MS * 3); });
  }

  // The share the page was drawn with, from its aria-valuenow (none while finishing): the
  // Content-Security-Policy refuses the style attribute that once carried it.
  var startMeter = panel.querySelector('[role="progressbar"]');
  var startBar = panel.querySelector('[data-field="percent"]');
  if (startMeter && startBar && startMeter.hasAttribute("aria-valuenow")) {
    startBar.style.width = startMeter.getAttribute("aria-valuenow") + "%";
  }
  ["elapsed_seconds", "eta_seconds"].forEach(function (field) {
    var node = panel.querySelector('[data-field="' + field + '"]');
    if (node) node.textContent = duration(node.getAttribute("data-seconds"));
  });
  window.setTimeout(poll, POLL_MS);
})();
