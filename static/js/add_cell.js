// Sample page: draw a box around a white cell the detector missed. "Add a missed cell" puts a
// photograph in drawing mode; a mouse drag on it gives the box, converted from the picture on the
// screen to the photograph's own pixels, and the box is posted with the photograph's small form
// (which can also be filled by hand). While boxes wait for the worker, the results part is
// refreshed until they are classified.
(function () {
  "use strict";
  var results = document.getElementById("results");
  var progress = document.getElementById("progress");
  if (!results || !progress) return;
  var resultsUrl = progress.dataset.resultsUrl;
  var POLL_MS = 2000;
  var drag = null; // { panel, frame, rect, x, y }

  function panelOf(element) {
    var card = element.closest(".image-card");
    return card ? card.querySelector("[data-role=add-cell]") : null;
  }

  function frameOf(panel) {
    return panel.closest(".image-card").querySelector(".smear-frame");
  }

  // A point of the page as photograph pixels, clamped to the photograph.
  function toPixels(panel, frame, clientX, clientY) {
    var bounds = frame.getBoundingClientRect();
    var width = parseInt(panel.dataset.width, 10), height = parseInt(panel.dataset.height, 10);
    var x = (clientX - bounds.left) / bounds.width * width;
    var y = (clientY - bounds.top) / bounds.height * height;
    return { x: Math.round(Math.min(width, Math.max(0, x))), y: Math.round(Math.min(height, Math.max(0, y))) };
  }

  function setDrawing(panel, on) {
    panel.classList.toggle("drawing", on);
    var frame = frameOf(panel);
    frame.classList.toggle("drawing", on);
    panel.querySelector("[data-role=add-cell-help]").hidden = !on;
    var toggle = panel.querySelector("[data-role=add-cell-toggle]");
    // Its words as the page drew them ("Add a missed cell", or a one-cell photograph's own).
    if (!toggle.dataset.label) toggle.dataset.label = toggle.textContent;
    toggle.textContent = on ? "Cancel" : toggle.dataset.label;
  }

  results.addEventListener("click", function (event) {
    var toggle = event.target.closest("[data-role=add-cell-toggle]");
    if (toggle) {
      var panel = toggle.closest("[data-role=add-cell]");
      setDrawing(panel, !panel.classList.contains("drawing"));
      return;
    }
    // While drawing, a click on the photograph is part of the box, not a cell's selection.
    if (event.target.closest(".smear-frame.drawing")) { event.stopPropagation(); event.preventDefault(); }
  }, true);

  results.addEventListener("mousedown", function (event) {
    var frame = event.target.closest(".smear-frame.drawing");
    if (!frame || event.button !== 0) return;
    event.preventDefault();
    var panel = panelOf(frame);
    var rect = document.createElement("div");
    rect.className = "add-cell-rubber";
    frame.appendChild(rect);
    var start = toPixels(panel, frame, event.clientX, event.clientY);
    drag = { panel: panel, frame: frame, rect: rect, start: start, startClient: [event.clientX, event.clientY] };
  });

  document.addEventListener("mousemove", function (event) {
    if (!drag) return;
    var bounds = drag.frame.getBoundingClientRect();
    var x0 = Math.min(drag.startClient[0], event.clientX), x1 = Math.max(drag.startClient[0], event.clientX);
    var y0 = Math.min(drag.startClient[1], event.clientY), y1 = Math.max(drag.startClient[1], event.clientY);
    drag.rect.style.left = (x0 - bounds.left) + "px";
    drag.rect.style.top = (y0 - bounds.top) + "px";
    drag.rect.style.width = (x1 - x0) + "px";
    drag.rect.style.height = (y1 - y0) + "px";
  });

  document.addEventListener("mouseup", function (event) {
    if (!drag) return;
    var current = drag;
    drag = null;
    current.rect.remove();
    // A click without a drag draws nothing.
    if (Math.abs(event.clientX - current.startClient[0]) < 3 || Math.abs(event.clientY - current.startClient[1]) < 3) return;
    var end = toPixels(current.panel, current.frame, event.clientX, event.clientY);
    var form = current.panel.querySelector("[data-role=add-cell-form]");
    form.elements.x0.value = Math.min(current.start.x, end.x);
    form.elements.y0.value = Math.min(current.start.y, end.y);
    form.elements.x1.value = Math.max(current.start.x, end.x);
    form.elements.y1.value = Math.max(current.start.y, end.y);
    // The server judges the box (inside the photograph, large enough) and says why it refuses one.
    form.submit();
  });

  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape") return;
    if (drag) { drag.rect.remove(); drag = null; }
    results.querySelectorAll("[data-role=add-cell].drawing").forEach(function (panel) { setDrawing(panel, false); });
  });

  function pendingCount() { return results.querySelectorAll("[data-role=pending-cell]").length; }

  function pollPending() {
    if (!pendingCount() || drag || results.querySelector("[data-role=add-cell].drawing")) {
      window.setTimeout(pollPending, POLL_MS);
      return;
    }
    fetch(resultsUrl, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) { if (!response.ok) throw new Error(response.status); return response.text(); })
      .then(function (html) {
        var fresh = document.createElement("div");
        fresh.innerHTML = html;
        if (fresh.querySelectorAll("[data-role=pending-cell]").length !== pendingCount()) results.innerHTML = html;
      })
      .catch(function () {})
      .then(function () { window.setTimeout(pollPending, POLL_MS); });
  }

  window.setTimeout(pollPending, POLL_MS);
})();
