// Onboard console: asks before destructive actions. Served from /admin/assets,
// the only script the Content-Security-Policy allows.
"use strict";
document.addEventListener("submit", function (event) {
  var form = event.target;
  var question = form.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});
