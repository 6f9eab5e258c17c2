// SVG charts written for mlwatch's UI: a time-series line chart with
// markers and reference lines, and an overlaid distribution chart
// (reference vs current). No dependencies.

const NS = 'http://www.w3.org/2000/svg';
export const COLORS = ['#2563eb', '#dc2626', '#16a34a', '#9333ea', '#ea580c', '#0891b2', '#854d0e'];

function el(name, attrs = {}, text) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function fmt(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return '–';
  const a = Math.abs(v);
  if (a !== 0 && (a < 0.001 || a >= 1e6)) return v.toExponential(2);
  if (a >= 100) return v.toFixed(0);
  if (a >= 1) return v.toFixed(2);
  return v.toFixed(3);
}
export { fmt };

function timeLabel(ms, spanMs) {
  const d = new Date(ms);
  if (spanMs > 2 * 86400e3) return `${d.getUTCMonth() + 1}/${d.getUTCDate()} ${String(d.getUTCHours()).padStart(2, '0')}h`;
  return d.toISOString().slice(11, spanMs > 600e3 ? 16 : 19);
}

/**
 * lineChart({title, series: [{name, t: [ms], v: [num|null], dash}], markers: [{t, label}],
 *            hlines: [{v, label}], unit})
 */
export function lineChart({ title, series, markers = [], hlines = [], unit = '', width = 520, height = 200 }) {
  const pad = { l: 52, r: 10, t: 22, b: 34 };
  const svg = el('svg', { viewBox: `0 0 ${width} ${height}`, class: 'chart line', role: 'img', 'aria-label': title });
  svg.appendChild(el('text', { x: pad.l, y: 14, class: 'title' }, title + (unit ? ` (${unit})` : '')));
  const ts = series.flatMap((s) => s.t);
  const vs = series.flatMap((s) => s.v).filter((v) => v !== null && v !== undefined).concat(hlines.map((h) => h.v));
  if (ts.length === 0 || vs.length === 0) {
    svg.appendChild(el('text', { x: width / 2, y: height / 2, 'text-anchor': 'middle', class: 'empty' }, 'no data yet'));
    return svg;
  }
  let t0 = Math.min(...ts, ...markers.map((m) => m.t));
  let t1 = Math.max(...ts);
  if (t1 === t0) t1 = t0 + 60e3;
  let v0 = Math.min(0, ...vs);
  let v1 = Math.max(...vs);
  if (v1 === v0) v1 = v0 + 1;
  v1 += (v1 - v0) * 0.05;
  const x = (t) => pad.l + ((t - t0) / (t1 - t0)) * (width - pad.l - pad.r);
  const y = (v) => height - pad.b - ((v - v0) / (v1 - v0)) * (height - pad.t - pad.b);
  for (let i = 0; i <= 4; i++) {
    const v = v0 + ((v1 - v0) * i) / 4;
    svg.appendChild(el('line', { x1: pad.l, x2: width - pad.r, y1: y(v), y2: y(v), class: 'grid' }));
    svg.appendChild(el('text', { x: pad.l - 4, y: y(v) + 4, 'text-anchor': 'end', class: 'axis' }, fmt(v)));
  }
  for (let i = 0; i <= 3; i++) {
    const t = t0 + ((t1 - t0) * i) / 3;
    svg.appendChild(el('text', { x: x(t), y: height - pad.b + 14, 'text-anchor': 'middle', class: 'axis' }, timeLabel(t, t1 - t0)));
  }
  for (const h of hlines) {
    svg.appendChild(el('line', { x1: pad.l, x2: width - pad.r, y1: y(h.v), y2: y(h.v), class: 'hline' }));
    svg.appendChild(el('text', { x: width - pad.r - 2, y: y(h.v) - 3, 'text-anchor': 'end', class: 'hlabel' }, h.label));
  }
  for (const m of markers) {
    svg.appendChild(el('line', { x1: x(m.t), x2: x(m.t), y1: pad.t, y2: height - pad.b, class: 'marker', 'data-marker': m.label }));
    svg.appendChild(el('text', { x: x(m.t) + 3, y: pad.t + 10, class: 'mlabel' }, m.label));
  }
  series.forEach((s, i) => {
    const color = s.color || COLORS[i % COLORS.length];
    let d = '';
    let pen = false;
    s.t.forEach((t, j) => {
      const v = s.v[j];
      if (v === null || v === undefined) {
        pen = false;
        return;
      }
      d += `${pen ? 'L' : 'M'}${x(t).toFixed(1)},${y(v).toFixed(1)}`;
      pen = true;
    });
    const path = el('path', { d, stroke: color, fill: 'none', 'stroke-width': 1.6, 'data-series': s.name });
    if (s.dash) path.setAttribute('stroke-dasharray', '4 3');
    svg.appendChild(path);
    // Lone points (a gap on both sides) still show.
    s.t.forEach((t, j) => {
      const v = s.v[j];
      if (v === null || v === undefined) return;
      const lone = (j === 0 || s.v[j - 1] === null) && (j === s.t.length - 1 || s.v[j + 1] === null);
      if (lone) svg.appendChild(el('circle', { cx: x(t), cy: y(v), r: 2, fill: color }));
    });
    const lx = pad.l + 6 + (i % 4) * 118;
    const ly = height - 6;
    svg.appendChild(el('rect', { x: lx, y: ly - 8, width: 10, height: 3, fill: color }));
    svg.appendChild(el('text', { x: lx + 14, y: ly - 4, class: 'legend' }, s.name));
  });
  return svg;
}

