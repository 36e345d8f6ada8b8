// Cell page: type keys review the cell, arrow keys walk through the cells of the sample.
(function () {
  "use strict";
  var form = document.getElementById("cell-review-form");

  // The keys are the page's review controls' (WCAG 2.1.4): its type buttons and Previous / Next, or
  // nothing focused, as the page opens and is used (a key reviews, an arrow opens the next cell,
  // which opens with nothing focused again). On a link elsewhere (the nav, "Sample ...", a review's
  // earlier call) a letter is that link's or nothing and the arrows scroll the page.
  function ownsKeys(target) {
    if (target === document.body || target === document.documentElement) return true;
    return Boolean(target.closest("#cell-review-form, #prev-cell, #next-cell"));
  }

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.target.closest("input, textarea, select")) return;
    if (!ownsKeys(event.target)) return;
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
