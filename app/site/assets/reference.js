// Starts Swagger UI on the API reference page. A file rather than an inline script, so the page's
// Content-Security-Policy can allow scripts from this service only.
(function () {
  "use strict";

  // Swagger UI's server chooser is a <select> without an accessible name; with the one relative server
  // this API declares there is nothing to choose, so it is left out.
  function oneServerIsNoChoice() {
    return {
      wrapComponents: {
        ServersContainer: function (Original, system) {
          return function (props) {
            var servers = system.specSelectors.servers();
            return servers && servers.size > 1 ? system.React.createElement(Original, props) : null;
          };
        },
      },
    };
  }

  // The authorisation dialog's close button is an icon without a name, and its submit button is named
  // "Apply credentials" while it reads "Authorize" (WCAG 4.1.2, 2.5.3): name them as they read.
  function nameDialogButtons(node) {
    node.querySelectorAll(".close-modal:not([aria-label])").forEach(function (button) {
      button.setAttribute("aria-label", "Close");
    });
    node.querySelectorAll(".modal-btn.authorize[aria-label]").forEach(function (button) {
      button.removeAttribute("aria-label");
    });
  }

  var root = document.getElementById("reference");
  new MutationObserver(function () {
    nameDialogButtons(root);
  }).observe(root, { childList: true, subtree: true });
  window.ui = window.SwaggerUIBundle({
    url: root.dataset.specUrl,
    domNode: root,
    deepLinking: false, // its links inside the operation buttons are nested controls (WCAG 4.1.2)
    validatorUrl: null, // no badge from validator.swagger.io: nothing leaves this service
    presets: [window.SwaggerUIBundle.presets.apis],
    plugins: [oneServerIsNoChoice],
    layout: "BaseLayout",
    defaultModelsExpandDepth: 0,
    docExpansion: "list",
  });
})();
