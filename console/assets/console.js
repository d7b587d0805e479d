// The Strata console's only script: refreshes charts in place. Pages work without it.
"use strict";
(function () {
  const charts = document.querySelectorAll("[data-refresh]");
  charts.forEach(function (element, index) {
    const seconds = Math.max(2, parseInt(element.getAttribute("data-refresh"), 10) || 10);
    setInterval(function () {
      if (document.hidden) return;
      fetch(window.location.href, { credentials: "same-origin" })
        .then(function (response) { return response.ok ? response.text() : null; })
        .then(function (html) {
          if (!html) return;
          const page = new DOMParser().parseFromString(html, "text/html");
          const fresh = page.querySelectorAll("[data-refresh]")[index];
          if (fresh) element.replaceChildren(...fresh.childNodes);
        })
        .catch(function () { /* the next tick tries again */ });
    }, seconds * 1000);
  });
})();
