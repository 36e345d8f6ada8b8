// Ends a page left unused (webapp/idle_sign_out.py): once the sign-in's unused time is out, the page
// goes to the login page, which says why and brings the user back, so no results stay on an
// unattended screen. A key press, click, touch or scroll on the page is use: the site is told of it
// (at most once a resolution), so someone typing a long note is not signed out meanwhile. Before
// leaving, the site is asked how long is left: another tab may have been in use. A little before the
// end the page says so, so that someone back at the screen keeps what they typed with a key press.
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
  var WARNING_MS = Math.min(60000, idleMs / 3);
  var told = Date.now(); // the request for this page was use
  var timer = null;
  var warning = null;
  var countdown = null;

  function signInAgain() { window.location.reload(); }

  function checkAfter(ms) {
    window.clearTimeout(timer);
    timer = window.setTimeout(check, ms);
  }

  // Said once (role=alert); the seconds beside it count down unannounced.
  function warn(leftMs) {
    if (!warning) {
      warning = document.createElement("p");
      warning.className = "idle-warning";
      warning.setAttribute("role", "alert");
      warning.dataset.role = "idle-warning";
      warning.textContent = "This page has not been used for a while and will be signed out. " +
        "Press a key or click on the page to stay signed in.";
      var left = document.createElement("span");
      left.setAttribute("aria-hidden", "true");
      warning.appendChild(left);
      document.body.insertBefore(warning, document.body.firstChild);
    }
    var end = Date.now() + leftMs;
    var seconds = warning.lastChild;
    function tick() { seconds.textContent = " (" + Math.max(0, Math.ceil((end - Date.now()) / 1000)) + " s)"; }
    tick();
    window.clearInterval(countdown);
    countdown = window.setInterval(tick, 1000);
    warning.hidden = false;
  }

  function unwarn() {
    if (!warning) return;
    warning.hidden = true;
    window.clearInterval(countdown);
  }

  // Asks again when the warning is due, then once the time is out.
  function timeLeft(seconds) {
    var leftMs = seconds * 1000;
    if (leftMs > WARNING_MS) {
      unwarn();
      checkAfter(leftMs - WARNING_MS + 250);
    } else {
      warn(leftMs);
      checkAfter(leftMs + 1000);
    }
  }

  function check() {
    fetch(url, { credentials: "same-origin", headers: background })
      .then(function (response) {
        if (response.status === SIGNED_OUT) { signInAgain(); return null; }
        if (!response.ok) throw new Error(response.status);
        return response.json();
      })
      .then(function (data) { if (data) timeLeft(data.seconds_left); })
      .catch(function () { checkAfter(RETRY_MS); }); // the site unreachable: ask again
  }

  function used() {
    if (Date.now() - told < resolutionMs) return;
    told = Date.now();
    fetch(url, { method: "POST", credentials: "same-origin", headers: { "X-CSRFToken": script.dataset.csrfToken } })
      .then(function (response) { if (response.status === SIGNED_OUT) signInAgain(); })
      .catch(function () {});
    timeLeft(idleMs / 1000);
  }

  ["keydown", "pointerdown", "wheel", "touchstart"].forEach(function (name) {
    document.addEventListener(name, used, { capture: true, passive: true });
  });
  timeLeft(idleMs / 1000);
})();
