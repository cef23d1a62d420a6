// Applies the server's change events to the open page: stories and alerts appear or
// move to the top, the counts and the index chart refresh. The server renders every
// fragment (escaped); this script only places them.
(function () {
  "use strict";
  var body = document.body;
  var status = document.getElementById("live-status");
  if (!window.EventSource || !status) {
    return;
  }
  var rows = parseInt(body.dataset.rows || "200", 10);

  function element(html) {
    var template = document.createElement("template");
    template.innerHTML = html.trim();
    return template.content.firstElementChild;
  }

  function upsert(listId, data) {
    var list = document.getElementById(listId);
    if (!list || !data.html) {
      return;
    }
    var node = element(data.html);
    var old = document.getElementById(data.id);
    if (old) {
      old.remove();
    }
    node.classList.add("fresh");
    list.prepend(node);
    while (list.children.length > rows) {
      list.lastElementChild.remove();
    }
    var empty = document.getElementById(listId + "-empty");
    if (empty) {
      empty.hidden = true;
    }
  }

  var source = new EventSource("/events?since=" + encodeURIComponent(body.dataset.seq || ""));
  source.addEventListener("story", function (e) { upsert("stories", JSON.parse(e.data)); });
  source.addEventListener("alert", function (e) { upsert("alerts", JSON.parse(e.data)); });
  source.addEventListener("remove", function (e) {
    var node = document.getElementById(JSON.parse(e.data).id);
    if (node) {
      node.remove();
    }
  });
  source.addEventListener("summary", function (e) {
    var node = document.getElementById("summary");
    var data = JSON.parse(e.data);
    if (node && data.html) {
      node.replaceWith(element(data.html));
    }
  });
  source.addEventListener("index", function () {
    fetch("/fragments/index-chart", { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (svg) {
        var node = document.getElementById("index-chart");
        if (svg && node) {
          node.innerHTML = svg;
        }
      })
      .catch(function () { /* the next index event tries again */ });
  });
  source.addEventListener("broker", function (e) {
    var node = document.getElementById("broker");
    var data = JSON.parse(e.data);
    if (node && data.html) {
      node.replaceWith(element(data.html));
    }
  });
  source.addEventListener("reload", function () { window.location.reload(); });
  source.onopen = function () { status.textContent = "live"; status.className = "ok"; };
  source.onerror = function () { status.textContent = "reconnecting…"; status.className = "down"; };
})();
