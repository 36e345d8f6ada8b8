// A form with data-confirm asks before it is sent. For one click that changes what the whole lab
// is served (activating a network) or cannot be undone (deleting a version). An answered question
// is sent as confirmed=1, so that the server, which asks on its own page for a form sent without
// it (scripts off), does not ask twice.
(function () {
  "use strict";
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute("data-confirm");
    if (!question) return;
    if (!window.confirm(question)) {
      event.preventDefault();
      return;
    }
    if (!form.querySelector("input[name=confirmed]")) {
      var confirmed = document.createElement("input");
      confirmed.type = "hidden";
      confirmed.name = "confirmed";
      confirmed.value = "1";
      form.appendChild(confirmed);
    }
  });
})();
