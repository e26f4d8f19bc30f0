// The dashboard page: HTML, CSS, script and the SVG picture all inline, so that it works on
// a council network that reaches nothing else, and a strict Content-Security-Policy holds.
// The script builds every element with textContent (never innerHTML), so a name in the
// config cannot inject markup.

#include "dashboard/dashboard.hpp"

namespace switchboard::dashboard {

namespace {

constexpr const char* kHead = R"HTML(<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Switchboard dashboard</title>
<style>
:root { --ink:#1d2733; --muted:#5b6b7c; --line:#d5dde6; --bg:#f4f6f9; --card:#fff;
        --accent:#1f6feb; --warn:#b35900; --bad:#c62828; --good:#2e7d32; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color:var(--ink); background:var(--bg); }
header { display:flex; align-items:baseline; gap:16px; padding:12px 20px; background:#14213d; color:#fff; }
header h1 { font-size:18px; margin:0; font-weight:600; }
header .node { color:#c9d6ea; }
header #status { margin-left:auto; font-size:12px; color:#c9d6ea; }
header #status.stale { color:#ffb4a8; font-weight:600; }
main { padding:14px 20px 24px; }
.kpis { display:grid; grid-template-columns:repeat(5, 1fr); gap:10px; margin-bottom:14px; }
.kpi { background:var(--card); border:1px solid var(--line); border-radius:6px; padding:8px 12px; }
.kpi .v { font-size:22px; font-weight:600; }
.kpi .l { font-size:12px; color:var(--muted); }
.kpi.bad .v { color:var(--bad); }
section { background:var(--card); border:1px solid var(--line); border-radius:6px; padding:10px 14px;
          margin-bottom:14px; }
section h2 { font-size:15px; margin:0 0 8px; }
.grid { display:grid; grid-template-columns:1fr 1fr; gap:14px; }
.grid section { margin-bottom:0; }
table { border-collapse:collapse; width:100%; font-size:13px; }
th, td { text-align:left; padding:3px 8px 3px 0; border-bottom:1px solid #eef1f5; white-space:nowrap; }
th { color:var(--muted); font-weight:500; }
td.n, th.n { text-align:right; font-variant-numeric:tabular-nums; }
.bad { color:var(--bad); font-weight:600; }
.ok { color:var(--good); }
.muted { color:var(--muted); }
svg text { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
svg .mono { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size:12px; }
</style>
</head>
<body>
<header><h1>Switchboard</h1><span class="node" id="node"></span><span id="status">loading</span></header>
<main>
<div class="kpis" id="kpis"></div>
<section><h2>Data flows: sources &#8594; departments, with the fields each receives</h2>
<svg id="flows" xmlns="http://www.w3.org/2000/svg" width="100%" viewBox="0 0 1200 200" role="img"
     aria-label="Data flows from sources to departments"></svg></section>
<div class="grid">
<section><h2>Records in, per source</h2><table id="sources"></table></section>
<section><h2>Records out, per destination</h2><table id="destinations"></table></section>
<section><h2>Missing deletion receipts</h2><div id="erasure"></div></section>
<section><h2>Next expiries</h2><div id="expiries"></div></section>
</div>
</main>
<script type="application/json" id="initial-data">)HTML";

constexpr const char* kTail = R"HTML(</script>
<script>
(function () {
  'use strict';
  var NS = 'http://www.w3.org/2000/svg';
  var COLOURS = ['#1f6feb', '#2e7d32', '#8e24aa', '#c77700', '#00838f', '#c62828', '#5d4037', '#3949ab'];

  function h(tag, attrs, text) {
    var e = document.createElement(tag);
    for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function s(tag, attrs, text) {
    var e = document.createElementNS(NS, tag);
    for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function clear(e) { while (e.firstChild) e.removeChild(e.firstChild); return e; }
  function num(n) { return (n === null || n === undefined) ? '-' : Number(n).toLocaleString('en-GB'); }
  function span(ms) {
    if (ms === null || ms === undefined) return '-';
    var neg = ms < 0; ms = Math.abs(ms);
    var sec = Math.floor(ms / 1000), d = Math.floor(sec / 86400), hr = Math.floor(sec % 86400 / 3600),
        mi = Math.floor(sec % 3600 / 60), out;
    if (d) out = d + 'd ' + hr + 'h'; else if (hr) out = hr + 'h ' + mi + 'm';
    else if (mi) out = mi + 'm ' + (sec % 60) + 's'; else out = (sec % 60) + 's';
    return neg ? '-' + out : out;
  }
  function metricCell(inst, name, value, cls) {
    return h('td', {'class': 'n' + (cls ? ' ' + cls : ''), 'data-instance': inst, 'data-metric': name}, num(value));
  }
  function table(el, heads, rows) {
    clear(el);
    var tr = h('tr');
    heads.forEach(function (t, i) { tr.appendChild(h('th', i ? {'class': 'n'} : {}, t)); });
    el.appendChild(tr);
    rows.forEach(function (r) { el.appendChild(r); });
  }

  function kpis(d) {
    var inSum = 0, outSum = 0, backlog = 0;
    d.sources.forEach(function (x) { inSum += x.records_in; });
    d.destinations.forEach(function (x) { outSum += x.records_out; backlog += x.backlog; });
    var items = [['records in', inSum, 'records_in'], ['records out', outSum, 'records_out'],
                 ['backlog', backlog, 'backlog'],
                 ['erase receipts overdue', d.erasure.overdue, 'erase_overdue', d.erasure.overdue > 0],
                 ['expiring within 24 h', d.retention.expiring_within_24h, 'expiring_24h']];
    var box = clear(document.getElementById('kpis'));
    items.forEach(function (k) {
      var div = h('div', {'class': 'kpi' + (k[3] ? ' bad' : ''), 'data-kpi': k[2]});
      div.appendChild(h('div', {'class': 'v'}, num(k[1])));
      div.appendChild(h('div', {'class': 'l'}, k[0]));
      box.appendChild(div);
    });
  }

  // Sources on the left, one box per department on the right listing each route into it
  // (purpose, categories, profile) and the fields that profile lets through.
  function flows(d) {
    var svg = clear(document.getElementById('flows'));
    var srcNames = d.sources.map(function (x) { return x.name; });
    var dests = [], byDest = {};
    d.destinations.forEach(function (x) { byDest[x.name] = {info: x, routes: []}; dests.push(x.name); });
    d.flows.forEach(function (f) {
      if (!byDest[f.destination]) { byDest[f.destination] = {info: null, routes: []}; dests.push(f.destination); }
      byDest[f.destination].routes.push(f);
      f.sources.forEach(function (n) { if (srcNames.indexOf(n) < 0) srcNames.push(n); });
    });
    var srcStats = {};
    d.sources.forEach(function (x) { srcStats[x.name] = x; });
    var LINE = 17, GAP = 16, SX = 16, SW = 250, SH = 46, DX = 560, DW = 624, y = 10, destPos = {};
    dests.forEach(function (name, i) {
      var g = byDest[name], lines = 0;
      g.routes.forEach(function (r) { lines += 1 + Math.max(1, r.fields.length); });
      var hgt = 34 + lines * LINE + 6;
      destPos[name] = {y: y, h: hgt, colour: COLOURS[i % COLOURS.length]};
      y += hgt + GAP;
    });
    var destBottom = y;
    var step = Math.max(SH + GAP, srcNames.length ? (destBottom - 10) / srcNames.length : 0);
    var srcPos = {};
    srcNames.forEach(function (n, i) { srcPos[n] = {y: 10 + i * step + Math.max(0, (step - GAP - SH) / 2)}; });
    var height = Math.max(destBottom, 10 + srcNames.length * step) + 4;
    svg.setAttribute('viewBox', '0 0 1200 ' + Math.ceil(height));

    var edges = s('g', {'class': 'edges'});
    svg.appendChild(edges);
    d.flows.forEach(function (f) {
      var dp = destPos[f.destination];
      f.sources.forEach(function (n) {
        var sp = srcPos[n];
        var x1 = SX + SW, y1 = sp.y + SH / 2, x2 = DX, y2 = dp.y + 18, mx = (x1 + x2) / 2;
        var p = s('path', {d: 'M' + x1 + ',' + y1 + ' C' + mx + ',' + y1 + ' ' + mx + ',' + y2 + ' ' + x2 + ',' + y2,
                           fill: 'none', stroke: dp.colour, 'stroke-width': '2', 'stroke-opacity': '0.7',
                           'data-edge': n + '->' + f.destination});
        p.appendChild(s('title', {}, n + ' \u2192 ' + f.destination + ' (' + f.route + ': ' + f.purpose + ')'));
        edges.appendChild(p);
      });
    });

    srcNames.forEach(function (n) {
      var sp = srcPos[n], st = srcStats[n];
      var g = s('g', {'data-flow-source': n});
      g.appendChild(s('rect', {x: SX, y: sp.y, width: SW, height: SH, rx: 6, fill: '#eef3fb', stroke: '#9db4d6'}));
      g.appendChild(s('text', {x: SX + 10, y: sp.y + 19, 'font-size': 14, 'font-weight': 600}, n));
      g.appendChild(s('text', {x: SX + 10, y: sp.y + 37, 'font-size': 12, fill: '#5b6b7c'},
                      (st ? st.plugin + ' \u00b7 in ' + num(st.records_in) : 'not running')));
      svg.appendChild(g);
    });

    dests.forEach(function (name) {
      var g = byDest[name], dp = destPos[name], info = g.info;
      var box = s('g', {'data-flow-destination': name});
      box.appendChild(s('rect', {x: DX, y: dp.y, width: DW, height: dp.h, rx: 6, fill: '#fff',
                                 stroke: dp.colour, 'stroke-width': 2}));
      box.appendChild(s('rect', {x: DX, y: dp.y, width: 8, height: dp.h, fill: dp.colour}));
      box.appendChild(s('text', {x: DX + 18, y: dp.y + 22, 'font-size': 15, 'font-weight': 600}, name));
      if (info)
        box.appendChild(s('text', {x: DX + DW - 12, y: dp.y + 22, 'font-size': 12, fill: '#5b6b7c',
                                   'text-anchor': 'end'},
                          info.plugin + ' \u00b7 out ' + num(info.records_out) + ' \u00b7 backlog ' + num(info.backlog)));
      var ly = dp.y + 22 + LINE + 4;
      if (!g.routes.length)
        box.appendChild(s('text', {x: DX + 18, y: ly, 'font-size': 12, fill: '#5b6b7c'}, 'no route sends anything here'));
      g.routes.forEach(function (r) {
        var head = r.route + ': ' + r.purpose + ' \u00b7 ' + (r.categories.join(', ') || '-') +
                   (r.channels.length ? ' \u00b7 channels ' + r.channels.join(', ') : '') +
                   ' \u00b7 profile ' + r.profile + (r.lawful_basis ? ' \u00b7 Art. 9: ' + r.lawful_basis : '');
        box.appendChild(s('text', {x: DX + 18, y: ly, 'font-size': 12, 'font-weight': 600, 'data-route': r.route}, head));
        ly += LINE;
        if (!r.fields.length) {
          box.appendChild(s('text', {x: DX + 30, y: ly, 'font-size': 12, fill: '#5b6b7c'}, 'no fields (profile sends nothing)'));
          ly += LINE;
        }
        r.fields.forEach(function (f) {
          var t = s('text', {x: DX + 30, y: ly, 'class': 'mono field', 'data-path': f.path});
          t.appendChild(s('tspan', {}, f.path));
          t.appendChild(s('tspan', {fill: f.transform === 'keep' ? '#2e7d32' : '#8e24aa', dx: 10}, f.transform));
          box.appendChild(t);
          ly += LINE;
        });
      });
      svg.appendChild(box);
    });
  }

  function counters(d) {
    table(document.getElementById('sources'), ['source', 'records in', 'duplicates', 'refused', 'quarantined'],
      d.sources.map(function (x) {
        var tr = h('tr');
        tr.appendChild(h('td', {}, x.name));
        ['records_in', 'duplicates', 'refused', 'quarantined'].forEach(function (m) {
          tr.appendChild(metricCell(x.name, m, x[m], m !== 'records_in' && x[m] > 0 ? 'bad' : ''));
        });
        return tr;
      }));
    table(document.getElementById('destinations'),
      ['destination', 'records out', 'dead letters', 'backlog', 'oldest unacknowledged', 'erase overdue'],
      d.destinations.map(function (x) {
        var tr = h('tr');
        tr.appendChild(h('td', {}, x.name));
        tr.appendChild(metricCell(x.name, 'records_out', x.records_out));
        tr.appendChild(metricCell(x.name, 'dead_lettered', x.dead_lettered, x.dead_lettered > 0 ? 'bad' : ''));
        tr.appendChild(metricCell(x.name, 'backlog', x.backlog));
        var age = h('td', {'class': 'n', 'data-instance': x.name, 'data-metric': 'oldest_unacked_age_ms'},
                    x.oldest_unacked_age_ms === null ? 'none' : span(x.oldest_unacked_age_ms) + ' ago');
        if (x.oldest_unacked_at) age.setAttribute('title', x.oldest_unacked_at);
        tr.appendChild(age);
        tr.appendChild(metricCell(x.name, 'erase_tasks_overdue', x.erase_tasks_overdue,
                                  x.erase_tasks_overdue > 0 ? 'bad' : ''));
        return tr;
      }));
  }

  function erasure(d) {
    var e = d.erasure, box = clear(document.getElementById('erasure'));
    var p = h('p', {'data-metric': 'erase_overdue'});
    if (!e.outstanding) { p.className = 'ok'; p.textContent = 'No erase steps outstanding.'; }
    else {
      p.textContent = num(e.outstanding) + (e.capped ? '+' : '') + ' erase task(s) outstanding, ' + num(e.overdue) +
        ' overdue (no receipt within ' + span(e.receipt_deadline_ms) + ').';
      if (e.overdue) p.className = 'bad';
    }
    box.appendChild(p);
    if (!e.overdue_tasks.length) return;
    var t = h('table');
    table(t, ['instance', 'task', 'records left', 'waiting', 'attempts'], e.overdue_tasks.map(function (x) {
      var tr = h('tr');
      tr.appendChild(h('td', {}, x.instance + ' (' + x.target + ')'));
      tr.appendChild(h('td', {'class': 'n'}, x.task));
      tr.appendChild(h('td', {'class': 'n'}, num(x.records_left)));
      tr.appendChild(h('td', {'class': 'n', title: x.since}, span(d.now_ms - Date.parse(x.since))));
      tr.appendChild(h('td', {'class': 'n'}, num(x.attempts)));
      return tr;
    }));
    box.appendChild(t);
  }

  function expiries(d) {
    var r = d.retention, box = clear(document.getElementById('expiries'));
    box.appendChild(h('p', {'data-metric': 'expiring_within_24h'}, num(r.expiring_within_24h) +
      (r.expiring_within_24h_capped ? '+' : '') + ' record(s) expire within 24 h; ' + num(r.records_expired) +
      ' expired since start; last sweep ' + (r.sweep_seconds ? r.sweep_seconds.toFixed(3) + ' s' : '-') + '.'));
    if (!r.next_expiries.length) { box.appendChild(h('p', {'class': 'muted'}, 'Nothing held.')); return; }
    var t = h('table');
    table(t, ['expires', 'in', 'records', 'chunk'], r.next_expiries.map(function (x) {
      var tr = h('tr', {'data-expiry-chunk': x.chunk});
      tr.appendChild(h('td', {}, x.expires_at));
      tr.appendChild(h('td', {'class': 'n'}, span(x.in_ms)));
      tr.appendChild(h('td', {'class': 'n'}, num(x.records)));
      tr.appendChild(h('td', {'class': 'n'}, x.chunk));
      return tr;
    }));
    box.appendChild(t);
  }

  function render(d) {
    document.getElementById('node').textContent = 'node ' + d.node;
    kpis(d); flows(d); counters(d); erasure(d); expiries(d);
    var st = document.getElementById('status');
    st.className = '';
    st.textContent = 'updated ' + d.generated_at + ' \u00b7 refreshes every ' + span(d.refresh_ms);
    document.body.setAttribute('data-rendered', d.generated_at);
  }

  function stale(why) {
    var st = document.getElementById('status');
    st.className = 'stale';
    st.textContent = 'not updating: ' + why;
  }

  var refresh = 5000;
  function load() {
    fetch('/dashboard/data.json', {credentials: 'same-origin', cache: 'no-store'})
      .then(function (r) { if (!r.ok) throw new Error('HTTP ' + r.status); return r.json(); })
      .then(render)
      .catch(function (e) { stale(e.message); });
  }
  try {
    var first = JSON.parse(document.getElementById('initial-data').textContent);
    refresh = first.refresh_ms || refresh;
    render(first);
  } catch (e) { stale('the page data could not be read'); }
  setInterval(load, refresh);
})();
</script>
</body>
</html>
)HTML";

} // namespace

std::string render_page(const std::string& data_json) {
    std::string out = kHead;
    out.reserve(out.size() + data_json.size() + 16384);
    // "</script" or "<!--" in a name would end or confuse the script element; "<" only
    // occurs inside JSON strings, where \u003c is the same character.
    for (char c : data_json) {
        if (c == '<')
            out += "\\u003c";
        else
            out += c;
    }
    out += kTail;
    return out;
}

} // namespace switchboard::dashboard