/**
 * distributionChart({title, labels: [str], reference: [share], current: [share]}):
 * reference and current shares on the same bins, overlaid.
 */
export function distributionChart({ title, labels, reference, current, width = 520, height = 210 }) {
  const pad = { l: 44, r: 10, t: 22, b: 42 };
  const svg = el('svg', { viewBox: `0 0 ${width} ${height}`, class: 'chart dist', role: 'img', 'aria-label': title });
  svg.appendChild(el('text', { x: pad.l, y: 14, class: 'title' }, title));
  const n = Math.max(reference.length, current.length);
  const norm = (a) => {
    const s = a.reduce((x, y) => x + y, 0);
    return a.map((v) => (s > 0 ? v / s : 0));
  };
  const ref = norm(reference);
  const cur = norm(current);
  const top = Math.max(...ref, ...cur, 0.01) * 1.1;
  const bw = (width - pad.l - pad.r) / Math.max(n, 1);
  const y = (v) => height - pad.b - (v / top) * (height - pad.t - pad.b);
  for (let i = 0; i <= 3; i++) {
    const v = (top * i) / 3;
    svg.appendChild(el('line', { x1: pad.l, x2: width - pad.r, y1: y(v), y2: y(v), class: 'grid' }));
    svg.appendChild(el('text', { x: pad.l - 4, y: y(v) + 4, 'text-anchor': 'end', class: 'axis' }, `${(v * 100).toFixed(0)}%`));
  }
  const bars = (shares, name, cls, inset) => {
    const g = el('g', { 'data-series': name, class: cls });
    shares.forEach((v, i) => {
      const r = el('rect', { x: pad.l + i * bw + inset, y: y(v), width: Math.max(bw - 2 * inset, 1), height: Math.max(y(0) - y(v), 0) });
      r.appendChild(el('title', {}, `${labels[i] ?? i}: ${(v * 100).toFixed(1)}%`));
      g.appendChild(r);
    });
    svg.appendChild(g);
  };
  bars(ref, 'reference', 'ref', 0.5);
  bars(cur, 'current', 'cur', bw * 0.22);
  const step = Math.ceil(n / 8);
  labels.forEach((l, i) => {
    if (i % step !== 0) return;
    svg.appendChild(el('text', { x: pad.l + i * bw + bw / 2, y: height - pad.b + 13, 'text-anchor': 'middle', class: 'axis' }, l));
  });
  svg.appendChild(el('rect', { x: pad.l + 4, y: height - 14, width: 10, height: 8, class: 'ref' }));
  svg.appendChild(el('text', { x: pad.l + 18, y: height - 7, class: 'legend' }, 'reference'));
  svg.appendChild(el('rect', { x: pad.l + 94, y: height - 14, width: 10, height: 8, class: 'cur' }));
  svg.appendChild(el('text', { x: pad.l + 108, y: height - 7, class: 'legend' }, 'current window'));
  return svg;
}

/** Bin labels of a drift distribution (numeric edges or categories). */
export function binLabels(d) {
  if (d.categories) return d.categories;
  const e = d.edges || [];
  const n = Math.max(d.reference.length, d.current.length);
  const out = [];
  for (let i = 0; i < n; i++) {
    if (i === 0) out.push(`<${fmt(e[0])}`);
    else if (i >= e.length) out.push(`≥${fmt(e[e.length - 1])}`);
    else out.push(fmt(e[i - 1]));
  }
  return out;
}
