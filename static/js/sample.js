// Sample page: live progress while the worker classifies, one-click review with keyboard shortcuts.
// The results part is server-rendered; this script swaps in a fresh copy when something changed.
(function () {
  "use strict";
  var progress = document.getElementById("progress");
  var results = document.getElementById("results");
  if (!progress || !results) return;
  var statusUrl = progress.dataset.statusUrl;
  var resultsUrl = progress.dataset.resultsUrl;
  var finished = parseInt(progress.dataset.finished, 10) || 0;
  var selected = null; // data-cell id of the selected cell
  var POLL_MS = 1500;
  var SIGNED_OUT = 401; // the sign-in expired: reloading takes the user to the login page and back

  var GONE = 404; // someone deleted the sample while this page was open

  // The share the page was drawn with, from its aria-valuenow: the Content-Security-Policy refuses
  // the style attribute that once carried it.
  var startBar = progress.querySelector(".progress");
  startBar.querySelector("span").style.width = (startBar.getAttribute("aria-valuenow") || 0) + "%";

  function signInAgain() { window.location.reload(); }

  // Polling stops; the page says why instead of showing a sample that no longer exists as live.
  function sampleGone() {
    progress.querySelector(".progress").classList.remove("complete");
    document.getElementById("progress-text").textContent =
      "This sample has been deleted since the page was opened. Go back to the sample list.";
    results.querySelectorAll("button").forEach(function (button) { button.disabled = true; });
  }

  // Where the focus is in the results, as a place that survives a redraw: the cell's row, and the
  // type button or link in it; or, on any other control (a photograph's buttons, the formula's
  // "How cells are counted", the page links), the part it is in and which of that part's like
  // controls it is. null where the focus is elsewhere.
  function focusPlace(element) {
    if (!element || element === results || !results.contains(element)) return null;
    var row = element.closest("tr.cellrow");
    if (!row) {
      var part = element.parentElement.closest("[id]");
      var kind = controlKind(element);
      return { part: part.id, kind: kind, nth: likeControls(part, kind).indexOf(element),
               open: element.tagName === "SUMMARY" && element.parentElement.open };
    }
    var control = element === row ? null : element.closest("button[name=cell_type], a");
    return { cell: row.dataset.cell, type: control && control.value, link: control && control.tagName === "A" };
  }

  // What makes two controls the same one in two drawings of a part: the fresh HTML holds new
  // elements, never the ones the focus was on.
  function controlKind(element) {
    return [element.tagName, element.getAttribute("name"), element.getAttribute("value"),
      element.getAttribute("href"), element.dataset.role, element.textContent.trim()].join("\u0000");
  }

  function likeControls(part, kind) {
    return Array.prototype.filter.call(part.querySelectorAll(kind.split("\u0000")[0]),
      function (candidate) { return controlKind(candidate) === kind; });
  }

  // Swapping the results' HTML drops the focused element, and the focus falls back to <body>:
  // a keyboard or screen-reader user would lose their place at every review and every photograph
  // that finishes. The same row, and the same control in it where there is one, takes it back;
  // elsewhere the same control of the same part (the card, the formula), or, where the redraw
  // took that control away, the part's first control, then the results' first heading.
  function restoreFocus(place) {
    if (!place) return;
    // Only from <body>, where the redraw dropped it: a review's answer comes a moment after the
    // click, and a user who went on meanwhile (writing the reason for signing, say) keeps the
    // focus there; put back on the row, the next letter typed would relabel its cell.
    if (document.activeElement && document.activeElement !== document.body) return;
    if (place.part) { restorePartFocus(place); return; }
    var row = results.querySelector('tr.cellrow[data-cell="' + place.cell + '"]');
    if (!row) return;
    var control = place.type ? row.querySelector('button[name=cell_type][value="' + place.type + '"]')
      : place.link ? row.querySelector("a") : null;
    (control || row).focus({ preventScroll: true });
  }

  function restorePartFocus(place) {
    var part = document.getElementById(place.part);
    var control = null;
    // A part the redraw took away (its photograph deleted meanwhile, or now on another page) has
    // no control to go back to: the like ones elsewhere are other photographs' (their Delete
    // buttons), where the user never was.
    if (part && results.contains(part)) {
      var like = likeControls(part, place.kind);
      control = like[place.nth] || like[0] || null;
      if (control && control.tagName === "SUMMARY" && place.open) control.parentElement.open = true;
      if (!control) control = part.querySelector("a[href], button:not(:disabled), summary");
    }
    if (!control) {
      control = results.querySelector("h2");
      if (control) control.setAttribute("tabindex", "-1");
    }
    if (control) control.focus({ preventScroll: true });
  }

  // The page's own fetches are nobody's use of it: they leave the sign-in's unused time running
  // (the header; static/js/idle.js).
  function fetchHtml(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "text/html", "X-Leukoscope-Background": "1" } })
      .then(function (response) { if (!response.ok) throw new Error(response.status); return response.text(); });
  }

  function refreshResults(place) {
    return fetchHtml(resultsUrl).then(function (html) {
      var keep = place || focusPlace(document.activeElement);
      results.innerHTML = html;
      refreshSignOff(results.querySelector("template[data-role=sign-off-fresh]"));
      if (selected) select(selected, false);
      restoreFocus(keep);
    });
  }

  // A review changes its photograph's card, the formula beside it and the sign-off panel, nothing
  // else: those alone are fetched and swapped in, where a long sample's whole results would be
  // hundreds of KiB to fetch and lay out again at every click. A photograph that finishes changes
  // its own card the same way: the cards of imageIds (none: the sidebar and panel alone).
  function refreshPhotographs(imageIds, place) {
    if (!showsCards(imageIds)) return refreshResults(place);
    var separator = resultsUrl.indexOf("?") < 0 ? "?" : "&";
    return fetchHtml(resultsUrl + separator + "image=" + imageIds.map(encodeURIComponent).join(",")).then(function (html) {
      return swapInCards(html, imageIds, place);
    }, function (error) {
      // One of them deleted meanwhile (another tab): the page's cards changed, all are drawn again.
      if (error.message === String(GONE)) return refreshResults(place);
      throw error;
    });
  }

  function showsCards(imageIds) {
    return results.querySelector("aside.sidebar") !== null &&
      imageIds.every(function (id) { return results.querySelector("#image-" + id) !== null; });
  }

  // The cards of imageIds, the sidebar and the sign-off panel from the results part's html (a
  // fetch's, or a review's answer's), each swapped in for its own.
  function swapInCards(html, imageIds, place) {
    var cards = imageIds.map(function (id) { return results.querySelector("#image-" + id); });
    var sidebar = results.querySelector("aside.sidebar");
    var fresh = document.createElement("template");
    fresh.innerHTML = html;
    var freshCards = imageIds.map(function (id) { return fresh.content.querySelector("#image-" + id); });
    var freshSidebar = fresh.content.querySelector("aside.sidebar");
    if (cards.indexOf(null) >= 0 || !sidebar || freshCards.indexOf(null) >= 0 || !freshSidebar) {
      return refreshResults(place);
    }
    var keep = place || focusPlace(document.activeElement);
    cards.forEach(function (card, index) { card.replaceWith(freshCards[index]); });
    sidebar.replaceWith(freshSidebar);
    refreshSignOff(fresh.content.querySelector("template[data-role=sign-off-fresh]"));
    if (selected) select(selected, false);
    restoreFocus(keep);
    return Promise.resolve();
  }

  // The sign-off panel's count and refusals follow the results; it is left alone while someone is
  // writing in it, so that a photograph finishing never wipes a half-typed reason.
  function refreshSignOff(fresh) {
    if (!fresh) return;
    fresh.remove();
    var current = document.getElementById("sign-off");
    var section = fresh.content.querySelector("#sign-off");
    if (!current || !section) return;
    var typing = current.contains(document.activeElement) ||
      Array.prototype.some.call(current.querySelectorAll("textarea"), function (box) { return box.value.trim(); });
    if (!typing) {
      keepInvalidMarks(current, section);
      keepUnsentInput(current, section);
      current.replaceWith(section);
      return;
    }
    // Kept for the half-typed reason, the panel still signs the result now on this page.
    var seen = current.querySelector("input[name=result_seen]");
    var fresher = section.querySelector("input[name=result_seen]");
    if (seen && fresher) seen.value = fresher.value;
  }

  // A refused signature marks the fields it was about invalid on the page it returns to alone (the
  // server keeps the refusal for that one drawing): a fresh panel keeps each mark while it still
  // lists the refusal (data-code) the field answers (data-refusal).
  function keepInvalidMarks(current, section) {
    current.querySelectorAll('[aria-invalid="true"][data-refusal]').forEach(function (field) {
      var code = field.getAttribute("data-refusal");
      var fresh = section.querySelector('[data-refusal="' + code + '"]');
      if (fresh && section.querySelector('.refusals li[data-code="' + code + '"]')) {
        fresh.setAttribute("aria-invalid", "true");
      }
    });
  }

  // What the user chose in the panel and has not sent (a ticked "keep unidentified", a target
  // count picked but not set, a reason) goes into the fresh panel where its form still offers the
  // same field: a photograph finishing while the focus was elsewhere untied the box. A form no
  // longer offered (signed meanwhile, nothing left unidentified) takes its input with it, and a
  // tick its box's words no longer match: it agreed to keep 1 unidentified cell, not the 2 a
  // photograph finishing made them, and is asked again.
  function keepUnsentInput(current, section) {
    current.querySelectorAll("form[data-role]").forEach(function (form) {
      var fresh = section.querySelector('form[data-role="' + form.getAttribute("data-role") + '"]');
      if (!fresh) return;
      Array.prototype.forEach.call(form.elements, function (field) {
        if (!field.name || field.type === "hidden") return;
        var twin = fresh.elements.namedItem(field.name);
        if (!twin || twin.type !== field.type) return;
        if (field.type === "checkbox" || field.type === "radio") {
          if (field.checked !== field.defaultChecked && labelText(field) === labelText(twin)) {
            twin.checked = field.checked;
          }
        } else if (field.tagName === "SELECT") {
          var chosen = field.options[field.selectedIndex];
          var offered = Array.prototype.some.call(twin.options, function (option) { return option.value === field.value; });
          if (chosen && !chosen.defaultSelected && offered) twin.value = field.value;
        } else if (field.value !== field.defaultValue) {
          twin.value = field.value;
        }
      });
    });
  }

  function labelText(field) {
    var label = field.closest("label") || (field.labels && field.labels[0]);
    return label ? label.textContent.replace(/\s+/g, " ").trim() : "";
  }

  // "No classifier worker is running" was true when the page was drawn; a photograph moving on
  // (the worker came up, say just after the site started) makes it false.
  var startedFinished = Number(progress.dataset.finished || 0);
  function dropNoClassifierNote(data) {
    var note = document.querySelector("[data-role=no-classifier]");
    // counts, not images: the poll lists only the photographs of the page shown.
    var movedOn = data.complete || data.finished > startedFinished || Boolean(data.counts && data.counts.processing);
    if (note && movedOn) note.remove();
  }

  function spinner() {
    var span = document.createElement("span");
    span.className = "spinner";
    return span;
  }

  function setProgress(data) {
    dropNoClassifierNote(data);
    var bar = progress.querySelector(".progress");
    bar.querySelector("span").style.width = data.percent + "%";
    bar.setAttribute("aria-valuenow", data.percent);
    bar.classList.toggle("complete", data.complete);
    var text = document.getElementById("progress-text");
    var failed = (data.counts && data.counts.failed) || 0;
    var said;
    if (data.complete) {
      // As _progress_text.html words it.
      var all = data.total === 1 ? "The photograph is classified" : data.total === 2 ? "Both photographs classified"
        : "All " + data.total + " photographs classified";
      said = all + (failed ? " (" + failed + " failed)" : "");
    } else {
      said = data.finished + " of " + data.total + " photographs classified";
    }
    // A live region (role=status): written again unchanged at every poll, a screen reader would
    // read the same count out every few seconds.
    if (text.textContent.trim() !== said) {
      text.textContent = said;
      if (!data.complete) text.insertBefore(spinner(), text.firstChild);
    }
    data.images.forEach(function (image) {
      var card = document.getElementById("image-" + image.id);
      if (!card || card.dataset.status === image.status) return;
      var badge = card.querySelector("[data-role=status]");
      if (badge && (image.status === "processing" || image.status === "queued")) {
        // The state the card was drawn in, which the badge alone no longer shows: refreshFinished
        // draws a card again whose photograph is in another (done, queued again, ...).
        if (!card.dataset.drawn) card.dataset.drawn = card.dataset.status;
        badge.className = "badge " + image.status;
        badge.textContent = image.status === "processing" ? "Processing" : "Queued";
        card.dataset.status = image.status;
        var state = card.querySelector(".image-state");
        if (state && image.status === "processing") state.lastChild.textContent = "Classifying…";
      }
    });
  }

  // The cards of the photographs that finished since the page was drawn: a card drawn in another
  // state than the poll's (setProgress follows only the badge to queued and processing; a classified
  // photograph queued again is drawn again too, its cells then shown as earlier results). Redrawing all the
  // results instead laid out a 500-cell page again (some 17,000 elements, over a second on a slow
  // PC) each time one photograph finished, and a page of 100 cards when one on another page did.
  // A photograph added or deleted meanwhile changes the page's cards: all are drawn again.
  function refreshFinished(data) {
    var cards = results.querySelectorAll("section.image-card");
    if (cards.length !== data.images.length) return refreshResults();
    var finishedIds = [];
    for (var i = 0; i < data.images.length; i++) {
      var card = document.getElementById("image-" + data.images[i].id);
      if (!card || !results.contains(card)) return refreshResults();
      if ((card.dataset.drawn || card.dataset.status) !== data.images[i].status) finishedIds.push(data.images[i].id);
    }
    return refreshPhotographs(finishedIds);
  }

  // add_cell.js: the drawn boxes of these photographs were classified.
  results.addEventListener("photographs-changed", function (event) {
    refreshPhotographs(event.detail.ids).catch(function () {}); // add_cell.js asks again at its next poll
  });

  function poll() {
    fetch(statusUrl, { credentials: "same-origin", headers: { Accept: "application/json", "X-Leukoscope-Background": "1" } })
      .then(function (response) {
        if (response.status === SIGNED_OUT) { signInAgain(); return new Promise(function () {}); }
        if (response.status === GONE) { sampleGone(); return new Promise(function () {}); }
        if (!response.ok) throw new Error(response.status);
        return response.json();
      })
      .then(function (data) {
        setProgress(data);
        var changed = data.finished !== finished;
        // A box being drawn, or drawn and waiting for "Add this box", would go with the card it is
        // on: the results wait until it is sent or cancelled, and the poll goes on meanwhile.
        var deferred = changed && results.querySelector("[data-role=add-cell].drawing") !== null;
        var next = changed && !deferred ? refreshFinished(data) : Promise.resolve();
        return next.then(function () {
          // Only once the results are drawn: a fetch that failed is made again at the next poll,
          // rather than leaving the panel behind the progress line for good.
          if (!deferred) finished = data.finished;
          progress.dataset.complete = data.complete && !deferred ? "1" : "0";
          if (!data.complete || deferred) window.setTimeout(poll, POLL_MS);
        });
      })
      .catch(function () { window.setTimeout(poll, POLL_MS * 3); });
  }

  function rows() { return Array.prototype.slice.call(results.querySelectorAll("tr.cellrow")); }

  function select(cellId, scroll) {
    selected = cellId;
    results.querySelectorAll(".selected").forEach(function (el) { el.classList.remove("selected"); });
    results.querySelectorAll('[data-cell="' + cellId + '"]').forEach(function (el) { el.classList.add("selected"); });
    var row = results.querySelector('tr.cellrow[data-cell="' + cellId + '"]');
    if (row && scroll) {
      row.focus({ preventScroll: true });
      row.scrollIntoView({ block: "nearest", behavior: "smooth" });
    }
  }

  function move(step) {
    var all = rows();
    if (!all.length) return;
    var index = all.findIndex(function (row) { return row.dataset.cell === selected; });
    index = index < 0 ? 0 : Math.min(all.length - 1, Math.max(0, index + step));
    select(all[index].dataset.cell, true);
  }

  // F: the next row still flagged for review after the selected one, round to the page's first;
  // on a long differential the flagged calls are the few a reviewer must not scroll past.
  function moveToFlagged() {
    var all = rows();
    var start = all.findIndex(function (row) { return row.dataset.cell === selected; });
    for (var step = 1; step <= all.length; step++) {
      var row = all[(start + step) % all.length];
      if (row.querySelector(".badge.flag")) { select(row.dataset.cell, true); return; }
    }
    announce("No cell on this page still needs review.");
  }

  // A polite live region outside the parts swapped in after a review: a screen reader hears what the
  // review did, which the redrawn row only shows.
  var reviewStatus = document.getElementById("review-status");

  function announce(text) {
    if (!reviewStatus) return;
    // Emptied first, so that the same words twice running (two cells confirmed) are read twice.
    reviewStatus.textContent = "";
    window.setTimeout(function () { reviewStatus.textContent = text; }, 100);
  }

  // "Cell 3 on field-07.jpg relabelled neutrophil", or "confirmed as" where the type pressed is the
  // one it has. The photograph is named: every photograph's cells are numbered from 1, and on a
  // sample of one-cell photographs every cell is cell 1.
  function reviewNews(form, type) {
    var button = Array.prototype.find.call(form.querySelectorAll("button[name=cell_type]"),
      function (candidate) { return candidate.value === type; });
    var row = form.closest("tr.cellrow");
    var number = row && row.cells.length ? row.cells[0].textContent.trim() : "";
    var heading = form.closest(".image-card") && form.closest(".image-card").querySelector("header h2");
    var on = heading ? " on " + heading.textContent.trim() : "";
    // A type whose key is not its initial is labelled with it ("Platelet (G)"): not said here.
    var label = ((button && button.getAttribute("aria-label")) || type).replace(/\s*\([^)]*\)$/, "")
      .toLowerCase();
    var confirmed = button && button.getAttribute("aria-pressed") === "true";
    return "Cell " + number + on + (confirmed ? " confirmed as " : " relabelled ") + label;
  }

  function submitReview(form, type) {
    // Taken before the buttons are disabled, which moves the focus off a pressed one.
    var place = focusPlace(document.activeElement) || { cell: form.closest("tr").dataset.cell };
    var news = reviewNews(form, type);
    var body = new FormData(form);
    body.set("cell_type", type);
    var card = form.closest("section.image-card");
    // The answer then carries the card, the sidebar and the panel: no second request to draw them.
    if (card) body.set("answer_with", "card");
    form.querySelectorAll("button").forEach(function (b) { b.disabled = true; });
    return fetch(form.action, {
      method: "POST", body: body, credentials: "same-origin",
      headers: { Accept: "application/json", "X-CSRFToken": body.get("csrfmiddlewaretoken") },
    })
      .then(function (response) {
        if (response.status === SIGNED_OUT) {
          window.alert("Your sign-in has expired, so this review was not saved. Sign in again and repeat it.");
          signInAgain();
          return new Promise(function () {});
        }
        // A proxy's or server's own error page is no JSON: say so rather than a parser's message.
        return response.json().catch(function () { return {}; }).then(function (data) {
          if (!response.ok) {
            var refusal = new Error(data.error || "The review was not saved (the site answered " +
              response.status + "). Reload the page and try again.");
            // Refused for a cell someone reviewed meanwhile: the answer holds it as it is now.
            if (data.cell) refusal.answer = data;
            throw refusal;
          }
          return data;
        });
      })
      .then(function (data) { return drawReviewed(data, card, place); })
      .then(function () { announce(news); })
      .catch(function (error) {
        function tell() {
          window.alert(error.message);
          form.querySelectorAll("button").forEach(function (b) { b.disabled = false; });
        }
        if (!error.answer) { tell(); return; }
        // The card shows the label the refusal names before the message does, so that the reviewer,
        // still disagreeing, decides again with one click rather than a reload.
        drawReviewed(error.answer, card, place).catch(function () {}).then(function () { afterPaint(tell); });
      });
  }

  // The reviewed cell's card from the answer (or fetched where the answer holds none), with the
  // sidebar and the sign-off panel.
  function drawReviewed(data, card, place) {
    if (card && data.results_html) return swapInCards(data.results_html, [card.dataset.image], place);
    return card ? refreshPhotographs([card.dataset.image], place) : refreshResults(place);
  }

  // An alert shown at once holds the page as it was last painted: the redrawn card would appear
  // only once it is dismissed.
  function afterPaint(callback) {
    window.requestAnimationFrame(function () { window.setTimeout(callback, 0); });
  }

  results.addEventListener("click", function (event) {
    var button = event.target.closest("button[name=cell_type]");
    if (button) {
      event.preventDefault();
      var form = button.closest("form");
      select(form.closest("tr").dataset.cell, false);
      submitReview(form, button.value);
      return;
    }
    if (event.target.closest("a, form")) return;
    var target = event.target.closest("[data-cell]");
    if (target) select(target.dataset.cell, true);
  });

  // Tabbing into a row's buttons selects that row, so its keys act on the row the focus is in.
  results.addEventListener("focusin", function (event) {
    var row = event.target.closest("tr.cellrow");
    if (row && row.dataset.cell !== selected) select(row.dataset.cell, false);
  });

  // The keys are the cell table's (WCAG 2.1.4): they act from a cell's row and the buttons and link
  // in it, or with nothing focused (the page just opened, where J starts a review, or clicked beside
  // its controls). On a link, button or field elsewhere (the nav, a photograph's card, the sign-off
  // panel) a letter is that control's or nothing, and the focus stays where it is.
  function ownsKeys(target) {
    if (target === document.body || target === document.documentElement) return true;
    return results.contains(target) && Boolean(target.closest("tr.cellrow"));
  }

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.target.closest("input, textarea, select")) return;
    if (!ownsKeys(event.target)) return;
    var key = event.key;
    // The arrows scroll the page unless the focus is on a cell's row: J and K always move.
    var inRow = event.target.closest && event.target.closest("tr.cellrow");
    if (key === "j" || (key === "ArrowDown" && inRow)) { event.preventDefault(); move(1); return; }
    if (key === "k" || (key === "ArrowUp" && inRow)) { event.preventDefault(); move(-1); return; }
    if (key === "f" || key === "F") { event.preventDefault(); moveToFlagged(); return; }
    if (!selected) return;
    var row = results.querySelector('tr.cellrow[data-cell="' + selected + '"]');
    if (!row) return;
    if (key === "Enter") {
      // A focused button or link answers Enter itself: a type button relabels, it does not open.
      if (!event.target.closest("a, button, summary")) window.location.href = row.dataset.href;
      return;
    }
    var button = row.querySelector('button[data-key="' + key.toUpperCase() + '"]');
    if (button && key.length === 1) { event.preventDefault(); submitReview(button.closest("form"), button.value); }
  });

  var addInput = document.getElementById("add-images-input");
  if (addInput) addInput.addEventListener("change", function () {
    var count = addInput.files.length;
    var maxFiles = parseInt(addInput.form.dataset.maxFiles, 10) || 50;
    var warning = document.getElementById("add-images-warning");
    // The server refuses the batch too; saying so here spares a long upload that would be refused.
    if (count > maxFiles) {
      warning.textContent = count + " photographs chosen: at most " + maxFiles +
        " per upload. Choose fewer, or add them in several batches.";
      warning.hidden = false;
      addInput.value = "";
      return;
    }
    warning.hidden = true;
    if (count) addInput.form.submit();
  });

  if (progress.dataset.complete !== "1") window.setTimeout(poll, POLL_MS);
})();
