// stockcli dashboard: picking a ticker reloads the server-rendered page for it (works without JS too).
(function () {
  "use strict";
  var select = document.getElementById("ticker-select");
  if (!select) { return; }
  select.addEventListener("change", function () {
    document.body.classList.add("loading");
    select.form.submit();
  });
})();
