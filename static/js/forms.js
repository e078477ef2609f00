// Form enhancements (the pages work without this file):
// - an error summary (data-error-summary) takes focus when the page loads, for
//   browsers that ignore autofocus on a non-input, and its links move focus to
//   the field they name;
// - the client form's "Acts for" field shows only for a user client;
// - a destructive action (a form with data-confirm-post) asks with a dialog and
//   posts at once; without JavaScript the same button opens the confirmation page.
(function () {
  "use strict";

  function setUpErrorSummary() {
    var summary = document.querySelector("[data-error-summary]");
    if (!summary) return;
    if (document.activeElement !== summary) summary.focus();
    summary.addEventListener("click", function (event) {
      var link = event.target.closest("a[href^='#']");
      if (!link) return;
      var target = document.getElementById(link.getAttribute("href").slice(1));
      if (!target) return;
      if (!target.matches("input, select, textarea, button")) {
        target = target.querySelector("input, select, textarea") || target;
      }
      event.preventDefault();
      target.scrollIntoView({ block: "center" });
      target.focus();
    });
  }

  function setUpConfirmPosts() {
    document.querySelectorAll("form[data-confirm-post]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        event.preventDefault();
        if (!window.confirm(form.getAttribute("data-confirm-post"))) return;
        var post = document.createElement("form");
        post.method = "post";
        post.action = form.action;
        post.hidden = true;
        var fields = [["csrf_token", form.getAttribute("data-csrf")]];
        new FormData(form).forEach(function (value, name) { fields.push([name, value]); });
        fields.forEach(function (pair) {
          var input = document.createElement("input");
          input.type = "hidden";
          input.name = pair[0];
          input.value = pair[1];
          post.appendChild(input);
        });
        document.body.appendChild(post);
        post.submit();
      });
    });
  }

  // The client form's "Acts for" shows only while Kind is User.
  function setUpActsFor() {
    var field = document.querySelector(".acts-for");
    var kinds = document.querySelectorAll("input[name='kind']");
    if (!field || !kinds.length) return;
    var sync = function () {
      var chosen = document.querySelector("input[name='kind']:checked");
      field.hidden = !(chosen && chosen.value === "user");
    };
    kinds.forEach(function (radio) { radio.addEventListener("change", sync); });
    sync();
  }

  function start() {
    setUpErrorSummary();
    setUpConfirmPosts();
    setUpActsFor();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
