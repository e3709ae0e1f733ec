// runner report: draws the data embedded in #report-data (built from the store by
// src/cli/report/data.rs). Every chart element carries data-series = its number of series.
// State (sort, filter, chosen runs, x axis, smoothing) lives in location.hash.
(function () {
  "use strict";
  var marks = { start: Math.round(performance.now()) };
  function mark(n) { marks[n] = Math.round(performance.now()); }
  var D = JSON.parse(document.getElementById("report-data").textContent);
  var metric = D.metric, maximize = D.maximize;
  var runs = D.runs;
  // metric columns come as f32 little-endian in base64, NaN for no value
  function column(b64) {
    var s = atob(b64), bytes = new Uint8Array(s.length);
    for (var i = 0; i < s.length; i++) bytes[i] = s.charCodeAt(i);
    return Array.from(new Float32Array(bytes.buffer), function (v) { return isNaN(v) ? null : v; });
  }
  Object.keys(D.curves).forEach(function (id) {
    var c = D.curves[id];
    for (var k in c) if (typeof c[k] === "string") c[k] = column(c[k]);
  });
  // each run's full configuration: the shared keys, then its own
  runs.forEach(function (r) {
    var own = r.config;
    r.config = {};
    for (var k in D.base_config) r.config[k] = D.base_config[k];
    for (var k2 in own) r.config[k2] = own[k2];
  });
  var charts = [];
  var state = { sort: null, desc: false, filter: "", chosen: [], x: "epoch", smooth: 0 };
  try {
    var saved = JSON.parse(decodeURIComponent(location.hash.slice(1)) || "{}");
    for (var k in saved) state[k] = saved[k];
  } catch (e) { /* a hand-edited hash: start fresh */ }
  function save() { history.replaceState(null, "", "#" + encodeURIComponent(JSON.stringify(state))); }

  function fmt(v) {
    if (v === null || v === undefined) return "-";
    if (typeof v === "number") {
      if (Number.isInteger(v)) return String(v);
      var a = Math.abs(v);
      return (a !== 0 && (a < 1e-3 || a >= 1e5)) ? v.toExponential(3) : String(+v.toFixed(4));
    }
    if (typeof v === "object") return JSON.stringify(v);
    return String(v);
  }
  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    for (var a in (attrs || {})) e.setAttribute(a, attrs[a]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  // What a chart shows, as CSV: one row per point (series, x, y), the names quoted.
  function csvOf(c) {
    var lines = ["series,x,y"];
    (c.getOption().series || []).forEach(function (s) {
      (s.data || []).forEach(function (p) {
        if (!Array.isArray(p) || p[0] === null || p[1] === null) return;
        lines.push('"' + String(s.name || "").replace(/"/g, '""') + '",' + p[0] + "," + p[1]);
      });
    });
    return lines.join("\n") + "\n";
  }
  // the CSV of the chart titled `title` (what its CSV button downloads)
  window.__reportCsv = function (title) {
    var c = charts.filter(function (c) {
      var t = c.getOption().title;
      return t && t.length && t[0].text === title;
    })[0];
    return c ? csvOf(c) : null;
  };
  function download(name, text) {
    var a = el("a", { href: "data:text/csv;charset=utf-8," + encodeURIComponent(text), download: name });
    document.body.appendChild(a);
    a.click();
    a.remove();
  }
  function chart(container, cls, series, option) {
    var div = el("div", { "class": "chart " + (cls || "") });
    div.setAttribute("data-series", String(series));
    container.appendChild(div);
    var c = echarts.init(div, null, { renderer: "canvas" });
    option.animation = false;
    var title = option.title && option.title.text ? option.title.text : "chart";
    option.toolbox = { right: 4, top: 0, feature: { myCsv: {
      show: true, title: "CSV", icon: "path://M2,2L14,2L14,14L2,14Z M5,6L11,6 M5,9L11,9",
      onclick: function () { download(title.replace(/[^A-Za-z0-9_.-]+/g, "_") + ".csv", csvOf(c)); }
    } } };
    c.setOption(option);
    charts.push(c);
    return c;
  }
  function name(r) { return "run " + r.id; }

  document.getElementById("meta").textContent =
    runs.length + " run(s) ranked by " + metric + (maximize ? " (higher is better)" : " (lower is better)") +
    "; store " + D.store + "; generated " + D.generated;

  // ---- leaderboard ------------------------------------------------------------------------
  var metricCols = ["train_loss", "train_acc", "val_loss", "val_acc", "verify_acc"];
  var cols = [
    { h: "", text: true, get: function (r) { return null; }, check: true },
    { h: "rank", get: function (r) { return r.rank; } },
    { h: "run", get: function (r) { return r.id; } },
    { h: "key", text: true, get: function (r) { return r.key; } },
    { h: "recipe", text: true, get: function (r) { return r.recipe; } },
    { h: "status", text: true, get: function (r) { return r.status; } },
    { h: "epoch", get: function (r) { return r.epoch; } }
  ];
  D.differs.forEach(function (k) { cols.push({ h: k, get: function (r) { return r.differs[k]; } }); });
  metricCols.forEach(function (m) {
    cols.push({ h: m + (m === metric ? " *" : ""), get: function (r) { return r.metrics[m]; } });
  });
  cols.push({ h: "rung", get: function (r) {
    var p = (r.rungs || []).filter(function (d) { return d.decision === "pruned"; })[0];
    return p ? "pruned at " + (p.rung + 1) + " (epoch " + p.epoch + ")" : null; } });
  cols.push({ h: "lineage", text: true, get: function (r) {
    var l = [];
    if (r.lineage.continues !== null) l.push("continues run " + r.lineage.continues);
    if (r.lineage.starts_from !== null) l.push("starts from run " + r.lineage.starts_from);
    return l.length ? l.join("; ") : null; } });
  cols.push({ h: "checkpoint", text: true, get: function (r) { return r.checkpoint; } });
  cols.push({ h: "command", text: true, get: function (r) { return r.command; } });

  function drawLeaderboard() {
    var t = document.getElementById("leaderboard");
    t.textContent = "";
    var head = el("tr");
    cols.forEach(function (c, i) {
      var th = el("th", { "class": c.text ? "text" : "" }, c.h);
      if (state.sort === i) th.classList.add(state.desc ? "sorted-desc" : "sorted-asc");
      if (!c.check) th.addEventListener("click", function () {
        state.desc = state.sort === i ? !state.desc : false;
        state.sort = i; save(); drawLeaderboard();
      });
      head.appendChild(th);
    });
    t.appendChild(head);
    var rows = runs.slice();
    if (state.sort !== null && cols[state.sort]) {
      var c = cols[state.sort];
      rows.sort(function (a, b) {
        var x = c.get(a), y = c.get(b);
        if (x === y) return 0;
        if (x === null || x === undefined) return 1;
        if (y === null || y === undefined) return -1;
        var o = (typeof x === "number" && typeof y === "number") ? x - y : String(x).localeCompare(String(y));
        return state.desc ? -o : o;
      });
    }
    var f = state.filter.toLowerCase();
    rows.forEach(function (r) {
      var cells = cols.map(function (c) { return fmt(c.get(r)); });
      if (f && cells.join(" ").toLowerCase().indexOf(f) < 0) return;
      var tr = el("tr", { "data-run": String(r.id) });
      if (r.rank === 1) tr.classList.add("best");
      cols.forEach(function (c, i) {
        var td = el("td", { "class": c.text ? "text" : "" });
        if (c.check) {
          var box = el("input", { type: "checkbox" });
          box.checked = state.chosen.indexOf(r.id) >= 0;
          box.addEventListener("change", function () {
            state.chosen = state.chosen.filter(function (x) { return x !== r.id; });
            if (box.checked) state.chosen.push(r.id);
            save(); drawCompare();
          });
          td.appendChild(box);
        } else {
          td.textContent = cells[i];
        }
        tr.appendChild(td);
      });
      t.appendChild(tr);
    });
  }
  var filterBox = document.getElementById("filter");
  filterBox.value = state.filter;
  filterBox.addEventListener("input", function () { state.filter = filterBox.value; save(); drawLeaderboard(); });

  if (D.groups) {
    var gb = document.getElementById("groups");
    gb.appendChild(el("h3", {}, "Grouped by " + D.groups.key));
    var gt = el("table");
    var gh = el("tr");
    [D.groups.key, "runs", "mean " + metric, "std " + metric, "run ids"].forEach(function (x) {
      gh.appendChild(el("th", { "class": "text" }, x));
    });
    gt.appendChild(gh);
    D.groups.rows.forEach(function (g, i) {
      var tr = el("tr", { "data-group": String(i) });
      if (i === 0) tr.classList.add("best");
      [fmt(g.value), g.runs, fmt(g.mean), fmt(g.std), g.run_ids.join(", ")].forEach(function (x) {
        tr.appendChild(el("td", { "class": "text" }, String(x)));
      });
      gt.appendChild(tr);
    });
    gb.appendChild(gt);
  }

  if (D.unranked.length) {
    var u = document.getElementById("unranked");
    u.appendChild(el("h3", {}, "Runs without a recorded " + metric));
    var t = el("table");
    var h = el("tr");
    ["run", "key", "status", "swept values", "error"].forEach(function (x) { h.appendChild(el("th", { "class": "text" }, x)); });
    t.appendChild(h);
    D.unranked.forEach(function (r) {
      var tr = el("tr");
      [r.id, r.key, r.status, fmt(r.overrides), r.error || ""].forEach(function (x) {
        tr.appendChild(el("td", { "class": "text" }, fmt(x)));
      });
      t.appendChild(tr);
    });
    u.appendChild(t);
  }

  // ---- curves -------------------------------------------------------------------------------
  var curveMetrics = [
    ["val_acc", "validation accuracy", false], ["val_loss", "validation loss", true],
    ["train_loss", "training loss", true], ["train_acc", "training accuracy", false],
    ["verify_acc", "verification accuracy", false], ["lr", "learning rate", true]
  ];
  function smooth(ys, a) {
    if (!a) return ys;
    var out = [], last = null;
    ys.forEach(function (y) {
      if (y === null) { out.push(null); return; }
      last = last === null ? y : a * last + (1 - a) * y;
      out.push(last);
    });
    return out;
  }
  function drawCurves() {
    var box = document.getElementById("curves");
    charts.filter(function (c) { return c.__curve; }).forEach(function (c) { c.dispose(); });
    charts = charts.filter(function (c) { return !c.__curve; });
    box.textContent = "";
    // up to MANY runs each have a series of their own; beyond that the best TOP do, and all the
    // others are one grey series (lines broken between runs), so that a 1,000-run report
    // still draws every run and stays fast
    var MANY = 50, TOP = 10;
    var many = runs.length > MANY;
    curveMetrics.forEach(function (m) {
      var series = [];
      var rest = { name: "other runs (" + (runs.length - TOP) + ")", type: "line", showSymbol: false,
        connectNulls: false, silent: true, lineStyle: { width: 0.6, color: "#bbb" }, z: 1, data: [] };
      runs.forEach(function (r, ri) {
        var c = D.curves[r.id];
        if (!c) return;
        var ys = smooth(c[m[0]], m[0] === "lr" ? 0 : +state.smooth);
        if (!ys.some(function (y) { return y !== null; })) return;
        var data = c[state.x].map(function (x, i) { return [x, ys[i]]; }).filter(function (p) { return p[1] !== null; });
        if (many && ri >= TOP) {
          if (rest.data.length) rest.data.push([null, null]);
          Array.prototype.push.apply(rest.data, data);
          return;
        }
        var s = { name: name(r), type: "line", showSymbol: data.length < 12, symbolSize: 4, connectNulls: true, data: data, z: 2 };
        if (m[0] === metric && r.epoch !== null) {
          var i = c.epoch.indexOf(r.epoch);
          if (i >= 0 && c[m[0]][i] !== null) {
            s.markPoint = { symbol: "pin", symbolSize: 28, data: [{ coord: [c[state.x][i], c[m[0]][i]], value: "ckpt" }] };
          }
        }
        series.push(s);
      });
      if (rest.data.length) series.push(rest);
      if (!series.length) return;
      var logY = m[2] && series.every(function (s) { return s.data.every(function (p) { return p[1] === null || p[1] > 0; }); });
      var ch = chart(box, "", series.length, {
        title: { text: m[1], left: "center", textStyle: { fontSize: 13 } },
        tooltip: { trigger: many ? "item" : "axis" },
        legend: { type: "scroll", bottom: 0 },
        grid: { left: 60, right: 20, top: 40, bottom: 60 },
        xAxis: { type: "value", name: state.x === "epoch" ? "epoch" : "wall time (s)", nameLocation: "middle", nameGap: 24, min: "dataMin" },
        yAxis: { type: logY ? "log" : "value", name: m[0], scale: true },
        series: series
      });
      ch.__curve = true;
    });
  }
  var xSel = document.getElementById("xaxis"), smSel = document.getElementById("smoothing");
  xSel.value = state.x; smSel.value = state.smooth;
  xSel.addEventListener("change", function () { state.x = xSel.value; save(); drawCurves(); });
  smSel.addEventListener("input", function () { state.smooth = smSel.value; save(); drawCurves(); });

  // ---- hyperparameters ----------------------------------------------------------------------
  var keys = D.sweep_keys;
  function valueOf(r, k) { var v = r.config[k]; return v === undefined ? r.overrides[k] : v; }
  if (keys.length) {
    var dims = keys.map(function (k, i) {
      var d = { dim: i, name: k.key };
      if (k.numeric) d.type = k.log ? "log" : "value";
      else {
        d.type = "category";
        d.data = Array.from(new Set(runs.map(function (r) { return fmt(valueOf(r, k.key)); })));
      }
      return d;
    });
    dims.push({ dim: keys.length, name: metric, type: "value", scale: true });
    var pc = document.getElementById("parallel-coordinates");
    pc.setAttribute("data-series", "1");
    var pcc = echarts.init(pc);
    pcc.setOption({
      animation: false,
      tooltip: {},
      parallelAxis: dims,
      parallel: { left: 80, right: 120, top: 40, bottom: 30 },
      visualMap: { show: true, min: Math.min.apply(null, runs.map(function (r) { return r.value; })),
        max: Math.max.apply(null, runs.map(function (r) { return r.value; })), dimension: keys.length,
        inRange: { color: maximize ? ["#d94e5d", "#eac736", "#50a3ba"] : ["#50a3ba", "#eac736", "#d94e5d"] },
        right: 0, top: "middle", calculable: true },
      series: [{ type: "parallel", lineStyle: { width: 2, opacity: 0.6 },
        data: runs.map(function (r) {
          return keys.map(function (k) { var v = valueOf(r, k.key); return k.numeric ? v : fmt(v); }).concat([r.value]);
        }) }]
    });
    charts.push(pcc);
    var sl = document.getElementById("slices");
    keys.forEach(function (k) {
      var data = runs.map(function (r) { var v = valueOf(r, k.key); return [k.numeric ? v : fmt(v), r.value, r.id]; });
      chart(sl, "small", 1, {
        title: { text: k.key + (k.log ? " (log)" : ""), left: "center", textStyle: { fontSize: 12 } },
        tooltip: { formatter: function (p) { return "run " + p.data[2] + ": " + fmt(p.data[0]) + " -> " + fmt(p.data[1]); } },
        grid: { left: 55, right: 15, top: 35, bottom: 35 },
        xAxis: k.numeric ? { type: k.log ? "log" : "value", name: k.key, scale: true } :
          { type: "category", data: Array.from(new Set(data.map(function (d) { return d[0]; }))) },
        yAxis: { type: "value", name: metric, scale: true },
        series: [{ type: "scatter", symbolSize: 9, data: data }]
      });
    });
  } else {
    document.getElementById("parallel-coordinates").textContent = "No swept keys among these runs.";
    document.getElementById("parallel-coordinates").setAttribute("data-series", "0");
  }
  var imp = document.getElementById("importance");
  if (D.importance.length) {
    imp.setAttribute("data-series", "1");
    var ic = echarts.init(imp);
    ic.setOption({
      animation: false,
      tooltip: {},
      grid: { left: 160, right: 30, top: 20, bottom: 40 },
      xAxis: { type: "value", min: 0, max: 1, name: "eta squared" },
      yAxis: { type: "category", data: D.importance.map(function (i) {
        return i.key + " (" + i.runs + " runs" + (i.binned ? ", " + i.groups + " bins" : "") + ")"; }) },
      series: [{ type: "bar", data: D.importance.map(function (i) { return +i.eta_squared.toFixed(4); }) }]
    });
    charts.push(ic);
  } else {
    imp.textContent = "Fewer than two runs with swept keys.";
    imp.setAttribute("data-series", "0");
  }

  mark("hyperparameters");
  // ---- TPE trial history ------------------------------------------------------------------
  var th = document.getElementById("trials");
  if (D.studies.length) {
    D.studies.forEach(function (st) {
      var best = null, bestLine = [];
      var pts = st.trials.map(function (t) {
        best = best === null ? t.value : (maximize ? Math.max(best, t.value) : Math.min(best, t.value));
        bestLine.push([t.number, best]);
        return [t.number, t.value, t.run];
      });
      chart(th, "", 2, {
        title: { text: "study " + st.study + " (batches of " + st.batch + ")", left: "center", textStyle: { fontSize: 12 } },
        tooltip: { trigger: "item" },
        legend: { bottom: 0 },
        grid: { left: 55, right: 20, top: 35, bottom: 55 },
        xAxis: { type: "value", name: "trial", nameLocation: "middle", nameGap: 24, minInterval: 1 },
        yAxis: { type: "value", name: metric, scale: true },
        series: [
          { name: "trial", type: "scatter", symbolSize: 8, data: pts },
          { name: "best so far", type: "line", step: "end", showSymbol: false, data: bestLine }
        ]
      });
    });
  } else {
    th.textContent = "No TPE study among these runs.";
  }

  // ---- seed groups --------------------------------------------------------------------------
  var sg = document.getElementById("seed-groups");
  if (D.seed_groups.length) {
    var st = el("table");
    var hr = el("tr");
    ["group", "runs", "n", "mean " + metric, "95% interval", "Welch p vs leader", ""].forEach(function (x) {
      hr.appendChild(el("th", { "class": "text" }, x));
    });
    st.appendChild(hr);
    D.seed_groups.forEach(function (g) {
      var tr = el("tr");
      if (g.leader) tr.classList.add("best"); else if (g.within_noise) tr.classList.add("noise");
      var ci = g.ci95 === null ? "-" : fmt(g.mean - g.ci95) + " .. " + fmt(g.mean + g.ci95);
      [g.label, g.runs.join(", "), g.n, fmt(g.mean), ci, g.p_vs_leader === null ? "-" : fmt(g.p_vs_leader),
        g.leader ? "leader" : (g.within_noise ? "within noise" : "behind")].forEach(function (x) {
        tr.appendChild(el("td", { "class": "text" }, String(x)));
      });
      st.appendChild(tr);
    });
    sg.appendChild(st);
  } else {
    sg.textContent = "No runs here differ only by train.seed.";
  }

  // ---- verification and classification (the face task) --------------------------------------
  var F = D.faces || { verification: [], classification: [], limits: {} };
  Array.prototype.forEach.call(document.querySelectorAll(".limit"), function (e) {
    e.textContent = String(F.limits[e.getAttribute("data-limit")]);
  });
  function bytesOf(b64) {
    var s = atob(b64), bytes = new Uint8Array(s.length);
    for (var i = 0; i < s.length; i++) bytes[i] = s.charCodeAt(i);
    return bytes;
  }
  function sum(a) { return a.reduce(function (x, y) { return x + y; }, 0); }
  F.verification.forEach(function (v) {
    v.scores = Array.from(new Float32Array(bytesOf(v.probe_scores).buffer));
    v.flags = Array.from(bytesOf(v.probe_flags));
    v.thr = typeof v.score_threshold === "string" ?
      (v.score_threshold.charAt(0) === "-" ? -Infinity : Infinity) : v.score_threshold;
    v.euclid = v.metric === "euclidean";
    v.G = sum(v.genuine); v.I = sum(v.impostor);
  });
  var unit = F.verification.length && F.verification[0].euclid ? "distance" : "similarity";
  // scores are higher-is-better (Euclidean: the negative distance); axes show the metric's unit
  function natural(v, s) { return v.euclid ? -s : s; }
  function vname(v) { return "run " + v.run + (v.epoch !== v.row_epoch ? " (epoch " + v.epoch + ")" : ""); }
  // (false match rate, true match rate) accepting the bins from the top down to each bin
  function rocPoints(v) {
    var g = 0, im = 0, pts = [];
    for (var b = v.genuine.length - 1; b >= 0; b--) {
      g += v.genuine[b]; im += v.impostor[b];
      if (v.genuine[b] || v.impostor[b]) pts.push([im / v.I, g / v.G]);
    }
    return pts;
  }
  var withBoth = F.verification.filter(function (v) { return v.G > 0 && v.I > 0; });
  function rateChart(id, title, xName, yName, yLog, pointsOf) {
    var box = document.getElementById(id);
    if (!withBoth.length) {
      box.textContent = "No verification scores with both genuine and impostor comparisons among these runs.";
      return;
    }
    var series = withBoth.map(function (v) {
      return { name: vname(v), type: "line", showSymbol: false, step: "end", data: pointsOf(v) };
    });
    chart(box, "", series.length, {
      title: { text: title, left: "center", textStyle: { fontSize: 13 } },
      tooltip: { trigger: "item" },
      legend: { type: "scroll", bottom: 0 },
      grid: { left: 60, right: 20, top: 40, bottom: 60 },
      xAxis: { type: "log", name: xName, nameLocation: "middle", nameGap: 24, axisLabel: { formatter: fmt } },
      yAxis: yLog ? { type: "log", name: yName, nameLocation: "middle", nameGap: 40, axisLabel: { formatter: fmt } } :
        { type: "value", name: yName, nameLocation: "middle", nameGap: 40, min: 0, max: 1 },
      series: series
    });
  }
  rateChart("roc", "ROC", "false match rate (log)", "true match rate", false, function (v) {
    return rocPoints(v).filter(function (p) { return p[0] > 0; });
  });
  rateChart("det", "DET", "false match rate (log)", "false non-match rate (log)", true, function (v) {
    return rocPoints(v).map(function (p) { return [p[0], 1 - p[1]]; })
      .filter(function (p) { return p[0] > 0 && p[1] > 0; });
  });

  // the run whose score distribution, mistakes and confusions are shown
  var detailIds = [];
  F.verification.concat(F.classification).forEach(function (d) {
    if (detailIds.indexOf(d.run) < 0) detailIds.push(d.run);
  });
  var detailSel = document.getElementById("detail-run");
  detailIds.forEach(function (id) { detailSel.appendChild(el("option", { value: String(id) }, "run " + id)); });
  if (state.detail === undefined || detailIds.indexOf(state.detail) < 0) state.detail = detailIds[0];
  detailSel.value = String(state.detail);
  function thresholdLine(v) {
    return isFinite(v.thr) ? { symbol: "none", label: { formatter: "threshold " + fmt(natural(v, v.thr)) },
      data: [{ xAxis: natural(v, v.thr) }] } : undefined;
  }
  function drawHistogram() {
    var box = document.getElementById("score-histogram");
    charts.filter(function (c) { return c.__histogram; }).forEach(function (c) { c.dispose(); });
    charts = charts.filter(function (c) { return !c.__histogram; });
    box.textContent = "";
    var v = F.verification.filter(function (x) { return x.run === state.detail; })[0];
    if (!v) { box.textContent = "No verification scores recorded for this run."; return; }
    var bins = v.genuine.length, w = (v.hi - v.lo) / bins;
    function hist(counts, total) {
      var pts = [];
      counts.forEach(function (c, b) { if (c) pts.push([natural(v, v.lo + (b + 0.5) * w), c / total]); });
      return pts;
    }
    var series = [];
    if (v.G) series.push({ name: "genuine (" + v.G + ")", type: "bar", barWidth: 2, data: hist(v.genuine, v.G), markLine: thresholdLine(v) });
    if (v.I) series.push({ name: "impostor (" + v.I + ")", type: "bar", barWidth: 2, data: hist(v.impostor, v.I) });
    var c = chart(box, "wide", series.length, {
      title: { text: "scores of run " + v.run + " at epoch " + v.epoch, left: "center", textStyle: { fontSize: 13 } },
      tooltip: { trigger: "item" },
      legend: { bottom: 0 },
      grid: { left: 60, right: 30, top: 40, bottom: 60 },
      xAxis: { type: "value", name: unit, nameLocation: "middle", nameGap: 24, inverse: v.euclid,
        min: Math.min(natural(v, v.lo), natural(v, v.hi)), max: Math.max(natural(v, v.lo), natural(v, v.hi)) },
      yAxis: { type: "value", name: "share of comparisons", nameLocation: "middle", nameGap: 45 },
      series: series
    });
    c.__histogram = true;
  }
  detailSel.addEventListener("change", function () {
    state.detail = +detailSel.value; save(); drawHistogram(); drawConfusions();
  });

  // accuracy at every threshold: accepting the faces whose best score is at or above it
  function sweepProbes(v, onStep) {
    var order = v.scores.map(function (s, i) { return i; })
      .sort(function (a, b) { return v.scores[b] - v.scores[a]; });
    var i = 0;
    while (i < order.length) {
      var s = v.scores[order[i]];
      for (; i < order.length && v.scores[order[i]] === s; i++) onStep(v.flags[order[i]]);
      onStep(null, s);
    }
  }
  function accuracyPoints(v) {
    var n = v.scores.length, unknown = v.flags.filter(function (f) { return !(f & 2); }).length;
    // above every score nothing is accepted: the unknown faces are right
    var right = unknown, pts = [[natural(v, Math.max(v.hi, v.scores.length ? Math.max.apply(null, v.scores) : v.hi)), right / n]];
    var atThr = right / n;
    sweepProbes(v, function (f, s) {
      if (f === null) {
        pts.push([natural(v, s), right / n]);
        if (s >= v.thr) atThr = right / n;
        return;
      }
      if (!(f & 2)) right -= 1;          // an unknown face now accepted: wrong
      else if (f & 1) right += 1;        // a known face now accepted as its own identity: right
    });
    if (v.thr === -Infinity) atThr = pts[pts.length - 1][1];
    return { pts: pts, atThr: atThr };
  }
  (function () {
    var box = document.getElementById("threshold");
    if (!F.verification.length) { box.textContent = "No verification scores among these runs."; return; }
    var check = [];
    var series = F.verification.map(function (v) {
      var a = accuracyPoints(v);
      check.push({ run: v.run, epoch: v.epoch, accuracy_at_threshold: a.atThr, probes: v.scores.length });
      // a point (t, a): accepting the scores at or above t gives accuracy a, down to the next t
      var s = { name: vname(v), type: "line", step: "end", showSymbol: false, data: a.pts };
      if (isFinite(v.thr)) s.markPoint = { symbol: "pin", symbolSize: 26,
        data: [{ coord: [natural(v, v.thr), a.atThr], value: "used" }] };
      return s;
    });
    box.setAttribute("data-check", JSON.stringify(check));
    chart(box, "", series.length, {
      title: { text: "accuracy against the threshold", left: "center", textStyle: { fontSize: 13 } },
      tooltip: { trigger: "item" },
      legend: { type: "scroll", bottom: 0 },
      grid: { left: 60, right: 20, top: 40, bottom: 60 },
      xAxis: { type: "value", name: unit + " threshold", nameLocation: "middle", nameGap: 24, scale: true, inverse: unit === "distance" },
      yAxis: { type: "value", name: "verification accuracy", nameLocation: "middle", nameGap: 40, min: 0, max: 1 },
      series: series
    });
  })();
  (function () {
    var box = document.getElementById("dir-fpir");
    var usable = F.verification.filter(function (v) {
      var known = v.flags.filter(function (f) { return f & 2; }).length;
      return known > 0 && known < v.flags.length;
    });
    if (!usable.length) { box.textContent = "No run here scored both known and unknown faces."; return; }
    var series = usable.map(function (v) {
      var known = v.flags.filter(function (f) { return f & 2; }).length, unknown = v.flags.length - known;
      var fp = 0, hit = 0, pts = [];
      sweepProbes(v, function (f) {
        if (f === null) { if (fp > 0) pts.push([fp / unknown, hit / known]); return; }
        if (!(f & 2)) fp += 1; else if (f & 1) hit += 1;
      });
      return { name: vname(v), type: "line", step: "end", showSymbol: pts.length < 20, data: pts };
    });
    chart(box, "", series.length, {
      title: { text: "DIR at FPIR", left: "center", textStyle: { fontSize: 13 } },
      tooltip: { trigger: "item" },
      legend: { type: "scroll", bottom: 0 },
      grid: { left: 60, right: 20, top: 40, bottom: 60 },
      xAxis: { type: "log", name: "false positive identification rate (log)", nameLocation: "middle", nameGap: 24, axisLabel: { formatter: fmt } },
      yAxis: { type: "value", name: "detection and identification rate", nameLocation: "middle", nameGap: 40, min: 0, max: 1 },
      series: series
    });
  })();
  function thumbs(items, caption) {
    var box = el("div", { "class": "thumbs" });
    items.forEach(function (x) {
      var fig = el("figure");
      if (x.thumb) fig.appendChild(el("img", { src: x.thumb, alt: caption(x) }));
      fig.appendChild(el("figcaption", {}, caption(x)));
      box.appendChild(fig);
    });
    return box;
  }
  (function () {
    var box = document.getElementById("verification-mistakes");
    var v = F.verification[0];
    if (!v) { box.textContent = "No verification scores among these runs."; return; }
    box.appendChild(el("p", { "class": "note" }, "run " + v.run + " at epoch " + v.epoch + ": " + v.wrong_total +
      " of " + v.probes_total + " unknown faces decided wrong; the " + v.wrong.length +
      " farthest from the threshold (thumbnails at most " + F.limits.thumb_px + " px, " +
      Math.round(F.limits.thumb_budget / 1024) + " KiB in all)."));
    box.appendChild(thumbs(v.wrong, function (w) {
      var kind = w.truth === "n000000" ? "wrongly accepted" : (w.decided === "n000000" ? "wrongly rejected" : "misidentified");
      return kind + ": " + w.id + ", " + w.truth + " as " + w.decided + " (" + fmt(natural(v, w.score)) + ")";
    }));
  })();
  function drawConfusions() {
    var box = document.getElementById("confusions");
    charts.filter(function (c) { return c.__confusions; }).forEach(function (c) { c.dispose(); });
    charts = charts.filter(function (c) { return !c.__confusions; });
    box.textContent = "";
    var p = F.classification.filter(function (x) { return x.run === state.detail; })[0] || F.classification[0];
    if (!p) { box.textContent = "No dev predictions recorded at these runs' leaderboard epochs."; return; }
    box.appendChild(el("p", { "class": "note" }, "run " + p.run + " at epoch " + p.epoch + ": accuracy " +
      fmt(p.accuracy) + " over " + p.images + " dev images" + (p.images < p.images_total ? " (every k-th of " + p.images_total + ")" : "") +
      ", " + p.identities + " identities."));
    var worst = p.worst.slice().reverse();
    var c = chart(box, "", 1, {
      title: { text: "per-identity accuracy (worst " + p.worst.length + ")", left: "center", textStyle: { fontSize: 13 } },
      tooltip: { trigger: "item", formatter: function (x) { var w = worst[x.dataIndex]; return w.identity + ": " + w.correct + " of " + w.total; } },
      grid: { left: 90, right: 20, top: 40, bottom: 40 },
      xAxis: { type: "value", min: 0, max: 1, name: "accuracy" },
      yAxis: { type: "category", data: worst.map(function (w) { return w.identity; }) },
      series: [{ type: "bar", data: worst.map(function (w) { return w.correct / w.total; }) }]
    });
    c.__confusions = true;
    var t = el("table");
    var h = el("tr");
    ["true identity", "predicted as", "images"].forEach(function (x) { h.appendChild(el("th", { "class": "text" }, x)); });
    t.appendChild(h);
    p.confused.forEach(function (x) {
      var tr = el("tr");
      [x.truth, x.predicted, x.count].forEach(function (y) { tr.appendChild(el("td", { "class": "text" }, String(y))); });
      t.appendChild(tr);
    });
    box.appendChild(el("h4", {}, "Most confused pairs"));
    box.appendChild(p.confused.length ? t : el("p", { "class": "note" }, "No dev image misclassified."));
    box.appendChild(el("h4", {}, "Misclassified dev images (" + p.misclassified.length + " of " + p.misclassified_total + ")"));
    box.appendChild(thumbs(p.misclassified, function (m) { return m.image + ": " + m.truth + " as " + m.predicted; }));
  }

  // ---- compare ------------------------------------------------------------------------------
  function drawCompare() {
    var box = document.getElementById("compare");
    box.textContent = "";
    var chosen = runs.filter(function (r) { return state.chosen.indexOf(r.id) >= 0; });
    if (chosen.length < 2) { box.textContent = "Choose two or more runs (" + chosen.length + " chosen)."; return; }
    var all = {};
    chosen.forEach(function (r) { for (var k in r.config) all[k] = true; });
    var diff = Object.keys(all).sort().filter(function (k) {
      var first = JSON.stringify(chosen[0].config[k]);
      return chosen.some(function (r) { return JSON.stringify(r.config[k]) !== first; });
    });
    var t = el("table");
    var h = el("tr");
    h.appendChild(el("th", { "class": "text" }, "key"));
    chosen.forEach(function (r) { h.appendChild(el("th", {}, name(r))); });
    t.appendChild(h);
    diff.concat(["(" + metric + ")"]).forEach(function (k) {
      var tr = el("tr");
      tr.appendChild(el("td", { "class": "text" }, k));
      chosen.forEach(function (r) {
        tr.appendChild(el("td", {}, k === "(" + metric + ")" ? fmt(r.value) : fmt(r.config[k])));
      });
      t.appendChild(tr);
    });
    box.appendChild(t);
    if (!diff.length) box.appendChild(el("p", { "class": "note" }, "These runs have the same configuration."));
  }

  mark("data");
  drawLeaderboard();
  mark("leaderboard");
  drawCurves();
  mark("curves");
  drawCompare();
  drawHistogram();
  drawConfusions();
  mark("faces");
  // written by `report --watch`: reload on a timer (the state is in the URL); the count of
  // reloads in this tab is kept in window.name, which survives them
  var reloads = /^runner-reloads:(\d+)$/.exec(window.name);
  document.body.setAttribute("data-reloads", reloads ? reloads[1] : "0");
  document.body.setAttribute("data-state", JSON.stringify(state));
  if (D.reload_seconds) {
    document.getElementById("meta").textContent += "; live: reloads every " + D.reload_seconds + " s";
    setTimeout(function () {
      window.name = "runner-reloads:" + (reloads ? +reloads[1] + 1 : 1);
      location.reload();
    }, D.reload_seconds * 1000);
  }
  window.addEventListener("resize", function () { charts.forEach(function (c) { c.resize(); }); });
  document.body.setAttribute("data-render-ms", String(Math.round(performance.now())));
  document.body.setAttribute("data-marks", JSON.stringify(marks));
  document.body.setAttribute("data-rendered", "1");
})();
