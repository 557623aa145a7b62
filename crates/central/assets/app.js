/* ami-central dashboard: a dependency-free single-page app (ES2020), embedded in the ami-central binary.
 *
 * Pages are hash routes: #/ (sites), #/site/{site} (health, meters, commands, compare chart) and
 * #/site/{site}/meter/{meter} (power and energy charts). Data comes from the operator API (/api/v1/…)
 * with the session cookie that POST /login sets; a 401 from any call signs out and shows the login page.
 * Charts are SVG drawn by drawChart() below. Text from the server only ever reaches the page through
 * text nodes and attributes (h()/s()), never through HTML strings.
 */
'use strict';

(() => {
  // Series colours, in the order meters get them. The browser test reads this line to find the charts'
  // pixels in its screenshots: keep it one array literal of #rrggbb strings.
  const PALETTE = ['#2563eb', '#ea580c', '#059669', '#9333ea', '#db2777', '#0891b2', '#ca8a04', '#475569'];
  const POWER_COLOR = PALETTE[0];
  const ENERGY_COLOR = PALETTE[1];

  const MIN = 60e3;
  const HOUR = 60 * MIN;
  const DAY = 24 * HOUR;
  /** A site whose last batch is older than this is shown as stale. */
  const STALE_MS = 15 * MIN;
  /** Pages reload their data this often while visible. */
  const REFRESH_MS = 60e3;
  const BUCKET_MS = { '15m': 15 * MIN, hour: HOUR, day: DAY };

  /** Range buttons: the resolution each chart asks for (buckets are aligned in UTC by the server). */
  const RANGES = {
    hour: { label: 'Hour', power: 'raw', energy: '15m' },
    day: { label: 'Day', power: '15m', energy: '15m', compare: 'hour' },
    month: { label: 'Month', power: 'hour', energy: 'day' },
    year: { label: 'Year', power: 'day', energy: 'month' },
  };
  const BUCKET_NAMES = { '15m': '15 min', hour: 'hour', day: 'day', month: 'month' };

  let config = { tariff: 0.3, currency: 'EUR' };

  // ---------------------------------------------------------------- DOM helpers

  const PROPS = new Set(['checked', 'disabled', 'value', 'selected', 'hidden']);

  function build(el, attrs, kids) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else if (PROPS.has(k)) el[k] = v;
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const kid of kids.flat(Infinity)) {
      if (kid == null || kid === false) continue;
      el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return el;
  }
  const h = (tag, attrs, ...kids) => build(document.createElement(tag), attrs, kids);
  const s = (tag, attrs, ...kids) => build(document.createElementNS('http://www.w3.org/2000/svg', tag), attrs, kids);
  /** Replaces the children of `el` (null children are skipped, as in h()). */
  const fill = (el, ...kids) => {
    el.replaceChildren();
    return build(el, {}, kids);
  };
  const $ = (sel) => document.querySelector(sel);
  const enc = encodeURIComponent;

  // ---------------------------------------------------------------- formatting

  const dtf = (opts) => new Intl.DateTimeFormat(undefined, { hourCycle: 'h23', ...opts });
  const F = {
    hm: dtf({ hour: '2-digit', minute: '2-digit' }),
    dm: dtf({ day: 'numeric', month: 'short' }),
    full: dtf({ day: 'numeric', month: 'short', year: 'numeric', hour: '2-digit', minute: '2-digit' }),
    fullS: dtf({ day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit', second: '2-digit' }),
    // Day and month buckets are UTC days and months: label them as such.
    dmU: dtf({ day: 'numeric', month: 'short', timeZone: 'UTC' }),
    dayU: dtf({ weekday: 'short', day: 'numeric', month: 'short', year: 'numeric', timeZone: 'UTC' }),
    monU: dtf({ month: 'short', timeZone: 'UTC' }),
    monYU: dtf({ month: 'short', year: 'numeric', timeZone: 'UTC' }),
    monthLongU: dtf({ month: 'long', year: 'numeric', timeZone: 'UTC' }),
  };

  function fmtNum(v, digits) {
    return v.toLocaleString(undefined, { minimumFractionDigits: digits, maximumFractionDigits: digits });
  }
  /** Digits enough to show a value of this size with about three significant figures. */
  const digitsFor = (v) => (Math.abs(v) >= 100 ? 0 : Math.abs(v) >= 10 ? 1 : 2);
  const fmtInt = (n) => (typeof n === 'number' ? Math.round(n).toLocaleString() : '—');

  function fmtDuration(ms) {
    const sec = Math.max(0, Math.round(ms / 1000));
    if (sec < 60) return `${sec} s`;
    const min = Math.floor(sec / 60);
    if (min < 60) return `${min} min`;
    const hr = Math.floor(min / 60);
    if (hr < 48) return `${hr} h ${min % 60} min`;
    return `${Math.floor(hr / 24)} d ${hr % 24} h`;
  }
  function fmtAgo(t) {
    if (t == null || !Number.isFinite(t)) return 'never';
    const ms = Date.now() - t;
    return ms < 45e3 ? 'just now' : `${fmtDuration(ms).replace(/ \d+ (min|h)$/, '')} ago`;
  }
  /** A time element showing "5 min ago" with the full date on hover. */
  function ago(t, cls) {
    const ms = typeof t === 'string' ? Date.parse(t) : t;
    if (ms == null || !Number.isFinite(ms)) return h('span', { class: 'muted' }, 'never');
    return h('time', { datetime: new Date(ms).toISOString(), title: F.full.format(ms), class: cls }, fmtAgo(ms));
  }

  /** Display unit for an axis: SI prefixes for physical units, plain for per-year and money units. */
  function axisUnit(unit, maxAbs) {
    if (['W', 'Wh', 'var', 'varh', 'VA', 'VAh'].includes(unit)) {
      for (const [div, p] of [[1e9, 'G'], [1e6, 'M'], [1e3, 'k']]) if (maxAbs >= div) return { div, unit: p + unit };
      return { div: 1, unit };
    }
    if (unit === 'kWh/year' && maxAbs >= 1e5) return { div: 1e3, unit: 'MWh/year' };
    return { div: 1, unit };
  }
  function fmtValue(v, unit) {
    const ax = axisUnit(unit, Math.abs(v));
    const x = v / ax.div;
    return `${fmtNum(x, digitsFor(x))} ${ax.unit}`.trim();
  }
  function fmtMoney(v) {
    try {
      return new Intl.NumberFormat(undefined, { style: 'currency', currency: config.currency }).format(v);
    } catch (_) {
      return `${fmtNum(v, 2)} ${config.currency}`;
    }
  }

  // ---------------------------------------------------------------- time buckets (UTC, like the server)

  function floorUTC(t, res) {
    if (res === 'month') {
      const d = new Date(t);
      return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1);
    }
    const ms = BUCKET_MS[res];
    return ms ? Math.floor(t / ms) * ms : t;
  }
  function addBucket(t, res, n = 1) {
    if (res === 'month') {
      const d = new Date(t);
      return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + n, 1);
    }
    return t + n * (BUCKET_MS[res] || 0);
  }
  /** The [from, to) window of a range button, ending with the bucket that holds "now". */
  function windowFor(range, now = Date.now()) {
    switch (range) {
      case 'hour': {
        const to = addBucket(floorUTC(now, '15m'), '15m');
        return { from: to - HOUR, to };
      }
      case 'month': {
        const to = addBucket(floorUTC(now, 'day'), 'day');
        return { from: to - 30 * DAY, to };
      }
      case 'year': {
        const to = addBucket(floorUTC(now, 'month'), 'month');
        return { from: addBucket(to, 'month', -12), to };
      }
      default: {
        const to = addBucket(floorUTC(now, '15m'), '15m');
        return { from: to - DAY, to };
      }
    }
  }
  function bucketLabel(t, res) {
    switch (res) {
      case 'month': return F.monthLongU.format(t);
      case 'day': return F.dayU.format(t);
      case '15m': case 'hour': return `${F.full.format(t)}–${F.hm.format(addBucket(t, res))}`;
      default: return F.fullS.format(t);
    }
  }

  // ---------------------------------------------------------------- API

  class HttpError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  let signingOut = false;
  async function signOut() {
    if (signingOut) return;
    signingOut = true;
    try {
      await fetch('/logout', { credentials: 'same-origin' });
    } catch (_) { /* the reload below shows whatever the server serves */ }
    location.reload();
  }

  async function api(path, opts = {}) {
    const init = { credentials: 'same-origin', headers: { Accept: 'application/json' }, signal: opts.signal };
    if (opts.body !== undefined) {
      init.method = 'POST';
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(opts.body);
    }
    const res = await fetch(path, init);
    if (res.status === 401) {
      signOut();
      throw new HttpError(401, 'signed out');
    }
    if (res.status === 404 && opts.allow404) return null;
    if (!res.ok) {
      let reason = res.statusText;
      try {
        const j = await res.json();
        if (j && j.error) reason = j.error;
      } catch (_) { /* not JSON: keep the status text */ }
      throw new HttpError(res.status, `${res.status} ${reason}`.trim());
    }
    return res.status === 204 ? null : res.json();
  }

  const siteApi = (site) => `/api/v1/sites/${enc(site)}`;
  const iso = (t) => new Date(t).toISOString().replace('.000Z', 'Z');

  /** Numeric readings of one series as [{t, v}], oldest first. */
  async function fetchReadings(site, meter, obis, from, to, resolution, agg, signal) {
    const q = new URLSearchParams({ from: iso(from), to: iso(to), resolution, agg, format: 'json' });
    if (obis) q.set('obis', obis);
    const rows = await api(`${siteApi(site)}/meters/${enc(meter)}/readings?${q}`, { signal });
    return (Array.isArray(rows) ? rows : [])
      .map((r) => ({ t: Date.parse(r.ts), v: r.value, obis: r.obis }))
      .filter((p) => Number.isFinite(p.t) && typeof p.v === 'number' && Number.isFinite(p.v))
      .sort((a, b) => a.t - b.t);
  }

  // ---------------------------------------------------------------- OBIS: which series is power, which energy

  function obisParts(code) {
    const m = /^(\d+)-(\d+):(\d+)\.(\d+)\.(\d+)(?:\*(\d+))?$/.exec(code || '');
    return m ? m.slice(1, 6).map(Number) : null;
  }
  /** Electricity (A=1) series with D = `d` and C in `cs` (earlier C preferred), total (E=0) first. */
  function pickObis(series, cs, d) {
    let best = null;
    let bestScore = Infinity;
    for (const sr of series) {
      const p = obisParts(sr.obis);
      if (!p || p[0] !== 1 || p[3] !== d || !cs.includes(p[2])) continue;
      const score = cs.indexOf(p[2]) * 1000 + p[4];
      if (score < bestScore) {
        best = sr;
        bestScore = score;
      }
    }
    return best;
  }
  /** Active power total: 1-0:16.7.0 (signed) or 1-0:1.7.0 (import), else any W/kW series. */
  function powerSeries(meter) {
    const list = meter.series || [];
    return pickObis(list, [16, 1], 7)
      || list.find((x) => (x.unit === 'W' || x.unit === 'kW') && x.kind !== 'counter') || null;
  }
  /** Active energy import: 1-0:1.8.0, else the meter's first counter series (heat, water, gas…). */
  function energySeries(meter) {
    const list = meter.series || [];
    return pickObis(list, [1], 8) || list.find((x) => x.kind === 'counter') || null;
  }
  const toWatts = (unit) => (unit === 'kW' ? 1000 : 1);
  /** Counters in kWh are shown in Wh like the rest; other units (m³, GJ…) stay as they are. */
  const counterScale = (unit) => (unit === 'kWh' ? { f: 1000, unit: 'Wh' } : { f: 1, unit: unit || '' });

  async function powerPoints(site, meter, sr, win, res, signal) {
    const rows = await fetchReadings(site, meter, sr.obis, win.from, win.to, res, 'avg', signal);
    const f = toWatts(sr.unit);
    return rows.map((p) => ({ t: p.t, v: p.v * f }));
  }

  /**
   * Energy per bucket of a counter: the server's agg=delta, i.e. the counter's advance from the first
   * reading of the bucket to the first reading of the next one (so buckets add up to the range's total,
   * also for readings stamped exactly on bucket boundaries). A decrease (counter reset, meter exchange)
   * is left out rather than drawn as negative energy.
   */
  async function energyPoints(site, meter, sr, win, res, signal) {
    const rows = await fetchReadings(site, meter, sr.obis, win.from, win.to, res, 'delta', signal);
    const f = counterScale(sr.unit).f;
    return rows.filter((p) => p.v >= 0).map((p) => ({ t: p.t, t1: addBucket(p.t, res), v: p.v * f }));
  }

  // ---------------------------------------------------------------- units: W ↔ kWh/year ↔ currency/year

  const UNITS = ['W', 'kwh', 'cur'];
  function unitLabel(u) {
    return u === 'kwh' ? 'kWh/yr' : u === 'cur' ? `${config.currency}/yr` : 'W';
  }
  /** Power in W → the chosen unit: kWh/year = W × 8760 h / 1000; currency/year = that × tariff. */
  function powerConv(u) {
    if (u === 'kwh') return { f: 8.76, unit: 'kWh/year' };
    if (u === 'cur') return { f: 8.76 * config.tariff, unit: `${config.currency}/year` };
    return { f: 1, unit: 'W' };
  }
  /** Energy per bucket in the counter's unit → the chosen unit (money only for Wh counters). */
  function energyConv(u, counterUnit) {
    if (u === 'cur' && counterUnit === 'Wh') return { f: config.tariff / 1000, unit: config.currency, money: true };
    return { f: 1, unit: counterUnit };
  }
  const convert = (points, f) => points.map((p) => ({ ...p, v: p.v * f }));

  // ---------------------------------------------------------------- preferences (range, unit, compare mode)

  const prefs = (() => {
    const dflt = { range: 'day', unit: 'W', mode: 'power' };
    try {
      const saved = JSON.parse(localStorage.getItem('ami.prefs') || '{}');
      return {
        range: RANGES[saved.range] ? saved.range : dflt.range,
        unit: UNITS.includes(saved.unit) ? saved.unit : dflt.unit,
        mode: saved.mode === 'energy' ? 'energy' : dflt.mode,
      };
    } catch (_) {
      return dflt;
    }
  })();
  function savePrefs() {
    try {
      localStorage.setItem('ami.prefs', JSON.stringify(prefs));
    } catch (_) { /* private mode: preferences last for this page only */ }
  }

  // ---------------------------------------------------------------- charts

  function niceTicks(lo, hi, n) {
    const raw = (hi - lo) / Math.max(1, n);
    const mag = 10 ** Math.floor(Math.log10(raw));
    const step = [1, 2, 2.5, 5, 10].map((f) => f * mag).find((x) => x >= raw) || 10 * mag;
    const ticks = [];
    const start = Math.floor(lo / step + 1e-9);
    const end = Math.ceil(hi / step - 1e-9);
    for (let i = start; i <= end; i++) ticks.push(i * step);
    return { ticks, step };
  }
  const tickDigits = (step) => Math.max(0, Math.min(6, -Math.floor(Math.log10(step) + 1e-9)));

  const SUB_DAY_STEPS = [1, 2, 5, 10, 15, 30].map((m) => m * MIN).concat([1, 2, 3, 6, 12].map((x) => x * HOUR));
  /** Time axis ticks: local clock times below a day, UTC dates and months above (as the buckets are). */
  function timeTicks(from, to, max) {
    const span = to - from;
    const out = [];
    const step = SUB_DAY_STEPS.find((x) => span / x <= max);
    if (step) {
      const d = new Date(from);
      d.setHours(0, 0, 0, 0);
      let t = d.getTime() + Math.ceil((from - d.getTime()) / step) * step;
      for (; t <= to; t += step) {
        const dt = new Date(t);
        const midnight = dt.getHours() === 0 && dt.getMinutes() === 0;
        out.push({ t, label: midnight ? F.dm.format(t) : F.hm.format(t) });
      }
      return out;
    }
    const days = [1, 2, 7, 14].find((n) => span / (n * DAY) <= max);
    if (days) {
      for (let t = addBucket(floorUTC(from - 1, 'day'), 'day'); t <= to; t += days * DAY) {
        out.push({ t, label: F.dmU.format(t) });
      }
      return out;
    }
    const months = [1, 2, 3, 6, 12].find((n) => span / (n * 30.44 * DAY) <= max) || 12;
    for (let t = addBucket(floorUTC(from - 1, 'month'), 'month'); t <= to; t = addBucket(t, 'month')) {
      const m = new Date(t).getUTCMonth();
      if (m % months === 0) out.push({ t, label: m === 0 ? F.monYU.format(t) : F.monU.format(t) });
    }
    return out;
  }

  function emptyState(title, text) {
    return h('div', { class: 'empty' }, h('strong', {}, title), text ? h('span', {}, text) : null);
  }

  /** Splits a line into runs without gaps; a gap is a step longer than 1.5 buckets (3× the usual spacing for raw data). */
  function segments(points, res) {
    let limit;
    if (res === 'month') limit = 32 * DAY;
    else if (BUCKET_MS[res]) limit = BUCKET_MS[res] * 1.5;
    else {
      const steps = [];
      for (let i = 1; i < points.length; i++) steps.push(points[i].t - points[i - 1].t);
      steps.sort((a, b) => a - b);
      limit = 3 * (steps[Math.floor(steps.length / 2)] || HOUR);
    }
    const runs = [];
    let run = [];
    for (const p of points) {
      if (run.length && p.t - run[run.length - 1].t > limit) {
        runs.push(run);
        run = [];
      }
      run.push(p);
    }
    if (run.length) runs.push(run);
    return runs;
  }

  function nearest(points, t) {
    let lo = 0;
    let hi = points.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (points[mid].t < t) lo = mid + 1;
      else hi = mid;
    }
    const a = points[lo];
    const b = points[lo - 1];
    return b && Math.abs(b.t - t) <= Math.abs(a.t - t) ? b : a;
  }

  let chartSeq = 0;

  /**
   * Draws a line or grouped-bar chart into `host`.
   * cfg: { type: 'line'|'bar', series: [{ label, color, points: [{ t, v, t1? }] }], from, to, res,
   *        unit, fmt(v) → tooltip text, area?, height?, title, empty?: [title, text] }
   */
  function drawChart(host, cfg) {
    host.replaceChildren();
    host.classList.remove('busy');
    const series = cfg.series.filter((x) => x.points.length);
    if (!series.length) {
      const [title, text] = cfg.empty || ['No data', 'Nothing was recorded in this range.'];
      host.append(emptyState(title, text));
      return;
    }
    const W = Math.max(320, Math.round(host.clientWidth - 14) || 900);
    const H = cfg.height || 260;
    const M = { l: 60, r: 16, t: 24, b: 28 };
    const pw = W - M.l - M.r;
    const ph = H - M.t - M.b;
    const { from, to } = cfg;
    const X = (t) => M.l + ((t - from) / (to - from)) * pw;

    let lo = 0;
    let hi = 0;
    for (const sr of series) for (const p of sr.points) {
      if (p.v < lo) lo = p.v;
      if (p.v > hi) hi = p.v;
    }
    if (hi === lo) hi = lo + 1;
    const ax = axisUnit(cfg.unit, Math.max(Math.abs(lo), Math.abs(hi)));
    const yt = niceTicks(lo / ax.div, hi / ax.div, Math.max(2, Math.floor(ph / 46)));
    const ylo = yt.ticks[0] * ax.div;
    const yhi = yt.ticks[yt.ticks.length - 1] * ax.div;
    const Y = (v) => M.t + ((yhi - v) / (yhi - ylo)) * ph;

    const clipId = `clip${++chartSeq}`;
    const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: 'img', 'aria-label': cfg.title || 'chart' },
      s('defs', {}, s('clipPath', { id: clipId }, s('rect', { x: M.l, y: M.t - 1, width: pw, height: ph + 2 }))));
    const grid = s('g', { class: 'grid' });
    const axis = s('g', { class: 'axis' });
    const digits = tickDigits(yt.step);
    for (const v of yt.ticks) {
      const y = Y(v * ax.div);
      grid.append(s('line', { x1: M.l, x2: M.l + pw, y1: y, y2: y, class: Math.abs(v) < yt.step / 1e6 ? 'zero' : null }));
      axis.append(s('text', { x: M.l - 8, y: y + 4, 'text-anchor': 'end' }, fmtNum(v, digits)));
    }
    axis.append(s('text', { x: 4, y: 11, class: 'title' }, ax.unit));
    for (const tk of timeTicks(from, to, Math.max(2, Math.floor(pw / 76)))) {
      const x = X(tk.t);
      grid.append(s('line', { x1: x, x2: x, y1: M.t + ph, y2: M.t + ph + 4 }));
      axis.append(s('text', { x, y: H - 8, 'text-anchor': 'middle' }, tk.label));
    }
    svg.append(grid, axis);

    const plot = s('g', { 'clip-path': `url(#${clipId})` });
    const y0 = Y(0);
    if (cfg.type === 'bar') {
      const n = series.length;
      series.forEach((sr, k) => {
        for (const p of sr.points) {
          const x0 = X(p.t);
          const slot = X(p.t1 ?? addBucket(p.t, cfg.res)) - x0;
          const pad = Math.min(slot * 0.15, 6);
          const w = Math.max(1, (slot - 2 * pad) / n);
          const ya = Y(Math.max(p.v, 0));
          const yb = Y(Math.min(p.v, 0));
          plot.append(s('rect', {
            x: x0 + pad + k * w, y: ya, width: Math.max(1, w - (n > 1 ? 1 : 0)), height: Math.max(p.v ? 1 : 0, yb - ya),
            rx: Math.min(2, w / 4), fill: sr.color, class: 'bar',
          }));
        }
      });
    } else {
      for (const sr of series) {
        for (const run of segments(sr.points, cfg.res)) {
          if (run.length === 1) {
            plot.append(s('circle', { cx: X(run[0].t), cy: Y(run[0].v), r: 2.5, fill: sr.color }));
            continue;
          }
          const d = run.map((p, i) => `${i ? 'L' : 'M'}${X(p.t).toFixed(1)},${Y(p.v).toFixed(1)}`).join('');
          if (cfg.area && series.length === 1) {
            const first = X(run[0].t).toFixed(1);
            const last = X(run[run.length - 1].t).toFixed(1);
            plot.append(s('path', { d: `${d}L${last},${y0}L${first},${y0}Z`, fill: sr.color, 'fill-opacity': 0.1 }));
          }
          plot.append(s('path', {
            d, fill: 'none', stroke: sr.color, 'stroke-width': 2, 'stroke-linejoin': 'round', 'stroke-linecap': 'round',
          }));
        }
      }
    }
    svg.append(plot);

    // Hover: a guide line, a dot per series and a tooltip with the values at the nearest time.
    const guide = s('line', { class: 'guide', y1: M.t, y2: M.t + ph, visibility: 'hidden' });
    const dots = series.map((sr) => s('circle', { r: 4, fill: sr.color, class: 'dot', visibility: 'hidden' }));
    const hit = s('rect', { x: M.l, y: M.t, width: pw, height: ph, class: 'hit' });
    svg.append(guide, ...dots, hit);
    const tip = h('div', { class: 'tip hidden' });
    host.append(svg, tip);

    const hide = () => {
      tip.classList.add('hidden');
      guide.setAttribute('visibility', 'hidden');
      dots.forEach((d) => d.setAttribute('visibility', 'hidden'));
    };
    hit.addEventListener('pointerleave', hide);
    hit.addEventListener('pointermove', (ev) => {
      const box = svg.getBoundingClientRect();
      const scale = W / box.width;
      const t = from + (((ev.clientX - box.left) * scale - M.l) / pw) * (to - from);
      let at = null;
      const rows = [];
      if (cfg.type === 'bar') {
        series.forEach((sr) => {
          const p = sr.points.find((q) => q.t <= t && t < (q.t1 ?? addBucket(q.t, cfg.res)));
          if (p) {
            at = p;
            rows.push([sr, p]);
          }
        });
      } else {
        let best = null;
        for (const sr of series) {
          const p = nearest(sr.points, t);
          if (!best || Math.abs(p.t - t) < Math.abs(best.t - t)) best = p;
        }
        at = best;
        series.forEach((sr, i) => {
          const p = nearest(sr.points, best.t);
          if (Math.abs(p.t - best.t) <= (BUCKET_MS[cfg.res] || 2 * MIN) / 2) {
            rows.push([sr, p]);
            dots[i].setAttribute('cx', X(p.t));
            dots[i].setAttribute('cy', Y(p.v));
            dots[i].setAttribute('visibility', 'visible');
          } else dots[i].setAttribute('visibility', 'hidden');
        });
      }
      if (!at || !rows.length) {
        hide();
        return;
      }
      const gx = cfg.type === 'bar' ? (X(at.t) + X(at.t1 ?? addBucket(at.t, cfg.res))) / 2 : X(at.t);
      guide.setAttribute('x1', gx);
      guide.setAttribute('x2', gx);
      guide.setAttribute('visibility', 'visible');
      tip.replaceChildren(
        h('div', { class: 'when' }, bucketLabel(at.t, cfg.res)),
        ...rows.map(([sr, p]) => h('div', { class: 'row' },
          h('span', { class: 'swatch', style: null }, ''), sr.label, h('b', {}, cfg.fmt(p.v)))),
      );
      // Colour swatches through the CSSOM (allowed under a strict style-src policy, unlike style="").
      tip.querySelectorAll('.swatch').forEach((el, i) => { el.style.background = rows[i][0].color; });
      tip.classList.remove('hidden');
      const hostBox = host.getBoundingClientRect();
      const px = gx / scale + (box.left - hostBox.left);
      const left = px + 14 + tip.offsetWidth > hostBox.width ? px - 14 - tip.offsetWidth : px + 14;
      tip.style.left = `${Math.max(0, left)}px`;
      tip.style.top = `${Math.max(0, (ev.clientY - hostBox.top) - tip.offsetHeight - 12)}px`;
    });
  }

  /** A chart container that remembers its last drawing so it can be redrawn on resize. */
  function chartSlot(ctx) {
    const el = h('div', { class: 'chart' }, h('div', { class: 'loading' }, 'Loading…'));
    let last = null;
    let seq = 0;
    ctx.redraws.push(() => last && drawChart(el, last));
    return {
      el,
      /** Runs `load()` (→ chart config) and draws it unless a newer load started meanwhile. */
      async show(load) {
        const mine = ++seq;
        if (last) el.classList.add('busy'); // a reload: dim the old chart until the new one is drawn
        try {
          const cfg = await load();
          if (mine !== seq || ctx.signal.aborted) return;
          last = cfg;
          drawChart(el, cfg);
        } catch (err) {
          if (mine !== seq || ctx.signal.aborted || err.name === 'AbortError') return;
          last = null;
          el.classList.remove('busy');
          el.replaceChildren(h('div', { class: 'alert' }, `Could not load the chart: ${err.message}`));
        }
      },
    };
  }

  function legend(items) {
    const el = h('div', { class: 'legend' }, items.map((it) => h('span', { class: 'item' },
      h('span', { class: 'swatch' }), it.label, it.value ? h('b', {}, it.value) : null)));
    el.querySelectorAll('.swatch').forEach((sw, i) => { sw.style.background = items[i].color; });
    return el;
  }

  /** A segmented button group; `onPick(value)` runs on change. */
  function segmented(options, current, onPick, label) {
    const el = h('div', { class: 'seg', role: 'group', 'aria-label': label });
    const paint = (v) => el.querySelectorAll('button').forEach((b) => b.setAttribute('aria-pressed', String(b.dataset.v === v)));
    for (const [v, text] of options) {
      el.append(h('button', {
        type: 'button',
        'data-v': v,
        onclick: () => {
          paint(v);
          onPick(v);
        },
      }, text));
    }
    paint(current);
    return el;
  }
  const rangeButtons = (onPick) => segmented(Object.entries(RANGES).map(([k, r]) => [k, r.label]), prefs.range, (v) => {
    prefs.range = v;
    savePrefs();
    onPick(v);
  }, 'Range');
  const unitButtons = (onPick) => segmented(UNITS.map((u) => [u, unitLabel(u)]), prefs.unit, (v) => {
    prefs.unit = v;
    savePrefs();
    onPick(v);
  }, 'Unit');

  // ---------------------------------------------------------------- health

  function siteState(site, snap) {
    const health = snap && snap.health;
    const failing = ((health && health.meters) || []).filter((m) => m.consecutive_failures > 0);
    const seen = site.last_seen ? Date.parse(site.last_seen) : null;
    if (failing.length) {
      return { cls: 'errors', text: 'errors', why: `Failing: ${failing.map((m) => m.meter).join(', ')}` };
    }
    if (!seen) return { cls: 'stale', text: 'no data', why: 'No batch received yet' };
    if (Date.now() - seen > STALE_MS) return { cls: 'stale', text: 'stale', why: `Last batch ${fmtAgo(seen)}` };
    if (health && !health.clock_trusted) {
      return { cls: 'stale', text: 'stale', why: 'Site clock not trusted: readings are held back' };
    }
    return { cls: 'ok', text: 'ok', why: 'Reporting, no failing meters' };
  }
  const badge = (st) => h('span', { class: `badge ${st.cls}`, title: st.why }, st.text);

  function stat(label, value, unit, cls) {
    return h('div', { class: `stat ${cls || ''}` }, h('div', { class: 'label' }, label),
      h('div', { class: 'value' }, value, unit ? h('small', {}, unit) : null));
  }

  function actionText(a) {
    if (!a) return '—';
    if (a.type === 'read_now') return 'Read now';
    if (a.type === 'set_clock') return 'Set clock';
    if (a.type === 'control') return `${a.name} ${a.on ? 'on (reconnect)' : 'off (disconnect)'}`;
    return a.type;
  }

  // ---------------------------------------------------------------- pages

  function setCrumbs(items) {
    const nav = $('#crumbs');
    nav.replaceChildren();
    items.forEach((it, i) => {
      if (i) nav.append(h('span', { class: 'sep' }, '/'));
      nav.append(it.href ? h('a', { href: it.href }, it.label) : h('span', { class: 'here' }, it.label));
    });
    document.title = `${items.map((it) => it.label).reverse().join(' · ')} · ami-central`;
  }
  const siteHref = (site) => `#/site/${enc(site)}`;
  const meterHref = (site, meter) => `#/site/${enc(site)}/meter/${enc(meter)}`;

  const td = (content, cls, title) => h('td', { class: cls, title }, content);
  /** A table with headers `cols` ([label, class]) and body rows `rows` (tr elements). */
  function table(cols, rows) {
    return h('div', { class: 'table-wrap' }, h('table', {},
      h('thead', {}, h('tr', {}, cols.map(([label, cls]) => h('th', { class: cls }, label)))),
      h('tbody', {}, rows)));
  }
  const card = (title, aside, ...body) => h('section', { class: 'card' },
    h('div', { class: 'card-head' }, h('h2', {}, title), aside), ...body);

  /** #/ — every site with its counts and a health badge. */
  async function sitesPage(ctx, root) {
    setCrumbs([{ label: 'Sites' }]);
    const stats = h('div', { class: 'stats' });
    const body = h('div', { class: 'card-body flush' }, h('div', { class: 'loading' }, 'Loading…'));
    root.replaceChildren(
      h('div', { class: 'page-head' }, h('h1', {}, 'Sites')),
      h('p', { class: 'page-sub' }, 'Concentrators that report to this central store.'),
      stats,
      h('section', { class: 'card' }, body),
    );

    async function load() {
      const { signal } = ctx;
      const sites = (await api('/api/v1/sites', { signal })) || [];
      const snaps = await Promise.all(sites.map((x) => api(`${siteApi(x.site)}/health`, { signal, allow404: true })
        .catch((e) => (e.status === 401 ? Promise.reject(e) : null))));
      if (signal.aborted) return;
      const states = sites.map((x, i) => siteState(x, snaps[i]));
      const sum = (k) => sites.reduce((a, x) => a + (Number(x[k]) || 0), 0);
      const attention = states.filter((st) => st.cls !== 'ok').length;
      stats.replaceChildren(
        stat('Sites', fmtInt(sites.length)),
        stat('Meters', fmtInt(sum('meters'))),
        stat('Readings', fmtInt(sum('readings'))),
        stat('Pending commands', fmtInt(sum('pending_commands'))),
        stat('Need attention', fmtInt(attention), null, attention ? 'warn' : ''),
      );
      if (!sites.length) {
        body.replaceChildren(emptyState('No site has reported yet', 'Create a site token with '
          + '"ami-central token add SITE" and point a collector\'s uplink at this server.'));
        return;
      }
      const open = (site) => (ev) => {
        if (ev.target.tagName !== 'A') location.hash = siteHref(site);
      };
      body.replaceChildren(table(
        [['Site'], ['Health'], ['Meters', 'num'], ['Readings', 'num'], ['Last seen'], ['Pending commands', 'num'],
          ['Unsent at site', 'num']],
        sites.map((x, i) => {
          const health = snaps[i] && snaps[i].health;
          const pending = x.pending_commands ? h('span', { class: 'badge pending count' }, fmtInt(x.pending_commands)) : '0';
          return h('tr', { class: 'clickable', onclick: open(x.site) },
            td(h('a', { href: siteHref(x.site) }, h('strong', {}, x.site))),
            td(badge(states[i])),
            td(fmtInt(x.meters), 'num'),
            td(fmtInt(x.readings), 'num'),
            td(ago(x.last_seen)),
            td(pending, 'num'),
            td(health ? fmtInt(health.store_depth) : '—', 'num'));
        }),
      ));
    }
    await load();
    return load;
  }

  /** #/site/{site} — health, compare chart, meters, commands, buses. */
  async function sitePage(ctx, root, site) {
    setCrumbs([{ label: 'Sites', href: '#/' }, { label: site }]);
    const { signal } = ctx;
    const [meters, snap, sites] = await Promise.all([
      api(`${siteApi(site)}/meters`, { signal }),
      api(`${siteApi(site)}/health`, { signal, allow404: true }),
      api('/api/v1/sites', { signal }),
    ]);
    const byName = (a, b) => a.meter.localeCompare(b.meter, undefined, { numeric: true });
    const meterList = (meters || []).slice().sort(byName);
    const colorOf = new Map(meterList.map((m, i) => [m.meter, PALETTE[i % PALETTE.length]]));
    let entry = (sites || []).find((x) => x.site === site) || { site, last_seen: null };

    const head = h('div', { class: 'page-head' });
    const sub = h('div', { class: 'page-sub' });
    const stats = h('div', { class: 'stats' });
    const metersBody = h('div', { class: 'card-body flush' });
    const busesBody = h('div', { class: 'card-body flush' });
    const commandsBody = h('div', { class: 'card-body flush' });
    const commandsAside = h('span', { class: 'aside' });

    function paintHealth(snapNow) {
      const health = snapNow && snapNow.health;
      head.replaceChildren(h('h1', {}, site), badge(siteState(entry, snapNow)));
      fill(sub,
        h('span', {}, 'Last batch ', ago(entry.last_seen)),
        health ? h('span', {}, `amid ${health.version || '?'}`) : null,
        health ? h('span', {}, `up ${fmtDuration((health.uptime_s || 0) * 1000)}`) : null,
        health ? h('span', { class: health.clock_trusted ? '' : 'warn-text' },
          health.clock_trusted ? 'clock trusted' : 'clock NOT trusted') : null,
        snapNow ? h('span', {}, 'health from ', ago(snapNow.received_at)) : h('span', {}, 'no health report yet'),
      );
      const oldest = health && health.oldest_unsent != null ? Date.now() - health.oldest_unsent : null;
      stats.replaceChildren(
        stat('Meters', fmtInt(meterList.length)),
        stat('Readings', fmtInt(entry.readings)),
        stat('Store depth', health ? fmtInt(health.store_depth) : '—', health ? 'unsent' : null),
        stat('Oldest unsent', oldest == null ? '—' : fmtDuration(oldest), null, oldest > STALE_MS ? 'warn' : ''),
        stat('Dropped', health ? fmtInt(health.dropped) : '—', null, health && health.dropped ? 'bad' : ''),
        stat('Pending commands', fmtInt(entry.pending_commands)),
      );

      // Meters: those with readings and those in the health report.
      const byMeter = new Map(((health && health.meters) || []).map((m) => [m.meter, m]));
      const names = [...new Set([...meterList.map((m) => m.meter), ...byMeter.keys()])];
      metersBody.replaceChildren(!names.length ? emptyState('No meters yet') : table(
        [['Meter'], ['State'], ['Bus'], ['Last good read'], ['Failures in a row', 'num'], ['Reads ok / failed', 'num'],
          ['Series', 'num'], ['Last error']],
        names.map((name) => {
          const mh = byMeter.get(name);
          const info = meterList.find((m) => m.meter === name);
          return h('tr', {},
            td(h('a', { href: meterHref(site, name) }, h('strong', {}, name))),
            td(badge(meterState(mh))),
            td(mh ? mh.bus : '—'),
            td(mh ? ago(mh.last_good) : '—'),
            td(mh ? fmtInt(mh.consecutive_failures) : '—', `num ${mh && mh.consecutive_failures ? 'bad-text' : ''}`),
            td(mh ? `${fmtInt(mh.reads_ok)} / ${fmtInt(mh.reads_failed)}` : '—', 'num'),
            td(info ? fmtInt(info.series.length) : '0', 'num'),
            td((mh && mh.last_error) || '', 'wrap muted'));
        }),
      ));

      // Link counters per bus; the error counters are highlighted when not zero.
      const buses = (health && health.buses) || [];
      const cols = [['requests', 'Requests'], ['replies', 'Replies'], ['timeouts', 'Timeouts'],
        ['checksum_errors', 'Checksum errors'], ['retries', 'Retries'], ['rejected', 'Rejected'], ['failures', 'Failures']];
      const errorCounter = (k) => k !== 'requests' && k !== 'replies';
      busesBody.replaceChildren(!buses.length ? h('p', { class: 'note' }, 'No bus counters reported.') : table(
        [['Bus'], ...cols.map(([, label]) => [label, 'num'])],
        buses.map((b) => h('tr', {}, td(h('strong', {}, b.bus)),
          cols.map(([k]) => td(fmtInt(b[k]), `num ${errorCounter(k) && b[k] ? 'warn-text' : ''}`)))),
      ));
    }

    async function loadHealth() {
      const [snapNow, sitesNow] = await Promise.all([
        api(`${siteApi(site)}/health`, { signal, allow404: true }),
        api('/api/v1/sites', { signal }),
      ]);
      if (signal.aborted) return;
      entry = (sitesNow || []).find((x) => x.site === site) || entry;
      paintHealth(snapNow);
    }

    async function loadCommands() {
      const list = (await api(`${siteApi(site)}/commands`, { signal })) || [];
      if (signal.aborted) return;
      const open = list.filter((c) => c.status === 'pending' || c.status === 'sent').length;
      commandsAside.textContent = open ? `${open} waiting for the site` : 'none waiting';
      const result = (r) => (r
        ? h('span', { class: r.ok ? 'ok-text' : 'bad-text' }, r.message || (r.ok ? 'ok' : 'failed'))
        : h('span', { class: 'muted' }, '—'));
      commandsBody.replaceChildren(!list.length
        ? h('p', { class: 'note' }, 'No commands yet. A command reaches the site with its next batch.')
        : table([['#', 'num'], ['Meter'], ['Action'], ['Status'], ['Queued'], ['Result']],
          list.slice(0, 30).map((c) => h('tr', {},
            td(c.id, 'num muted'),
            td(c.meter),
            td(actionText(c.action)),
            td(h('span', { class: `badge ${c.status}` }, c.status)),
            td(ago(c.created)),
            td(result(c.result), 'wrap')))));
    }

    // Queue-a-command form.
    const meterSel = h('select', { name: 'meter' }, meterList.map((m) => h('option', { value: m.meter }, m.meter)));
    const actionSel = h('select', { name: 'action' },
      h('option', { value: 'read_now' }, 'Read now'),
      h('option', { value: 'off' }, 'Disconnect (control off)'),
      h('option', { value: 'on' }, 'Reconnect (control on)'),
      h('option', { value: 'set_clock' }, 'Set meter clock'));
    const controlInput = h('input', { type: 'text', name: 'control', value: 'relay', size: 10, spellcheck: 'false' });
    const controlField = h('label', { class: 'field hidden' }, h('span', {}, 'Control'), controlInput);
    const formMsg = h('span', { class: 'muted' });
    const isControl = () => actionSel.value === 'on' || actionSel.value === 'off';
    actionSel.addEventListener('change', () => controlField.classList.toggle('hidden', !isControl()));
    const form = h('form', { class: 'form-row card-body' },
      h('label', { class: 'field' }, h('span', {}, 'Meter'), meterSel),
      h('label', { class: 'field' }, h('span', {}, 'Action'), actionSel),
      controlField,
      h('button', { class: 'primary', type: 'submit', disabled: !meterList.length }, 'Queue command'),
      formMsg);
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const action = isControl()
        ? { type: 'control', name: controlInput.value.trim() || 'relay', on: actionSel.value === 'on' }
        : { type: actionSel.value };
      const button = form.querySelector('button');
      button.disabled = true;
      formMsg.className = 'muted';
      formMsg.textContent = 'Queuing…';
      try {
        const c = await api(`${siteApi(site)}/commands`, { body: { meter: meterSel.value, action }, signal });
        formMsg.className = 'ok-text';
        formMsg.textContent = `Command #${c && c.id} queued: the site picks it up with its next batch.`;
        await Promise.all([loadCommands(), loadHealth()]);
      } catch (err) {
        if (err.name === 'AbortError') return;
        formMsg.className = 'bad-text';
        formMsg.textContent = `Not queued: ${err.message}`;
      } finally {
        button.disabled = false;
      }
    });

    // Compare chart: several meters' power (or energy per bucket) on one chart.
    const seriesOf = (m) => (prefs.mode === 'energy' ? energySeries(m) : powerSeries(m));
    const pickKey = `ami.compare.${site}`;
    let picked = null;
    try {
      picked = JSON.parse(localStorage.getItem(pickKey) || 'null');
    } catch (_) { /* nothing saved */ }
    if (!Array.isArray(picked)) {
      picked = meterList.filter((m) => powerSeries(m) || energySeries(m)).slice(0, 6).map((m) => m.meter);
    }
    const selected = new Set(picked);
    const picks = h('div', { class: 'picks' });
    const compare = chartSlot(ctx);
    const legendBox = h('div');
    const compareAside = h('span', { class: 'aside' });

    function paintPicks() {
      picks.replaceChildren(...meterList.map((m) => {
        const usable = !!seriesOf(m);
        const box = h('input', { type: 'checkbox', checked: usable && selected.has(m.meter), disabled: !usable });
        box.addEventListener('change', () => {
          if (box.checked) selected.add(m.meter);
          else selected.delete(m.meter);
          try {
            localStorage.setItem(pickKey, JSON.stringify([...selected]));
          } catch (_) { /* not persisted */ }
          paintPicks();
          loadCompare();
        });
        const swatch = h('span', { class: 'swatch' });
        swatch.style.background = colorOf.get(m.meter);
        return h('label', {
          class: `pick ${usable ? '' : 'disabled'} ${box.checked ? '' : 'off'}`,
          title: usable ? null : `No ${prefs.mode} series`,
        }, box, swatch, m.meter);
      }));
    }

    function loadCompare() {
      const range = RANGES[prefs.range];
      const win = windowFor(prefs.range);
      const energy = prefs.mode === 'energy';
      const res = energy ? range.compare || range.energy : range.power;
      const chosen = meterList.filter((m) => selected.has(m.meter) && seriesOf(m));
      compareAside.textContent = energy ? `energy per ${BUCKET_NAMES[res]}`
        : `average power${res === 'raw' ? '' : ` per ${BUCKET_NAMES[res]}`}`;
      return compare.show(async () => {
        // Counters in different units (Wh, m³) cannot share an axis: keep those in the first one's unit.
        const unitOf = (m) => (energy ? counterScale(energySeries(m).unit).unit : 'W');
        const same = chosen.filter((m) => unitOf(m) === unitOf(chosen[0]));
        const data = await Promise.all(same.map((m) => (energy
          ? energyPoints(site, m.meter, energySeries(m), win, res, signal)
          : powerPoints(site, m.meter, powerSeries(m), win, res, signal))));
        const conv = energy ? energyConv(prefs.unit, same.length ? unitOf(same[0]) : 'Wh') : powerConv(prefs.unit);
        const fmt = conv.money ? fmtMoney : (v) => fmtValue(v, conv.unit);
        const series = same.map((m, i) => ({ label: m.meter, color: colorOf.get(m.meter), points: convert(data[i], conv.f) }));
        legendBox.replaceChildren(legend(series.filter((sr) => sr.points.length).map((sr) => {
          const total = sr.points.reduce((a, p) => a + p.v, 0);
          const value = energy ? `${fmt(total)} total` : `${fmt(total / sr.points.length)} avg`;
          return { label: sr.label, color: sr.color, value };
        })));
        return {
          type: energy ? 'bar' : 'line', series, from: win.from, to: win.to, res, unit: conv.unit, fmt, height: 300,
          title: `Compare meters of ${site}`,
          empty: chosen.length ? ['No data', 'None of the selected meters has readings in this range.']
            : ['No meter selected', 'Tick the meters to compare.'],
        };
      });
    }

    const modeButtons = segmented([['power', 'Power'], ['energy', 'Energy']], prefs.mode, (v) => {
      prefs.mode = v;
      savePrefs();
      paintPicks();
      loadCompare();
    }, 'Quantity');

    root.replaceChildren(
      head, sub, stats,
      card('Compare meters', [compareAside,
        h('div', { class: 'toolbar' }, modeButtons, rangeButtons(loadCompare), unitButtons(loadCompare))],
      picks, compare.el, legendBox),
      card('Meters', null, metersBody),
      card('Commands', commandsAside, form, commandsBody),
      card('Buses', null, busesBody),
    );
    paintHealth(snap);
    paintPicks();
    await Promise.all([loadCompare(), loadCommands()]);
    return () => Promise.all([loadHealth(), loadCompare(), loadCommands()]);
  }

  function meterState(mh) {
    if (!mh) return { cls: '', text: 'unknown', why: 'Not in the site\'s health report' };
    if (mh.consecutive_failures > 0) return { cls: 'errors', text: 'failing', why: mh.last_error || '' };
    return { cls: 'ok', text: 'ok', why: 'Last poll succeeded' };
  }

  /** #/site/{site}/meter/{meter} — power line, energy bars, latest values. */
  async function meterPage(ctx, root, site, meter) {
    setCrumbs([{ label: 'Sites', href: '#/' }, { label: site, href: siteHref(site) }, { label: meter }]);
    const { signal } = ctx;
    const [meters, snap] = await Promise.all([
      api(`${siteApi(site)}/meters`, { signal }),
      api(`${siteApi(site)}/health`, { signal, allow404: true }),
    ]);
    const info = (meters || []).find((m) => m.meter === meter);
    const mh = ((snap && snap.health && snap.health.meters) || []).find((m) => m.meter === meter);
    const title = [h('h1', {}, meter), mh ? badge(meterState(mh)) : null];
    const sub = h('div', { class: 'page-sub' },
      h('span', {}, 'Site ', h('a', { href: siteHref(site) }, site)),
      mh ? h('span', {}, `bus ${mh.bus}`) : null,
      mh ? h('span', {}, 'last good read ', ago(mh.last_good)) : null,
      mh && mh.consecutive_failures
        ? h('span', { class: 'bad-text' }, `${mh.consecutive_failures} failures in a row: ${mh.last_error || ''}`) : null);
    if (!info) {
      root.replaceChildren(h('div', { class: 'page-head' }, title), sub, h('section', { class: 'card' },
        emptyState('No readings from this meter', 'The central store has no series for it yet.')));
      return null;
    }

    const pSeries = powerSeries(info);
    const eSeries = energySeries(info);
    const eUnit = eSeries ? counterScale(eSeries.unit).unit : 'Wh';
    const power = chartSlot(ctx);
    const energy = chartSlot(ctx);
    const powerSummary = h('div', { class: 'summary' });
    const energySummary = h('div', { class: 'summary' });
    const latestBody = h('div', { class: 'card-body flush' });
    const seriesNote = (sr) => (sr ? h('span', { class: 'aside mono' }, `${sr.name} · ${sr.obis}`) : null);
    const powerCard = card('Power', [seriesNote(pSeries), h('div', { class: 'toolbar' }, powerSummary)], power.el);
    const energyCard = card('Energy', [seriesNote(eSeries), h('div', { class: 'toolbar' }, energySummary)], energy.el);
    const summary = (el, pairs) => el.replaceChildren(...pairs.map(([k, v]) => h('span', {}, `${k} `, h('b', {}, v))));

    function loadCharts() {
      const range = RANGES[prefs.range];
      const win = windowFor(prefs.range);
      const pConv = powerConv(prefs.unit);
      const eConv = energyConv(prefs.unit, eUnit);
      energyCard.querySelector('h2').textContent = `${eConv.money ? 'Cost' : 'Energy'} per ${BUCKET_NAMES[range.energy]}`;
      return Promise.all([
        power.show(async () => {
          const pts = pSeries ? convert(await powerPoints(site, meter, pSeries, win, range.power, signal), pConv.f) : [];
          const fmt = (v) => fmtValue(v, pConv.unit);
          if (pts.length) {
            const vals = pts.map((p) => p.v);
            const avg = vals.reduce((a, v) => a + v, 0) / vals.length;
            summary(powerSummary, [['avg', fmt(avg)], ['min', fmt(Math.min(...vals))], ['max', fmt(Math.max(...vals))]]);
          } else powerSummary.replaceChildren();
          return {
            type: 'line', area: true, series: [{ label: 'Power', color: POWER_COLOR, points: pts }],
            from: win.from, to: win.to, res: range.power, unit: pConv.unit, fmt, title: `Power of ${meter}`,
            empty: pSeries ? ['No data', 'No power readings in this range.']
              : ['No power series', 'This meter reports no active power.'],
          };
        }),
        energy.show(async () => {
          const pts = eSeries ? await energyPoints(site, meter, eSeries, win, range.energy, signal) : [];
          const total = pts.reduce((a, p) => a + p.v, 0);
          const fmt = eConv.money ? fmtMoney : (v) => fmtValue(v, eConv.unit);
          if (pts.length) {
            const cost = eUnit === 'Wh' ? [['cost', fmtMoney((total / 1000) * config.tariff)]] : [];
            summary(energySummary, [['total', fmtValue(total, eUnit)], ...cost]);
          } else energySummary.replaceChildren();
          return {
            type: 'bar', series: [{ label: eConv.money ? 'Cost' : 'Energy', color: ENERGY_COLOR, points: convert(pts, eConv.f) }],
            from: win.from, to: win.to, res: range.energy, unit: eConv.unit, fmt, title: `Energy of ${meter}`,
            empty: eSeries ? ['No data', 'No counter readings in this range.']
              : ['No energy counter', 'This meter reports no counter series.'],
          };
        }),
      ]);
    }

    /** Every series of the meter with its newest value (read from the last hour before its newest reading). */
    async function loadLatest() {
      const list = (info.series || []).slice().sort((a, b) => a.obis.localeCompare(b.obis, undefined, { numeric: true }));
      const newest = Math.max(...list.map((x) => Date.parse(x.last)).filter(Number.isFinite));
      const last = new Map();
      if (Number.isFinite(newest)) {
        const q = new URLSearchParams({ from: iso(newest - HOUR), to: iso(newest + 1000), resolution: 'raw', format: 'json' });
        const rows = (await api(`${siteApi(site)}/meters/${enc(meter)}/readings?${q}`, { signal })) || [];
        for (const r of rows) {
          const prev = last.get(r.obis);
          if (!prev || Date.parse(r.ts) >= Date.parse(prev.ts)) last.set(r.obis, r);
        }
      }
      if (signal.aborted) return;
      const show = (v) => (typeof v === 'number' ? v.toLocaleString(undefined, { maximumFractionDigits: 3 }) : String(v));
      latestBody.replaceChildren(table(
        [['Value'], ['OBIS'], ['Latest', 'num'], ['Unit'], ['Kind'], ['Read'], ['Readings', 'num']],
        list.map((x) => {
          const r = last.get(x.obis);
          const flagged = r && r.quality && r.quality !== 'ok';
          return h('tr', {},
            td(x.name),
            td(x.obis, 'mono muted'),
            td(h('strong', {}, r ? show(r.value) : '—'), `num ${flagged ? 'warn-text' : ''}`, flagged ? r.quality : null),
            td(x.unit),
            td(x.kind, 'muted'),
            td(ago(r ? r.ts : x.last)),
            td(fmtInt(x.count), 'num'));
        }),
      ));
    }

    root.replaceChildren(
      h('div', { class: 'page-head' }, title, h('div', { class: 'toolbar' }, rangeButtons(loadCharts), unitButtons(loadCharts))),
      sub,
      powerCard,
      energyCard,
      card('Latest values', null, latestBody),
    );
    await Promise.all([loadCharts(), loadLatest()]);
    return () => Promise.all([loadCharts(), loadLatest()]);
  }

  // ---------------------------------------------------------------- router

  let current = null;

  function stampUpdated() {
    const el = $('#updated');
    if (el) el.textContent = `Updated ${F.hm.format(Date.now())}`;
  }

  function showFailure(root, err) {
    if (err.name === 'AbortError' || err.status === 401) return;
    root.replaceChildren(h('section', { class: 'card' }, err.status === 404
      ? emptyState('Not found', 'There is no such site or meter.')
      : emptyState('Could not load this page', err.message)));
  }

  function route() {
    if (current) current.ctrl.abort();
    const ctrl = new AbortController();
    const ctx = { ctrl, signal: ctrl.signal, redraws: [], refresh: null, busy: true };
    current = ctx;
    const root = $('#app');
    root.replaceChildren(h('div', { class: 'loading' }, 'Loading…'));
    window.scrollTo(0, 0);
    const parts = location.hash.replace(/^#\/?/, '').split('?')[0].split('/').filter(Boolean).map((p) => {
      try {
        return decodeURIComponent(p);
      } catch (_) {
        return p;
      }
    });
    let page;
    if (parts[0] === 'site' && parts[1] && parts[2] === 'meter' && parts[3]) page = meterPage(ctx, root, parts[1], parts[3]);
    else if (parts[0] === 'site' && parts[1]) page = sitePage(ctx, root, parts[1]);
    else page = sitesPage(ctx, root);
    page.then((refresh) => {
      ctx.refresh = refresh;
      if (!ctx.signal.aborted) stampUpdated();
    }, (err) => {
      if (!ctx.signal.aborted) showFailure(root, err);
    }).finally(() => { ctx.busy = false; });
  }

  function startApp() {
    $('#logout').addEventListener('click', (ev) => {
      ev.preventDefault();
      fetch('/logout', { credentials: 'same-origin' }).catch(() => null).finally(() => location.replace('/'));
    });
    window.addEventListener('hashchange', route);
    let resizeTimer = 0;
    window.addEventListener('resize', () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(() => current && current.redraws.forEach((f) => f()), 150);
    });
    setInterval(() => {
      const ctx = current;
      if (!ctx || ctx.busy || !ctx.refresh || document.hidden) return;
      ctx.busy = true;
      Promise.resolve(ctx.refresh()).then(() => {
        if (!ctx.signal.aborted) stampUpdated();
      }, () => null).finally(() => { ctx.busy = false; });
    }, REFRESH_MS);
    api('/api/v1/config').then((c) => {
      if (c && typeof c.tariff === 'number' && typeof c.currency === 'string') config = c;
    }, () => null).finally(route);
  }

  // ---------------------------------------------------------------- login page

  function startLogin() {
    const form = $('#login-form');
    const input = $('#token');
    const error = $('#login-error');
    const button = form.querySelector('button');
    const say = (msg) => {
      error.textContent = msg;
      error.classList.toggle('hidden', !msg);
    };

    async function signIn(token) {
      button.disabled = true;
      say('');
      try {
        await fetch('/login', {
          method: 'POST',
          credentials: 'same-origin',
          headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
          body: new URLSearchParams({ token }).toString(),
        });
        // Whatever /login answers (a redirect or a status), the session cookie is the proof.
        const check = await fetch('/api/v1/config', { credentials: 'same-origin' });
        if (check.ok) {
          location.reload(); // the server now serves the dashboard for this URL (the route is kept)
          return;
        }
        say(check.status === 401 || check.status === 403
          ? 'This token was not accepted. Sign in with an operator token.'
          : `Sign-in failed (HTTP ${check.status}).`);
      } catch (_) {
        say('The server cannot be reached.');
      }
      button.disabled = false;
    }

    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const token = input.value.trim();
      if (token) signIn(token);
    });

    // Unattended sign-in for browser tests and wall displays: /#autologin=<token>&next=<route>.
    // A URL fragment never reaches the server, so the token stays out of access logs; it is removed
    // from the address bar and the history before anything else happens.
    const m = /^#autologin=([^&]*)(?:&next=(.*))?$/.exec(location.hash);
    if (m) {
      let token = '';
      let next = '/';
      try {
        token = decodeURIComponent(m[1]);
        next = m[2] ? decodeURIComponent(m[2]) : '/';
      } catch (_) { /* malformed: sign in with what we have */ }
      history.replaceState(null, '', `${location.pathname}${location.search}#${next.startsWith('/') ? next : `/${next}`}`);
      if (token) signIn(token);
    }
  }

  const start = () => (document.body.dataset.page === 'login' ? startLogin() : startApp());
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
