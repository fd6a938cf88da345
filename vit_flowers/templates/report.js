/* vit_flowers report pages: filters, order, the confusion matrix and the large view.
   Plain script, no library, no request: everything it shows is in this file. */
(function () {
  "use strict";
  var $ = function (id) { return document.getElementById(id); };
  function readJSON(id) { var el = $(id); return el ? JSON.parse(el.textContent) : null; }
  function percent(v) { return Math.round(100 * v) + "%"; }
  function setSrc(img, value) { if (value) img.src = value; else img.removeAttribute("src"); }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function initPredictions() {
    var grid = $("cards");
    if (!grid) return;
    var cards = Array.prototype.map.call(grid.children, function (node) {
      return { el: node, i: +node.dataset.i, t: node.dataset.true, p: node.dataset.pred, c: +node.dataset.conf,
               w: node.dataset.wrong === "1", n: node.dataset.name.toLowerCase() };
    });
    var byId = {};
    cards.forEach(function (c) { byId[c.i] = c; });
    var attention = readJSON("attention-data") || {};
    var probs = readJSON("probs-data") || { classes: [], probs: [] };
    var f = { wrong: $("f-wrong"), t: $("f-true"), p: $("f-pred"), min: $("f-min"), max: $("f-max"),
              q: $("f-search"), sort: $("f-sort") };
    var order = "input";
    var visible = cards.slice();

    function sortKey(mode) {
      if (mode === "asc") return function (a, b) { return a.c - b.c || a.i - b.i; };
      if (mode === "desc") return function (a, b) { return b.c - a.c || a.i - b.i; };
      return function (a, b) { return a.i - b.i; };
    }

    function markPicked(t, p) {
      document.querySelectorAll("#confusion .picked").forEach(function (n) { n.classList.remove("picked"); });
      if (t && p) {
        document.querySelectorAll("#confusion td.cm-cell").forEach(function (n) {
          if (n.dataset.true === t && n.dataset.pred === p) n.classList.add("picked");
        });
      } else if (t) {
        document.querySelectorAll("#confusion th.cm-true").forEach(function (n) { if (n.dataset.true === t) n.classList.add("picked"); });
      } else if (p) {
        document.querySelectorAll("#confusion th.cm-pred").forEach(function (n) { if (n.dataset.pred === p) n.classList.add("picked"); });
      }
    }

    function apply() {
      var started = performance.now();
      var wrong = f.wrong ? f.wrong.checked : false;
      var t = f.t ? f.t.value : "";
      var p = f.p.value;
      var lo = f.min.value === "" ? 0 : +f.min.value / 100;
      var hi = f.max.value === "" ? 1 : +f.max.value / 100;
      var q = f.q.value.trim().toLowerCase();
      if (f.sort.value !== order) {
        order = f.sort.value;
        var sorted = cards.slice().sort(sortKey(order));
        var frag = document.createDocumentFragment();
        sorted.forEach(function (c) { frag.appendChild(c.el); });
        grid.appendChild(frag);
        cards = sorted;
      }
      visible = [];
      for (var k = 0; k < cards.length; k++) {
        var c = cards[k];
        var ok = (!wrong || c.w) && (!t || c.t === t) && (!p || c.p === p) &&
                 c.c >= lo - 1e-9 && c.c <= hi + 1e-9 && (!q || c.n.indexOf(q) >= 0);
        if (c.el.hidden === ok) c.el.hidden = !ok;
        if (ok) visible.push(c);
      }
      $("shown").textContent = visible.length + " of " + cards.length;
      $("empty").hidden = visible.length > 0;
      markPicked(t, p);
      window.vitReport.lastFilterMs = performance.now() - started;
    }

    function reset() {
      if (f.wrong) f.wrong.checked = false;
      if (f.t) f.t.value = "";
      f.p.value = ""; f.min.value = "0"; f.max.value = "100"; f.q.value = "";
    }

    [f.wrong, f.t, f.p, f.min, f.max, f.q, f.sort].forEach(function (input) {
      if (input) { input.addEventListener("input", apply); input.addEventListener("change", apply); }
    });
    $("f-reset").addEventListener("click", function () { reset(); apply(); });

    function pick(t, p) {
      reset();
      if (f.t) f.t.value = t || "";
      f.p.value = p || "";
      apply();
      $("filters").scrollIntoView({ block: "start" });
    }
    document.querySelectorAll("#confusion td.cm-cell").forEach(function (n) {
      n.addEventListener("click", function () { pick(n.dataset.true, n.dataset.pred); });
    });
    document.querySelectorAll("#confusion th.cm-true").forEach(function (n) {
      n.addEventListener("click", function () { pick(n.dataset.true, ""); });
    });
    document.querySelectorAll("#confusion th.cm-pred").forEach(function (n) {
      n.addEventListener("click", function () { pick("", n.dataset.pred); });
    });

    // the large view
    var viewer = $("viewer");
    var current = null;
    function show(c) {
      current = c;
      var a = attention[String(c.i)];
      var thumb = c.el.querySelector("img.thumb");
      $("v-name").textContent = c.el.dataset.name;
      setSrc($("v-photo"), a ? a.photo : (thumb ? thumb.getAttribute("src") : ""));
      $("v-overlay-fig").hidden = !a;
      setSrc($("v-overlay"), a ? a.overlay : "");
      $("v-class-fig").hidden = !(a && a.class_map);
      setSrc($("v-class"), a && a.class_map ? a.class_map : "");
      viewer.classList.toggle("wrong", c.w);
      $("v-class-cap").textContent = a && a.class_label ? "class-specific map: " + a.class_label : "class-specific map";
      $("v-none").hidden = !!a;
      var labels = $("v-labels");
      labels.textContent = "";
      if (c.t) { var tl = el("span", "true", "true "); tl.appendChild(el("b", "", c.t)); labels.appendChild(tl); }
      var pl = el("span", "pred", "predicted "); pl.appendChild(el("b", "", c.p));
      pl.appendChild(document.createTextNode(" " + percent(c.c) + (c.w ? " (wrong)" : "")));
      labels.appendChild(pl);
      var bars = $("v-bars");
      bars.textContent = "";
      var row = probs.probs[c.i] || [];
      probs.classes.forEach(function (name, k) {
        var bar = el("div", "bar" + (name === c.p ? " top" : "") + (name === c.t ? " truth" : ""));
        bar.appendChild(el("span", "lab", name));
        var track = el("span", "track"), fill = el("span", "fill");
        fill.style.width = (100 * (row[k] || 0)).toFixed(1) + "%";
        track.appendChild(fill);
        bar.appendChild(track);
        bar.appendChild(el("span", "val", (100 * (row[k] || 0)).toFixed(1)));
        bars.appendChild(bar);
      });
      if (!viewer.open) viewer.showModal();
    }
    function step(delta) {
      if (!current || !visible.length) return;
      var at = visible.indexOf(current);
      show(visible[(at + delta + visible.length) % visible.length]);
    }
    grid.addEventListener("click", function (e) {
      var node = e.target.closest(".card");
      if (node) show(byId[+node.dataset.i]);
    });
    grid.addEventListener("keydown", function (e) {
      var node = e.target.closest(".card");
      if (node && (e.key === "Enter" || e.key === " ")) { e.preventDefault(); show(byId[+node.dataset.i]); }
    });
    $("v-close").addEventListener("click", function () { viewer.close(); });
    $("v-prev").addEventListener("click", function () { step(-1); });
    $("v-next").addEventListener("click", function () { step(1); });
    viewer.addEventListener("keydown", function (e) {
      if (e.key === "ArrowLeft") step(-1);
      if (e.key === "ArrowRight") step(1);
    });
    viewer.addEventListener("click", function (e) { if (e.target === viewer) viewer.close(); });
    viewer.addEventListener("close", function () { if (current) current.el.focus({ preventScroll: true }); });

    window.vitReport.apply = apply;
    window.vitReport.visible = function () { return visible.map(function (c) { return c.i; }); };
    apply();
  }

  function initComparison() {
    var table = $("comparison");
    if (!table) return;
    var rows = Array.prototype.slice.call(table.querySelectorAll("tr.cmp-row"));
    var disagree = $("c-disagree"), wrong = $("c-wrong"), search = $("c-search");
    function apply() {
      var q = search.value.trim().toLowerCase(), shown = 0;
      rows.forEach(function (r) {
        var ok = (!disagree.checked || r.dataset.disagree === "1") && (!wrong.checked || r.dataset.wrong === "1") &&
                 (!q || r.dataset.name.toLowerCase().indexOf(q) >= 0);
        r.hidden = !ok;
        if (ok) shown++;
      });
      $("c-shown").textContent = shown + " of " + rows.length;
    }
    [disagree, wrong, search].forEach(function (input) { input.addEventListener("input", apply); input.addEventListener("change", apply); });
    window.vitReport.apply = apply;
    apply();
  }

  window.vitReport = { lastFilterMs: null };
  initPredictions();
  initComparison();
})();
