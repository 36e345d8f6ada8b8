// Drop zone for the upload form: photographs dropped or picked accumulate in the file input, so the
// form still posts as plain multipart (and works without this script).
(function () {
  "use strict";
  var form = document.getElementById("upload-form");
  if (!form) return;
  var zone = document.getElementById("dropzone");
  var input = zone.querySelector("input[type=file]");
  var list = document.getElementById("filelist");
  var button = document.getElementById("upload-button");
  var chosen = [];
  var maxFiles = parseInt(zone.dataset.maxFiles, 10) || 50;
  var maxBytes = parseInt(zone.dataset.maxBytes, 10) || 0;
  var maxTotalBytes = parseInt(zone.dataset.maxTotalBytes, 10) || 0;
  var warning = document.getElementById("upload-warning");
  var status = document.getElementById("upload-status");
  // A Japanese input method types the label's H26-01 in full width ("Ｈ２６－０１"), which the field's
  // pattern refuses: folded as the server folds it (NFKC, the spaces around it dropped: the pattern's
  // first letter refused an input method's leading space) before the browser checks it.
  var accession = form.querySelector("input[name=accession_number]");
  if (accession) {
    accession.addEventListener("change", function () { accession.value = accession.value.normalize("NFKC").trim(); });
  }

  function sizeText(bytes) {
    if (bytes >= 1048576) return (bytes / 1048576).toFixed(1) + " MB";
    return Math.max(1, Math.round(bytes / 1024)) + " kB";
  }

  function sync() {
    var transfer = new DataTransfer();
    chosen.forEach(function (file) { transfer.items.add(file); });
    input.files = transfer.files;
    list.textContent = "";
    chosen.forEach(function (file, index) {
      var item = document.createElement("li");
      var name = document.createElement("span");
      name.textContent = file.name;
      var right = document.createElement("span");
      right.className = "size";
      right.textContent = sizeText(file.size) + " ";
      var remove = document.createElement("button");
      remove.type = "button";
      remove.textContent = "Remove";
      remove.setAttribute("aria-label", "Remove " + file.name);
      remove.addEventListener("click", function () { removeAt(index); });
      right.appendChild(remove);
      item.appendChild(name);
      item.appendChild(right);
      list.appendChild(item);
    });
    button.textContent = chosen.length
      ? "Upload " + chosen.length + " photograph" + (chosen.length === 1 ? "" : "s") + " and classify"
      : "Upload and classify";
    // The server checks all of this again; saying it here spares a long upload that would be refused.
    var problems = [];
    if (chosen.length > maxFiles) problems.push("At most " + maxFiles + " photographs per upload; remove " +
      (chosen.length - maxFiles) + " or split the batch.");
    var tooBig = chosen.filter(function (file) { return maxBytes && file.size > maxBytes; });
    if (tooBig.length) problems.push(tooBig.map(function (f) { return f.name; }).join(", ") +
      (tooBig.length === 1 ? " is" : " are") + " over the " + sizeText(maxBytes) + " limit and will be refused.");
    var total = chosen.reduce(function (sum, file) { return sum + file.size; }, 0);
    // Not refused outright: the server stores the photographs up to its budget and lists the rest.
    if (maxTotalBytes && total > maxTotalBytes) problems.push("These photographs come to " + sizeText(total) +
      "; one upload holds at most " + sizeText(maxTotalBytes) + ", so the last of them will not be stored: " +
      "split the batch.");
    // Written only when it changes: a live region written again is read again, at every file.
    var said = problems.join(" ");
    if (warning.textContent !== said) warning.textContent = said;
    warning.hidden = !said;
    button.disabled = chosen.length > maxFiles;
  }

  function chosenText() {
    return chosen.length === 1 ? "1 photograph chosen." : chosen.length + " photographs chosen.";
  }

  // The button pressed is gone with its file: left there, the focus fell to the page's start and a
  // keyboard user lost their place in the list. The next file's Remove takes it, else the one
  // before, else the drop zone that chooses files again; the removal is said, as nothing else is.
  function removeAt(index) {
    var name = chosen[index].name;
    chosen.splice(index, 1);
    sync();
    var buttons = list.querySelectorAll("button");
    var next = buttons[Math.min(index, buttons.length - 1)];
    (next || zone).focus();
    status.textContent = "Removed " + name + ". " + chosenText();
  }

  function add(files) {
    var added = [];
    Array.prototype.forEach.call(files, function (file) {
      var duplicate = chosen.some(function (c) {
        return c.name === file.name && c.size === file.size && c.lastModified === file.lastModified;
      });
      if (!duplicate) { chosen.push(file); added.push(file.name); }
    });
    sync();
    // Photographs chosen answer the error the page came back with (none, or none stored).
    if (chosen.length) zone.removeAttribute("aria-invalid");
    if (added.length) status.textContent = "Added " + added.join(", ") + ". " + chosenText();
  }

  // With this script the zone is the one control that chooses files: a button to assistive
  // technology, named, and the only Tab stop (the file input it opens is reached through it).
  // Without it the visible file input is that control, and the zone no Tab stop that does nothing.
  zone.classList.add("scripted");
  zone.tabIndex = 0;
  zone.setAttribute("role", "button");
  // Named by the words it shows, the field's label first (WCAG 2.5.3): a speech user says what they
  // see ("click Drop photographs here"), which the name "Choose photographs, or drop them here"
  // did not hold. The formats and sizes describe it rather than lengthen its name.
  zone.setAttribute("aria-labelledby", "images-label dropzone-title dropzone-action");
  // The form's error for the photographs (Django ties it to the file input), and the note that
  // photographs sent must be chosen again, describe the zone: the input is hidden from assistive
  // technology, so tied to it alone they were never read with the control a user operates.
  var about = (input.getAttribute("aria-describedby") || "").split(/\s+/).filter(function (id) {
    return id && document.getElementById(id);
  });
  if (document.getElementById("choose-again")) about.push("choose-again");
  zone.setAttribute("aria-describedby", about.concat(["dropzone-limits"]).join(" "));
  if (input.getAttribute("aria-invalid") === "true") zone.setAttribute("aria-invalid", "true");
  input.tabIndex = -1;
  input.setAttribute("aria-hidden", "true");
  input.addEventListener("change", function () { add(input.files); });
  zone.addEventListener("click", function (event) { if (event.target !== input) input.click(); });
  zone.addEventListener("keydown", function (event) {
    if (event.key === "Enter" || event.key === " ") { event.preventDefault(); input.click(); }
  });
  ["dragenter", "dragover"].forEach(function (type) {
    zone.addEventListener(type, function (event) { event.preventDefault(); zone.classList.add("over"); });
  });
  ["dragleave", "drop"].forEach(function (type) {
    zone.addEventListener(type, function (event) { event.preventDefault(); zone.classList.remove("over"); });
  });
  zone.addEventListener("drop", function (event) {
    if (event.dataTransfer && event.dataTransfer.files) add(event.dataTransfer.files);
  });
  form.addEventListener("submit", function () {
    button.disabled = true;
    button.textContent = "Uploading…";
  });
})();
