// Ends a page left unused (webapp/idle_sign_out.py): once the sign-in's unused time is out, the page
// goes to the login page, which says why and brings the user back, so no results stay on an
// unattended screen. A key press, click, touch or scroll on the page is use: the site is told of it
// (at most once a resolution), so someone typing a long note is not signed out meanwhile. Before
// leaving, the site is asked how long is left: another tab may have been in use.
(function () {
  "use strict";
  var script = document.currentScript;
  var url = script.dataset.activityUrl;
  var idleMs = Number(script.dataset.idleSeconds) * 1000;
  var resolutionMs = Number(script.dataset.resolutionSeconds) * 1000;
  // Asking how long is left is not use: the header the page's polls send (webapp/idle_sign_out.py).
  var background = { Accept: "application/json", "X-Leukoscope-Background": "1" };
  var SIGNED_OUT = 401;
  var RETRY_MS = 30000;
  var told = Date.now(); // the request for this page was use
  var timer = null;

  function signInAgain() { window.location.reload(); }

  function checkAfter(ms) {
    window.clearTimeout(timer);
    timer = window.setTimeout(check, ms);
  }

  function check() {
    fetch(url, { credentials: "same-origin", headers: background })
      .then(function (response) {
        if (response.status === SIGNED_OUT) { signInAgain(); return null; }
        if (!response.ok) throw new Error(response.status);
        return response.json();
      })
      .then(function (data) { if (data) checkAfter(data.seconds_left * 1000 + 1000); })
      .catch(function () { checkAfter(RETRY_MS); }); // the site unreachable: ask again
  }

  function csrfToken() {
    var field = document.querySelector("input[name=csrfmiddlewaretoken]");
    return field ? field.value : "";
  }

  function used() {
    if (Date.now() - told < resolutionMs) return;
    told = Date.now();
    fetch(url, { method: "POST", credentials: "same-origin", headers: { "X-CSRFToken": csrfToken() } })
      .then(function (response) { if (response.status === SIGNED_OUT) signInAgain(); })
      .catch(function () {});
    checkAfter(idleMs + 1000);
  }

  ["keydown", "pointerdown", "wheel", "touchstart"].forEach(function (name) {
    document.addEventListener(name, used, { capture: true, passive: true });
  });
  checkAfter(idleMs + 1000);
})();
