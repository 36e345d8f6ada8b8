// Sample page: draw a box around a white cell the detector missed. "Add a missed cell" puts a
// photograph in drawing mode; a drag on it (mouse, finger or pen) gives the box, converted from the
// picture on the screen to the photograph's own pixels, and fills the photograph's small form
// (which can also be filled by hand). The box stays drawn until "Add this box" sends it: a drag
// that missed is drawn again, not added. While boxes wait for the worker, the results part is
// watched until they are classified, and their cards then drawn again.
(function () {
  "use strict";
  var results = document.getElementById("results");
  var progress = document.getElementById("progress");
  if (!results || !progress) return;
  var resultsUrl = progress.dataset.resultsUrl;
  var POLL_MS = 2000;
  var GONE = 404;
  var drag = null; // { panel, frame, pointer, start, startClient }

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

  // The box drawn on the photograph, placed in shares of it so that it stays on its cell when the
  // page is resized or zoomed before it is sent.
  function showBox(panel, frame, a, b) {
    var rect = frame.querySelector(".add-cell-rubber");
    if (!rect) {
      rect = document.createElement("div");
      rect.className = "add-cell-rubber";
      frame.appendChild(rect);
    }
    var width = parseInt(panel.dataset.width, 10), height = parseInt(panel.dataset.height, 10);
    rect.style.left = Math.min(a.x, b.x) / width * 100 + "%";
    rect.style.top = Math.min(a.y, b.y) / height * 100 + "%";
    rect.style.width = Math.abs(b.x - a.x) / width * 100 + "%";
    rect.style.height = Math.abs(b.y - a.y) / height * 100 + "%";
  }

  function clearBox(frame) {
    var rect = frame.querySelector(".add-cell-rubber");
    if (rect) rect.remove();
  }

  // The box the form holds, which "Add this box" sends, drawn on the photograph (none while the
  // form holds no whole box): what is shown is always what would be sent.
  function showFormBox(panel) {
    var e = panel.querySelector("[data-role=add-cell-form]").elements;
    var values = [e.x0, e.y0, e.x1, e.y1].map(function (field) { return field.valueAsNumber; });
    if (values.some(isNaN)) { clearBox(frameOf(panel)); return; }
    showBox(panel, frameOf(panel), { x: values[0], y: values[1] }, { x: values[2], y: values[3] });
  }

  var EDGES = ["x0", "y0", "x1", "y1"];

  // What is wrong with the box the form holds, as sentences, and the fields at fault. The server
  // judges the box again (its least size among it) and says why it refuses one; these say it beside
  // the fields, before anything is sent, where the browser's own bubbles named no edge.
  function boxProblems(form) {
    var problems = [], wrong = [];
    EDGES.forEach(function (name) {
      var field = form.elements[name];
      var edge = field.dataset.edge, max = parseInt(field.max, 10);
      var value = field.valueAsNumber;
      var said = edge.charAt(0).toUpperCase() + edge.slice(1);
      if (field.value.trim() === "" && !field.validity.badInput) {
        problems.push({ field: field, text: "Give the box's " + edge + "." });
      } else if (isNaN(value) || value !== Math.round(value)) {
        problems.push({ field: field, text: said + " must be a whole number of pixels." });
      } else if (value < 0 || value > max) {
        problems.push({ field: field, text: said + " must be 0 to " + max + ": the photograph is " +
          form.elements.x0.max + " by " + form.elements.y0.max + " pixels." });
      } else {
        return;
      }
      wrong.push(field);
    });
    var e = form.elements;
    [[e.x0, e.x1, "right edge", "left edge", "right of"], [e.y0, e.y1, "bottom edge", "top edge", "below"]]
      .forEach(function (pair) {
        if (wrong.indexOf(pair[0]) >= 0 || wrong.indexOf(pair[1]) >= 0) return;
        if (pair[1].valueAsNumber > pair[0].valueAsNumber) return;
        problems.push({ field: pair[1], text: "The " + pair[2] + " (" + pair[1].value + ") must be " + pair[4] +
          " the " + pair[3] + " (" + pair[0].value + ")." });
        wrong.push(pair[1]);
      });
    // In the fields' order, so that the first sentence is about the field that takes the focus.
    function order(field) { return EDGES.indexOf(field.name); }
    wrong.sort(function (a, b) { return order(a) - order(b); });
    problems.sort(function (a, b) { return order(a.field) - order(b.field); });
    return { text: problems.map(function (problem) { return problem.text; }).join(" "), wrong: wrong };
  }

  // Says the problems found (none clears them): each field at fault marked invalid and described by them.
  function showProblems(form, found) {
    var message = form.querySelector("[data-role=add-cell-error]");
    message.textContent = found.text;
    EDGES.forEach(function (name) {
      var field = form.elements[name];
      if (found.wrong.indexOf(field) >= 0) {
        field.setAttribute("aria-invalid", "true");
        field.setAttribute("aria-describedby", message.id);
      } else {
        field.removeAttribute("aria-invalid");
        field.removeAttribute("aria-describedby");
      }
    });
  }

  function setDrawing(panel, on) {
    panel.classList.toggle("drawing", on);
    var frame = frameOf(panel);
    frame.classList.toggle("drawing", on);
    // Cancelled, its box is forgotten: the form, shown again, must not hold one no longer drawn.
    if (!on) {
      clearBox(frame);
      var form = panel.querySelector("[data-role=add-cell-form]");
      form.reset();
      showProblems(form, { text: "", wrong: [] });
    }
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

  results.addEventListener("pointerdown", function (event) {
    var frame = event.target.closest(".smear-frame.drawing");
    if (!frame || !event.isPrimary || event.button !== 0 || drag) return;
    event.preventDefault();
    // The frame keeps the pointer while the drag lasts, even past the photograph's edge.
    frame.setPointerCapture(event.pointerId);
    var panel = panelOf(frame);
    var start = toPixels(panel, frame, event.clientX, event.clientY);
    drag = { panel: panel, frame: frame, pointer: event.pointerId, start: start,
             startClient: [event.clientX, event.clientY] };
  });

  // A mouse's press on the photograph would otherwise start a selection, or drag the picture.
  results.addEventListener("mousedown", function (event) {
    if (event.target.closest(".smear-frame.drawing")) event.preventDefault();
  });

  results.addEventListener("pointermove", function (event) {
    if (!drag || event.pointerId !== drag.pointer) return;
    showBox(drag.panel, drag.frame, drag.start, toPixels(drag.panel, drag.frame, event.clientX, event.clientY));
  });

  function endDrag(event) {
    if (!drag || event.pointerId !== drag.pointer) return;
    var current = drag;
    drag = null;
    var tiny = Math.abs(event.clientX - current.startClient[0]) < 3 ||
      Math.abs(event.clientY - current.startClient[1]) < 3;
    // A tap or a click without a drag, or a drag the browser took back, draws nothing: the box
    // drawn before, which the form still holds, stays shown.
    if (event.type === "pointercancel" || tiny) {
      showFormBox(current.panel);
      return;
    }
    var end = toPixels(current.panel, current.frame, event.clientX, event.clientY);
    showBox(current.panel, current.frame, current.start, end);
    var form = current.panel.querySelector("[data-role=add-cell-form]");
    form.elements.x0.value = Math.min(current.start.x, end.x);
    form.elements.y0.value = Math.min(current.start.y, end.y);
    form.elements.x1.value = Math.max(current.start.x, end.x);
    form.elements.y1.value = Math.max(current.start.y, end.y);
    // A box drawn answers what was said of the typed one; one drawn too small is still said.
    if (form.querySelector("[data-role=add-cell-error]").textContent) showProblems(form, boxProblems(form));
    // Sent by its own button, focused where it is so that the box stays in view; the server judges
    // the box (inside the photograph, large enough) and says why it refuses one.
    form.querySelector("button[type=submit]").focus({ preventScroll: true });
  }

  results.addEventListener("pointerup", endDrag);
  results.addEventListener("pointercancel", endDrag);

  // A box typed into the form is drawn too; once problems were said, they follow the typing.
  results.addEventListener("input", function (event) {
    var form = event.target.closest("[data-role=add-cell-form]");
    if (!form) return;
    showFormBox(form.closest("[data-role=add-cell]"));
    if (form.querySelector("[data-role=add-cell-error]").textContent) showProblems(form, boxProblems(form));
  });

  // This check, said beside the fields, stands for the browser's (the form is novalidate: its
  // bubbles named no edge and were gone at the next key). The form is shown by this script alone.
  results.addEventListener("submit", function (event) {
    var form = event.target.closest("[data-role=add-cell-form]");
    if (!form) return;
    var found = boxProblems(form);
    showProblems(form, found);
    if (!found.wrong.length) return;
    event.preventDefault();
    found.wrong[0].focus();
  }, true);

  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape") return;
    drag = null;
    results.querySelectorAll("[data-role=add-cell].drawing").forEach(function (panel) { setDrawing(panel, false); });
  });

  function pendingIn(root) { return root.querySelectorAll("[data-role=pending-cell]").length; }

  // The photographs whose drawn boxes wait for the worker, by id.
  function waitingPhotographs() {
    var ids = [];
    results.querySelectorAll("[data-role=pending-cell]").forEach(function (cell) {
      var card = cell.closest(".image-card");
      if (card && ids.indexOf(card.dataset.image) < 0) ids.push(card.dataset.image);
    });
    return ids;
  }

  // Only the cards of those photographs are fetched (the whole results of a 500-cell sample were
  // 2 MB every two seconds); once their waiting boxes change, sample.js swaps in those cards, the
  // formula and the sign-off panel.
  function pollPending() {
    var ids = waitingPhotographs();
    if (!ids.length || drag || results.querySelector("[data-role=add-cell].drawing")) {
      window.setTimeout(pollPending, POLL_MS);
      return;
    }
    var separator = resultsUrl.indexOf("?") < 0 ? "?" : "&";
    // A poll is nobody's use of the page: the header leaves the sign-in's unused time running (idle.js).
    fetch(resultsUrl + separator + "image=" + ids.join(","),
          { credentials: "same-origin", headers: { Accept: "text/html", "X-Leukoscope-Background": "1" } })
      .then(function (response) {
        // One of them deleted meanwhile (another tab): asked for again, it would be refused for good
        // and the others' cards never drawn again. sample.js draws the page's cards anew.
        if (response.status === GONE) return null;
        if (!response.ok) throw new Error(response.status);
        return response.text();
      })
      .then(function (html) {
        if (html === null) {
          results.dispatchEvent(new CustomEvent("photographs-changed", { detail: { ids: ids } }));
          return;
        }
        var fresh = document.createElement("template");
        fresh.innerHTML = html;
        var shown = ids.reduce(function (n, id) {
          var card = document.getElementById("image-" + id);
          return n + (card ? pendingIn(card) : 0);
        }, 0);
        if (pendingIn(fresh.content) !== shown) {
          results.dispatchEvent(new CustomEvent("photographs-changed", { detail: { ids: ids } }));
        }
      })
      .catch(function () {})
      .then(function () { window.setTimeout(pollPending, POLL_MS); });
  }

  window.setTimeout(pollPending, POLL_MS);
})();
