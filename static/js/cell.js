// Cell page: type keys review the cell, arrow keys walk through the cells of the sample.
(function () {
  "use strict";
  var form = document.getElementById("cell-review-form");
  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.target.closest("input, textarea, select")) return;
    if (event.key === "ArrowLeft" || event.key === "ArrowRight") {
      var link = document.getElementById(event.key === "ArrowLeft" ? "prev-cell" : "next-cell");
      if (link) window.location.href = link.href;
      return;
    }
    if (!form || event.key.length !== 1) return;
    var button = form.querySelector('button[data-key="' + event.key.toUpperCase() + '"]');
    if (button) { event.preventDefault(); button.click(); }
  });
})();
