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

  // Swagger UI leaves some controls unnamed or misnamed (WCAG 1.3.1, 4.1.2, 2.5.3): the request body's text
  // area has no label, the authorisation dialog is a plain <div> with an unnamed close icon, and its submit
  // button is named "Apply credentials" while it reads "Authorize". Say what they are.
  function nameControls(node) {
    node.querySelectorAll(".body-param textarea:not([aria-label])").forEach(function (area) {
      area.setAttribute("aria-label", "Request body");
    });
    node.querySelectorAll(".modal-ux:not([role])").forEach(function (dialog) {
      var title = dialog.querySelector(".modal-ux-header h3");
      dialog.setAttribute("role", "dialog");
      if (title) {
        title.id = title.id || "dialog-title";
        dialog.setAttribute("aria-labelledby", title.id);
      }
    });
    node.querySelectorAll(".close-modal:not([aria-label])").forEach(function (button) {
      button.setAttribute("aria-label", "Close");
    });
    node.querySelectorAll(".modal-btn.authorize[aria-label]").forEach(function (button) {
      button.removeAttribute("aria-label");
    });
  }

  var root = document.getElementById("reference");
  root.textContent = ""; // the message for browsers without JavaScript
  new MutationObserver(function () {
    nameControls(root);
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
