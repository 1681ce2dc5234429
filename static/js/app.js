// Small progressive enhancements shared by all pages. Business logic stays on the server.
(function () {
  "use strict";
  const meta = document.querySelector('meta[name="csrf-token"]');
  window.DefectLens = {
    csrfToken: meta ? meta.content : "",
    // fetch() with the CSRF header that cookie-authenticated state changes need.
    api: function (url, options) {
      options = options || {};
      options.headers = Object.assign({ "X-CSRF-Token": window.DefectLens.csrfToken }, options.headers || {});
      options.credentials = "same-origin";
      return fetch(url, options);
    },
  };
  document.addEventListener("submit", function (event) {
    const form = event.target;
    const message = form.getAttribute && form.getAttribute("data-confirm");
    if (message && !window.confirm(message)) { event.preventDefault(); }
  });
})();
