// The live delivery log (templates/web/log.html.j2): every second, ask /log/rows for the rows of events
// newer than the last one shown, and put them at the top. The rows are HTML rendered (and escaped) by the
// server; nothing here builds markup from data.
(function () {
  "use strict";
  var body = document.getElementById("log-rows");
  if (!body || !body.dataset.live) return;
  var status = document.getElementById("live-status");
  var keep = 1000; // rows kept on the page
  function url() {
    var q = new URLSearchParams({after: body.dataset.after});
    ["campaign", "state", "channel"].forEach(function (k) { if (body.dataset[k]) q.set(k, body.dataset[k]); });
    return body.dataset.live + "?" + q.toString();
  }
  function tick() {
    fetch(url(), {credentials: "same-origin", headers: {"Accept": "text/html"}}).then(function (r) {
      if (!r.ok) throw new Error("HTTP " + r.status);
      var last = r.headers.get("X-Last-Event");
      return r.text().then(function (html) { return {html: html, last: last}; });
    }).then(function (got) {
      var template = document.createElement("template");
      template.innerHTML = got.html;
      var rows = template.content.querySelectorAll("tr");
      if (rows.length) {
        var empty = document.getElementById("no-events");
        if (empty) empty.remove();
        rows.forEach(function (row) { row.classList.add("new"); });
        body.insertBefore(template.content, body.firstChild);
        while (body.rows.length > keep) body.deleteRow(-1);
      }
      if (got.last) body.dataset.after = got.last;
      if (status) status.textContent = "Live: updated " + new Date().toISOString().slice(11, 19) + " UTC";
      setTimeout(tick, rows.length >= 500 ? 0 : 1000);
    }).catch(function (err) {
      if (status) status.textContent = "Live updates stopped (" + err.message + "): retrying";
      setTimeout(tick, 3000);
    });
  }
  setTimeout(tick, 1000);
})();
