// babysitter dashboard: keeps the page current without a reload. On each engine event for this
// page's run (or any run on pages without one) and every few seconds, it fetches the page again
// and swaps in its <main>. It never touches a form that is being filled in.
(function () {
  "use strict";
  var run = document.body.getAttribute("data-run");
  var timer = null;
  var live = document.getElementById("live");
  // A page that shows the answer to a form post (a dry run) stays as it is: fetching its URL
  // again would not show the same answer.
  if (document.body.hasAttribute("data-frozen")) return;

  function busy() {
    var a = document.activeElement;
    if (a && (a.tagName === "INPUT" || a.tagName === "TEXTAREA" || a.tagName === "SELECT")) {
      return true;
    }
    var fields = document.querySelectorAll("main form.settle input[name=reason]");
    for (var i = 0; i < fields.length; i++) {
      if (fields[i].value) return true;
    }
    return false;
  }

  function refresh() {
    timer = null;
    if (busy()) { schedule(3000); return; }
    fetch(location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (text) {
        if (text === null) return;
        var doc = new DOMParser().parseFromString(text, "text/html");
        var fresh = doc.querySelector("main");
        var old = document.querySelector("main");
        if (fresh && old && !busy()) {
          old.replaceWith(document.adoptNode(fresh));
          if (live) live.textContent = "live · " + new Date().toLocaleTimeString();
        }
      })
      .catch(function () { if (live) live.textContent = "offline"; });
  }

  function schedule(ms) {
    if (timer === null) timer = setTimeout(refresh, ms);
  }

  if (window.EventSource) {
    var es = new EventSource("/events");
    es.addEventListener("engine", function (m) {
      try {
        var ev = JSON.parse(m.data);
        if (!run || ev.run === run) schedule(250);
      } catch (e) { /* ignore a malformed event */ }
    });
    es.addEventListener("lagged", function () { schedule(250); });
  }
  setInterval(function () { schedule(0); }, 5000);
})();
