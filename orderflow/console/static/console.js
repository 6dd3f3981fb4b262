// Refresh the parts of a page marked data-live="<url>" every data-refresh-ms of the body:
// the server renders the fragment, this only swaps it in. No build step, no dependencies.
(function () {
  "use strict";
  var every = parseInt(document.body.getAttribute("data-refresh-ms"), 10) || 2000;
  function refresh(el) {
    fetch(el.getAttribute("data-live"), { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html !== null) {
          el.innerHTML = html;
          el.setAttribute("data-refreshed", String(Date.now()));
        }
      })
      .catch(function () { el.setAttribute("data-stale", "true"); });
  }
  document.querySelectorAll("[data-live]").forEach(function (el) {
    setInterval(function () { refresh(el); }, every);
  });
})();
