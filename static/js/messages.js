// What was done (a saved review, a signature, a training that finished) is a polite status, which
// a screen reader reads only when the words in its region change: words already there as the page
// arrives it does not say. base.html draws the region empty and the list beside it; the list is
// moved into it once the page has loaded, and is said. On screen nothing moves: the region is
// where the list was.
(function () {
  "use strict";
  var region = document.querySelector("[data-role=news-region]");
  var news = document.querySelector("[data-role=news]");
  if (!region || !news) return;

  function announce() {
    // A moment after load: a screen reader is still taking in the page's arrival then, and may
    // register the region only after it, missing a change made in the same instant.
    window.setTimeout(function () { region.appendChild(news); }, 300);
  }

  if (document.readyState === "complete") announce();
  else window.addEventListener("load", announce);
})();
