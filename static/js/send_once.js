// A form holding a data-send-once marker is sent once: a double click on Save would otherwise send it twice
// and make two of what it makes (an API key, of which the program would get one and the other
// stay live). Without JavaScript the form is sent as before.
(function () {
  "use strict";
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.querySelector("[data-send-once]")) return;
    if (form.dataset.sent) {
      event.preventDefault();
      return;
    }
    form.dataset.sent = "yes";
  });
})();
