// A form with data-confirm asks before it is sent. For one click that changes what the whole lab
// is served (activating a network) or cannot be undone (deleting a version); without JavaScript
// the form is sent as before.
(function () {
  "use strict";
  document.addEventListener("submit", function (event) {
    var question = event.target.getAttribute("data-confirm");
    if (question && !window.confirm(question)) event.preventDefault();
  });
})();
