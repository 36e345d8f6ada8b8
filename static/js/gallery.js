// Cell gallery: select cells (click, Shift+click for a range, Ctrl/Cmd+click or the "each tap adds"
// box to toggle, arrow keys),
// press a type's key, or its button in the legend, to relabel the selection. The server answers with
// the cells' new types and the formula; tiles move to their new rows and the formula is swapped in,
// without reloading the page. A relabel refused because someone reviewed some of the cells meanwhile
// answers with those cells as they are now, drawn the same way beside the message.
// Each type's row is a listbox of its own and one stop of the Tab key (a roving tabindex: the tile
// last focused in it, else its first, has tabindex 0). Tab only moves the focus: the selection is
// what a type's key or the legend relabels, and a Tab that replaced it on the way to the legend
// relabelled a cell nobody chose (WCAG 3.2.1). Space, the arrows and clicks select.
(function () {
  "use strict";
  var gallery = document.getElementById("gallery");
  if (!gallery) return;
  var reviewUrl = gallery.dataset.reviewUrl;
  var cellUrl = gallery.dataset.cellUrl; // ends in /0/: the cell's id goes there
  var message = document.getElementById("gallery-message");
  var status = document.getElementById("gallery-status"); // polite: says what a relabelling did
  var csrf = gallery.querySelector("input[name=csrfmiddlewaretoken]").value;
  var keys = {}; // "N" -> "NEUTROPHIL"
  gallery.querySelectorAll(".keylist [data-key]").forEach(function (item) { keys[item.dataset.key] = item.dataset.type; });
  var addMode = document.getElementById("gallery-add-mode");
  var anchor = null; // the tile a Shift range starts from
  var busy = false;
  var SIGNED_OUT = 401;

  function tiles() { return Array.prototype.slice.call(gallery.querySelectorAll(".gallery-row:not([hidden]) .gtile")); }
  function selectedTiles() { return Array.prototype.slice.call(gallery.querySelectorAll(".gtile.selected")); }

  function setSelected(tile, on) {
    tile.classList.toggle("selected", on);
    tile.setAttribute("aria-selected", on ? "true" : "false");
  }
  function clearSelection() { selectedTiles().forEach(function (tile) { setSelected(tile, false); }); }
  function focusTile(tile) {
    tile.focus({ preventScroll: true });
    tile.scrollIntoView({ block: "nearest" });
  }

  // The tile that takes the focus when Tab comes to its row: this one, the others of its row -1.
  function makeTabStop(tile) {
    var box = tile.closest("[role=listbox]");
    if (!box) return;
    box.querySelectorAll('.gtile[tabindex="0"]').forEach(function (other) { if (other !== tile) other.tabIndex = -1; });
    tile.tabIndex = 0;
  }

  // A row that lost its stop, or gained a second one with a tile moved in, keeps one: the focused
  // tile, else the stop it had, else a selected tile, else its first.
  function fixTabStop(box) {
    var tile = box.querySelector(".gtile:focus") || box.querySelector('.gtile[tabindex="0"]') ||
      box.querySelector(".gtile.selected") || box.querySelector(".gtile");
    if (tile) makeTabStop(tile);
  }

  // "Cell 3 on smear-12.jpg, neutrophil, needs review": the row's type and what the tile's marks show, in the
  // words templatetags/gallery.py names it with.
  function tileName(tile) {
    var box = tile.closest("[role=listbox]");
    var label = box && document.getElementById(box.getAttribute("aria-labelledby"));
    var parts = [tile.dataset.name];
    if (label) parts.push(label.textContent.trim().toLowerCase());
    if (tile.classList.contains("awaiting")) parts.push("needs review");
    if (tile.classList.contains("reviewed")) parts.push("reviewed");
    if (tile.classList.contains("left-out")) parts.push("at the edge, not counted");
    return parts.join(", ");
  }

  // The tooltip as webapp/templatetags/gallery.py writes it: the cell and the network's call stay
  // (from their own attributes: a file name may hold " · " too), the state after them follows the
  // tile's classes.
  function tileTitle(tile) {
    var parts = [tile.dataset.name, tile.dataset.call];
    if (tile.classList.contains("awaiting")) parts.push("needs review");
    if (tile.classList.contains("reviewed")) parts.push("reviewed");
    if (tile.classList.contains("left-out")) parts.push("cut by the photograph's edge, not counted");
    return parts.join(" · ");
  }

  function announce(text) {
    if (!status) return;
    // Emptied first, so that the same words twice running are read twice.
    status.textContent = "";
    window.setTimeout(function () { status.textContent = text; }, 100);
  }

  function typeLabel(type) {
    var button = Array.prototype.find.call(gallery.querySelectorAll(".keylist [data-type]"),
      function (candidate) { return candidate.dataset.type === type; });
    var chip = button && button.querySelector(".chip");
    return chip ? chip.textContent.trim().toLowerCase() : type.toLowerCase();
  }

  function selectRange(from, to) {
    var all = tiles();
    var a = all.indexOf(from), b = all.indexOf(to);
    if (a < 0) a = b;
    clearSelection();
    for (var i = Math.min(a, b); i <= Math.max(a, b); i++) setSelected(all[i], true);
  }

  // mode: "only" (a click), "range" (Shift), "toggle" (Ctrl / Cmd)
  function pick(tile, mode) {
    if (mode === "range" && anchor && anchor.isConnected) {
      selectRange(anchor, tile);
    } else if (mode === "toggle") {
      setSelected(tile, !tile.classList.contains("selected"));
      anchor = tile;
    } else {
      clearSelection();
      setSelected(tile, true);
      anchor = tile;
    }
    focusTile(tile);
    say("");
  }

  function say(text) {
    message.textContent = text;
    message.hidden = !text;
  }

  // The tile beside, or the nearest one on the line above or below, as laid out on screen.
  function neighbour(tile, key) {
    var all = tiles();
    var index = all.indexOf(tile);
    if (key === "ArrowLeft") return all[index - 1] || null;
    if (key === "ArrowRight") return all[index + 1] || null;
    var here = tile.getBoundingClientRect();
    var centre = here.left + here.width / 2;
    var best = null, bestLine = null, bestDistance = Infinity;
    all.forEach(function (other) {
      var box = other.getBoundingClientRect();
      var beyond = key === "ArrowDown" ? box.top > here.top + 1 : box.top < here.top - 1;
      if (!beyond) return;
      var closer = bestLine === null || (key === "ArrowDown" ? box.top < bestLine - 1 : box.top > bestLine + 1);
      var distance = Math.abs(box.left + box.width / 2 - centre);
      if (closer || (Math.abs(box.top - bestLine) <= 1 && distance < bestDistance)) {
        best = other; bestLine = box.top; bestDistance = distance;
      }
    });
    return best;
  }

  function updateRow(row) {
    var rowTiles = row.querySelectorAll(".gtile");
    row.querySelector("[data-role=row-count]").textContent = rowTiles.length;
    row.querySelector("[data-role=row-plural]").textContent = rowTiles.length === 1 ? "" : "s";
    row.querySelector("[data-role=row-awaiting]").textContent = row.querySelectorAll(".gtile.awaiting").length;
    // A relabel never counts an edge cell in, so a tile's left-out class travels with it; counting
    // them per row gives the figure the server writes (presenters.gallery.GalleryRow.left_out).
    var leftOut = row.querySelectorAll(".gtile.left-out").length;
    row.querySelector("[data-role=row-left-out]").textContent = leftOut;
    row.querySelector("[data-role=row-left-out-part]").hidden = !leftOut;
    if (rowTiles.length) row.hidden = false;
  }

  function sortRow(row) {
    var box = row.querySelector(".tiles");
    var sorted = Array.prototype.slice.call(box.children).sort(function (a, b) {
      var flagged = b.classList.contains("awaiting") - a.classList.contains("awaiting");
      return flagged || (a.dataset.image - b.dataset.image) || (a.dataset.index - b.dataset.index);
    });
    sorted.forEach(function (tile) { box.appendChild(tile); });
  }

  function applyResult(data) {
    var touched = new Set();
    // Each tile and row looked up in a map made once: a query of the whole gallery for each of
    // 2,000 cells relabelled at once walked its 10,000 elements 4,000 times (seconds on a slow PC).
    var tilesById = new Map(), rowsByType = new Map();
    gallery.querySelectorAll(".gtile[data-cell]").forEach(function (tile) { tilesById.set(tile.dataset.cell, tile); });
    gallery.querySelectorAll(".gallery-row[data-type]").forEach(function (row) {
      if (!rowsByType.has(row.dataset.type)) rowsByType.set(row.dataset.type, row);
    });
    data.cells.forEach(function (cell) {
      var tile = tilesById.get(String(cell.id));
      var row = rowsByType.get(cell.cell_type);
      if (!tile || !row) return;
      tile.dataset.seen = cell.seen;
      touched.add(tile.closest(".gallery-row"));
      touched.add(row);
      tile.classList.toggle("reviewed", cell.reviewed);
      if (cell.reviewed) tile.classList.remove("awaiting");
      row.querySelector(".tiles").appendChild(tile);
      tile.setAttribute("aria-label", tileName(tile));
      tile.setAttribute("title", tileTitle(tile));
    });
    touched.forEach(function (row) { sortRow(row); updateRow(row); });
    document.getElementById("gallery-formula").innerHTML = data.formula_html;
  }

  // The answer's cells and formula drawn. Moving a tile to its new row takes the focus off it: it
  // is given back, without scrolling the page to that row.
  function redraw(data) {
    var focused = document.activeElement && document.activeElement.closest ? document.activeElement.closest(".gtile") : null;
    applyResult(data);
    if (focused && focused.isConnected && document.activeElement !== focused) focused.focus({ preventScroll: true });
    gallery.querySelectorAll(".gallery-row [role=listbox]").forEach(fixTabStop);
  }

  function relabel(type) {
    if (!reviewUrl) { say("Relabelling is for technologists and hematologists: your account reads results only."); return; }
    var chosen = selectedTiles();
    if (!chosen.length) { say("Select one or more cells first, then press the type's key or click it."); return; }
    if (busy) return;
    busy = true;
    var body = new FormData();
    // Already of that type, each: a confirmation of their calls, said so rather than "relabelled".
    var confirming = chosen.every(function (tile) {
      var row = tile.closest(".gallery-row");
      return row && row.dataset.type === type;
    });
    chosen.forEach(function (tile) { tile.classList.add("pending"); });
    // One field, the numbers joined by commas: a field per cell ran past the 1,000 fields Django
    // reads from one form, and a selection of more cells than that was refused.
    body.append("cells", chosen.map(function (tile) { return tile.dataset.cell; }).join(","));
    body.append("cell_type", type);
    // Each cell's label as this page shows it: one someone else relabelled since is refused, named.
    body.append("seen", chosen.map(function (tile) { return tile.dataset.cell + ":" + tile.dataset.seen; }).join(","));
    fetch(reviewUrl, {
      method: "POST", body: body, credentials: "same-origin",
      headers: { Accept: "application/json", "X-CSRFToken": csrf },
    })
      .then(function (response) {
        if (response.status === SIGNED_OUT) {
          window.alert("Your sign-in has expired, so this relabelling was not saved. Sign in again and repeat it.");
          window.location.reload();
          return new Promise(function () {});
        }
        // A proxy's or server's own error page is no JSON: say so rather than a parser's message.
        return response.json().catch(function () { return {}; }).then(function (data) {
          if (!response.ok) {
            var refusal = new Error(data.error || "The relabelling was not saved (the site answered " +
              response.status + "). Reload the page and try again.");
            // Refused for cells someone reviewed meanwhile: the answer holds them as they are now.
            if (data.cells) refusal.answer = data;
            throw refusal;
          }
          return data;
        });
      })
      .then(function (data) {
        redraw(data);
        say("");
        var count = data.cells.length;
        var one = count === 1 && gallery.querySelector('.gtile[data-cell="' + data.cells[0].id + '"]');
        announce((count === 1 ? (one ? one.dataset.name : "1 cell") : count + " cells") +
          (confirming ? " confirmed as " : " relabelled ") + typeLabel(type));
      })
      .catch(function (error) {
        // The tiles show the labels the refusal names, the selection kept: the reviewer reads the
        // message beside them and, still disagreeing, presses the key once more.
        if (error.answer) redraw(error.answer);
        say(error.message);
      })
      .then(function () {
        busy = false;
        chosen.forEach(function (tile) { tile.classList.remove("pending"); });
      });
  }

  function openCell(tile) { window.location.href = cellUrl.replace(/\/0\/$/, "/" + tile.dataset.cell + "/"); }

  // A double-click is out of reach on most touch screens. Opens the cell the selection began with,
  // the tapped one where a single cell is selected.
  function openSelected() {
    var chosen = selectedTiles();
    if (!chosen.length) { say("Select a cell first, then open it."); return; }
    openCell(chosen.indexOf(anchor) >= 0 ? anchor : chosen[0]);
  }

  gallery.addEventListener("click", function (event) {
    // The legend's buttons go through relabel() as the keys do, so a mouse or a touch screen
    // relabels a selection with the same request, checks and messages.
    var typeButton = event.target.closest(".keylist [data-type]");
    if (typeButton) { relabel(typeButton.dataset.type); return; }
    if (event.target.closest("[data-role=open-cell]")) { openSelected(); return; }
    var tile = event.target.closest(".gtile");
    if (!tile) return;
    event.preventDefault();
    // A touch screen has no Shift or Ctrl: with "Each tap adds or removes a cell" ticked, a plain
    // click toggles, so several cells can be chosen and relabelled at once.
    var adding = addMode && addMode.checked;
    pick(tile, event.shiftKey ? "range" : (event.ctrlKey || event.metaKey || adding) ? "toggle" : "only");
  });
  // A focused tile, however it got the focus, becomes its row's stop; the selection stays as it was.
  gallery.addEventListener("focusin", function (event) {
    var tile = event.target.closest && event.target.closest(".gtile");
    if (tile) makeTabStop(tile);
  });
  gallery.addEventListener("dblclick", function (event) {
    var tile = event.target.closest(".gtile");
    if (tile) openCell(tile);
  });

  // The page itself holds the focus where nothing else does (just opened, or after a click beside
  // the tiles): a selection made with the mouse is still relabelled by a key pressed then.
  function nothingFocused(target) { return target === document.body || target === document.documentElement; }

  document.addEventListener("keydown", function (event) {
    if (event.target.closest("input, textarea, select, summary")) return;
    var focused = event.target.closest(".gtile");
    // The keys are the tiles' and the legend's (WCAG 2.1.4): on a link or button elsewhere (the
    // nav, "Photographs") a letter is that control's or nothing, and it keeps the focus it has.
    var inLegend = Boolean(event.target.closest("[data-role=keys]")) && gallery.contains(event.target);
    if (!focused && !inLegend && !nothingFocused(event.target)) return;
    var key = event.key;
    if (key.indexOf("Arrow") === 0) {
      // From a tile only: anywhere else, the page's own, they scroll it.
      if (!focused) return;
      var to = neighbour(focused, key);
      if (!to) return;
      event.preventDefault();
      if (event.shiftKey) { selectRange(anchor || focused, to); focusTile(to); }
      else if (event.ctrlKey || event.metaKey) focusTile(to);
      else pick(to, "only");
      return;
    }
    if (key === "Escape") { clearSelection(); say(""); return; }
    if (key === " " && focused) { event.preventDefault(); pick(focused, "toggle"); return; }
    if (key === "Enter" && focused) { openCell(focused); return; }
    if (event.ctrlKey || event.metaKey || event.altKey || key.length !== 1) return;
    var type = keys[key.toUpperCase()];
    if (type) { event.preventDefault(); relabel(type); }
  });
})();
