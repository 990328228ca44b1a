// dipsim report: the glue between plotly's widgets and the explorer's state (no plotting here).
// The facet dropdowns and the budget slider are plotly's own (method "skip"); this script listens to
// their events, keeps the filters and the budget, and restyles the figure's traces: the points that
// pass the filters, the Pareto front of those within the budget and the fastest of them (the star).
(function () {
  var gd = document.getElementById("{plot_id}");
  var D = JSON.parse(document.getElementById("dipsim-data").textContent);
  var traceOf = {};
  gd.data.forEach(function (t, i) { traceOf[t.name] = i; });
  var state = {filters: {}, budget: D.start};
  D.menus.forEach(function (m) { state.filters[m[0]] = null; });

  function passes(p) {
    for (var f in state.filters) {
      if (state.filters[f] !== null && p.f[f] !== state.filters[f]) return false;
    }
    return p.x !== null && p.y !== null;
  }
  function feasible(p) {
    var b = D.budgets[state.budget];
    return b === null || (p.loss !== null && p.loss <= b + 1e-12);
  }
  function better(a, b) {  // a is more accurate than b
    return D.higher ? a.y > b.y : a.y < b.y;
  }
  function front(pts) {    // fastest first; a point joins when it is more accurate than every faster one
    var s = pts.slice().sort(function (a, b) { return b.x - a.x || (D.higher ? b.y - a.y : a.y - b.y); });
    var out = [];
    s.forEach(function (p) {
      if (!out.length || better(p, out[out.length - 1])) out.push(p);
    });
    return out;
  }
  function fmt(v) { return v === null ? "–" : (Math.abs(v) >= 1e4 || Math.abs(v) < 1e-3 ? v.toExponential(3) : (+v.toPrecision(4)).toString()); }
  function redraw() {
    var shown = D.points.filter(passes);
    var xs = [], ys = [], cd = [], hv = [], idx = [];
    D.methods.forEach(function (m) {
      var mine = shown.filter(function (p) { return p.f.method === m; });
      xs.push(mine.map(function (p) { return p.x; }));
      ys.push(mine.map(function (p) { return p.y; }));
      cd.push(mine.map(function (p) { return p.i; }));
      hv.push(mine.map(function (p) { return D.hover[p.i]; }));
      idx.push(traceOf[m]);
    });
    Plotly.restyle(gd, {x: xs, y: ys, customdata: cd, hovertext: hv}, idx);
    var ok = shown.filter(feasible);
    var fr = front(ok);
    var best = fr.length ? fr[0] : null;
    Plotly.restyle(gd, {x: [fr.map(function (p) { return p.x; }), best ? [best.x] : []],
                        y: [fr.map(function (p) { return p.y; }), best ? [best.y] : []]},
                   [traceOf[D.front], traceOf[D.best]]);
    gd.setAttribute("data-shown", String(shown.length));
    gd.setAttribute("data-best", best ? best.key : "");
    var el = document.getElementById("best");
    el.textContent = "";
    var b = document.createElement("b");
    b.textContent = "budget " + D.budgetLabels[state.budget] + ": ";
    el.appendChild(b);
    el.appendChild(document.createTextNode(best
      ? "fastest is " + best.key.split("#")[0] + " at " + fmt(best.x) + " " + (D.units[D.speed] || "") +
        (D.accuracy ? ", " + D.accuracy.slice(2) + " " + fmt(best.y) : "") + " (" + ok.length + " of " +
        shown.length + " shown points within the budget; " + fr.length + " on their front)"
      : "no shown point is within the budget (" + shown.length + " shown)"));
  }
  function showDetails(i, pinned) {
    var el = document.getElementById("details");
    el.textContent = "";
    var h = document.createElement("b");
    h.textContent = (pinned ? "pinned: " : "") + D.points[i].key.split("#")[0];
    el.appendChild(h);
    var t = document.createElement("table");
    D.details[i].forEach(function (r) {
      var tr = t.insertRow(), a = tr.insertCell(), v = tr.insertCell();
      a.textContent = r[0];
      v.textContent = r[1];
      if (D.meanings[r[0]]) tr.title = D.meanings[r[0]];
    });
    el.appendChild(t);
  }
  var pinned = null;
  gd.on("plotly_hover", function (e) {
    var p = e.points[0];
    if (pinned === null && p.customdata !== undefined) showDetails(p.customdata, false);
  });
  gd.on("plotly_click", function (e) {
    var p = e.points[0];
    if (p.customdata !== undefined) { pinned = p.customdata; showDetails(pinned, true); }
  });
  gd.on("plotly_sliderchange", function (e) { state.budget = e.slider.active; redraw(); });
  gd.on("plotly_buttonclicked", function (e) {
    var m = D.menus.filter(function (x) { return x[0] === e.menu.name; })[0];
    if (!m) return;
    state.filters[m[0]] = e.active > 0 ? m[1][e.active - 1] : null;
    redraw();
  });
  redraw();
})();
