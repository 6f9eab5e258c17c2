// mlwatch web UI: models overview, model page, drift page, incident
// timeline. Reads the analyzer's JSON API (and, through it, the alerter's
// and remediator's read-only APIs). Routes live in the location hash.
import { lineChart, distributionChart, binLabels, fmt, COLORS } from './charts.js';

const main = document.getElementById('main');
const TOKEN_KEY = 'mlwatch.token';

// ---------- fetching, with the token asked once per tab ----------

function askToken() {
  return new Promise((resolve) => {
    const dlg = document.getElementById('login');
    const form = document.getElementById('login-form');
    form.onsubmit = () => {
      sessionStorage.setItem(TOKEN_KEY, document.getElementById('token').value.trim());
      resolve();
    };
    dlg.showModal();
  });
}

async function api(path, { allow404 = false } = {}) {
  for (let attempt = 0; attempt < 3; attempt++) {
    const token = sessionStorage.getItem(TOKEN_KEY);
    const headers = token ? { Authorization: `Bearer ${token}` } : {};
    const r = await fetch(path, { headers });
    if (r.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      await askToken();
      continue;
    }
    document.getElementById('logout').hidden = !token;
    if (r.status === 404 && allow404) return null;
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(`${path}: ${r.status} ${body.detail || body.title || ''}`);
    return body;
  }
  throw new Error('no valid token');
}

document.getElementById('logout').onclick = () => {
  sessionStorage.removeItem(TOKEN_KEY);
  location.reload();
};

// ---------- small DOM helpers ----------

function h(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) e[k] = v;
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

const enc = encodeURIComponent;
const pct = (v) => (v === null || v === undefined ? '–' : `${(v * 100).toFixed(1)}%`);
const when = (ms) => (ms ? new Date(ms).toISOString().replace('T', ' ').slice(0, 23) + 'Z' : '–');

// Replaces the page's content (null entries are skipped).
function show(...nodes) {
  main.replaceChildren(...nodes.filter((n) => n !== null && n !== undefined));
}

function setStatus(text) {
  document.getElementById('status').textContent = text;
}

// ---------- overview ----------

const overviewState = { sort: 'health', dir: -1, filter: '' };

async function modelRow(model, versions, active) {
  const [lat, acc, drift] = await Promise.all([
    api(`/v1/models/${enc(model)}/latency?window=1m`, { allow404: true })
      .catch(() => api(`/v1/models/${enc(model)}/latency?window=5m`, { allow404: true }))
      .catch(() => null),
    api(`/v1/models/${enc(model)}/accuracy`, { allow404: true }).catch(() => null),
    api(`/v1/models/${enc(model)}/drift`, { allow404: true }).catch(() => null),
  ]);
  return versions.map((v) => {
    const l = (lat?.versions || []).find((r) => r.model_version === v.model_version && r.segment === v.segment) || {};
    const a = (acc?.series || []).find((r) => r.model_version === v.model_version && r.segment === v.segment) || {};
    const dv = (drift?.versions || []).find((d) => d.model_version === v.model_version);
    const drifting = (dv?.report?.features || []).filter((f) => f.decision?.firing).map((f) => f.name);
    const alerts = active.filter(
      (x) => x.labels.model === model && (!x.labels.model_version || x.labels.model_version === v.model_version),
    );
    return {
      model,
      version: v.model_version,
      segment: v.segment,
      events: v.events,
      p50: l.p50_ms ?? null,
      p99: l.p99_ms ?? null,
      rps: l.throughput_rps ?? null,
      errors: l.error_rate ?? null,
      accuracy: a.binary?.accuracy ?? a.multiclass?.accuracy ?? null,
      coverage: a.label_coverage ?? null,
      drifting,
      alerts: [...new Set(alerts.map((x) => x.type))],
      health: alerts.length ? 1 : 0,
    };
  });
}

async function overview() {
  setStatus('');
  const [{ models }, alerts] = await Promise.all([api('/v1/models'), api('/v1/alerts?limit=1')]);
  const byModel = new Map();
  for (const s of models) {
    if (!byModel.has(s.model)) byModel.set(s.model, []);
    byModel.get(s.model).push(s);
  }
  const rows = (await Promise.all([...byModel].map(([m, vs]) => modelRow(m, vs, alerts.active)))).flat();
  const columns = [
    ['health', 'Health'], ['model', 'Model'], ['version', 'Version'], ['segment', 'Segment'],
    ['p50', 'p50 ms'], ['p99', 'p99 ms'], ['rps', 'req/s'], ['errors', 'Errors'],
    ['accuracy', 'Accuracy'], ['coverage', 'Label coverage'], ['drifting', 'Drifting features'], ['alerts', 'Active alerts'],
  ];
  const filter = h('input', { type: 'search', placeholder: 'Filter by model, version, alert…', value: overviewState.filter, id: 'filter' });
  const tbody = h('tbody');
  const thead = h('tr');
  const render = () => {
    const f = overviewState.filter.toLowerCase();
    const shown = rows
      .filter((r) => !f || [r.model, r.version, r.segment, ...r.alerts, ...r.drifting].join(' ').toLowerCase().includes(f))
      .sort((a, b) => {
        const k = overviewState.sort;
        const x = Array.isArray(a[k]) ? a[k].length : a[k];
        const y = Array.isArray(b[k]) ? b[k].length : b[k];
        if (x === y) return a.model.localeCompare(b.model) || a.version.localeCompare(b.version);
        if (x === null) return 1;
        if (y === null) return -1;
        return (x < y ? -1 : 1) * overviewState.dir;
      });
    thead.replaceChildren(
      ...columns.map(([k, label]) => {
        const cls = `sortable${overviewState.sort === k ? (overviewState.dir > 0 ? ' asc' : ' desc') : ''}`;
        return h('th', {
          class: cls,
          dataset: { key: k },
          onclick: () => {
            overviewState.dir = overviewState.sort === k ? -overviewState.dir : 1;
            overviewState.sort = k;
            render();
          },
        }, label);
      }),
    );
    tbody.replaceChildren(
      ...shown.map((r) =>
        h('tr', { dataset: { model: r.model, version: r.version, alerts: r.alerts.join(',') } },
          h('td', {}, h('span', { class: `badge ${r.health ? 'alert' : r.drifting.length ? 'warn' : 'ok'}` }, r.health ? 'alert' : r.drifting.length ? 'drift' : 'ok')),
          h('td', {}, h('a', { href: `#/model/${enc(r.model)}`, class: 'model-link' }, r.model)),
          h('td', {}, r.version),
          h('td', {}, r.segment || 'all'),
          h('td', { class: 'num' }, fmt(r.p50)),
          h('td', { class: 'num' }, fmt(r.p99)),
          h('td', { class: 'num' }, fmt(r.rps)),
          h('td', { class: 'num' }, pct(r.errors)),
          h('td', { class: 'num' }, r.accuracy === null ? '–' : fmt(r.accuracy)),
          h('td', { class: 'num' }, pct(r.coverage)),
          h('td', {}, r.drifting.length ? h('a', { href: `#/drift/${enc(r.model)}` }, r.drifting.join(', ')) : '–'),
          h('td', {}, r.alerts.length
            ? [h('span', { class: 'badge alert' }, r.alerts.join(', ')), ' ', h('a', { href: `#/incidents/${enc(r.model)}` }, 'timeline')]
            : '–'),
        ),
      ),
    );
  };
  filter.oninput = () => {
    overviewState.filter = filter.value;
    render();
  };
  render();
  show(
    h('h1', {}, 'Models'),
    h('div', { class: 'toolbar' }, filter, h('span', { class: 'muted' }, `${rows.length} series · ${alerts.active.length} active alerts · click a header to sort`)),
    h('table', { id: 'models' }, h('thead', {}, thead), tbody),
  );
  return 5000;
}

// ---------- model page ----------

const modelState = { range: '1h', a: null, b: null };

function col(series, name) {
  return series.columns[name] || series.t.map(() => null);
}

function versionCharts(s, markers) {
  const t = s.t;
  const charts = [
    lineChart({ title: 'Latency', unit: 'ms', markers, series: ['p50_ms', 'p90_ms', 'p99_ms'].map((c) => ({ name: c.replace('_ms', ''), t, v: col(s, c) })) }),
    lineChart({ title: 'Throughput', unit: 'req/s', markers, series: [{ name: 'throughput', t, v: col(s, 'throughput_rps') }] }),
    lineChart({ title: 'Error and slow-request rate', markers, series: [
      { name: 'errors', t, v: col(s, 'error_rate') }, { name: 'slow', t, v: col(s, 'slow_request_rate') }] }),
  ];
  if (s.columns.accuracy) {
    const base = col(s, 'accuracy_baseline').filter((v) => v !== null).pop();
    const line = col(s, 'accuracy_alert_below').filter((v) => v !== null).pop();
    const hlines = [];
    if (base !== undefined) hlines.push({ v: base, label: `baseline ${fmt(base)}` });
    if (line !== undefined) hlines.push({ v: line, label: `alert below ${fmt(line)}` });
    charts.push(lineChart({ title: 'Accuracy', markers, hlines, series: [
      { name: 'accuracy', t, v: col(s, 'accuracy') }, { name: 'estimated', t, v: col(s, 'accuracy_estimated'), dash: true },
      { name: 'label coverage', t, v: col(s, 'label_coverage'), dash: true }] }));
  }
  const preds = Object.keys(s.columns).filter((c) => c.startsWith('prediction.') && c.endsWith('.mean'));
  if (preds.length) {
    charts.push(lineChart({ title: 'Prediction distribution: mean and PSI', markers,
      series: preds.flatMap((c) => [{ name: c.slice(11), t, v: col(s, c) }, { name: c.slice(11).replace('.mean', '.psi'), t, v: col(s, c.replace('.mean', '.psi')), dash: true }]) }));
  }
  return charts;
}

async function modelPage(model) {
  const hist = await api(`/v1/models/${enc(model)}/history?range=${modelState.range}`, { allow404: true });
  const rangeButtons = ['1h', '1d', '1w'].map((r) =>
    h('button', { class: r === modelState.range ? 'on' : '', dataset: { range: r }, onclick: () => { modelState.range = r; route(); } }, r));
  const head = [
    h('h1', {}, `Model ${model}`),
    h('div', { class: 'toolbar' }, 'Range:', ...rangeButtons, h('a', { href: `#/drift/${enc(model)}` }, 'Drift'), h('a', { href: `#/incidents/${enc(model)}` }, 'Incidents')),
  ];
  if (!hist) {
    show(...head, h('p', { class: 'muted' }, 'No history yet for this model.'));
    return 10000;
  }
  const series = hist.series.filter((s) => s.segment === '' || s.segment === undefined);
  const markers = hist.versions
    .filter((v) => v.segment === '')
    .map((v) => ({ t: v.first_event_ms, label: v.model_version }))
    .filter((m) => hist.series.some((s) => s.t.length && s.t[0] <= m.t));
  const names = series.map((s) => s.model_version);
  if (!names.includes(modelState.a)) modelState.a = names[names.length - 1];
  if (!names.includes(modelState.b)) modelState.b = names.length > 1 ? names[names.length - 2] : null;
  const pick = (key) =>
    h('select', { dataset: { compare: key }, onchange: (e) => { modelState[key] = e.target.value || null; route(); } },
      h('option', { value: '' }, '—'),
      ...names.map((n) => h('option', { value: n, selected: modelState[key] === n }, n)));
  // All versions over time, one line each.
  const overlay = h('div', { class: 'grid2' },
    lineChart({ title: 'p99 latency by version', unit: 'ms', markers, series: series.map((s) => ({ name: s.model_version, t: s.t, v: col(s, 'p99_ms') })) }),
    lineChart({ title: 'Throughput by version', unit: 'req/s', markers, series: series.map((s) => ({ name: s.model_version, t: s.t, v: col(s, 'throughput_rps') })) }),
    series.some((s) => s.columns.accuracy)
      ? lineChart({ title: 'Accuracy by version', markers, series: series.map((s) => ({ name: s.model_version, t: s.t, v: col(s, 'accuracy') })) })
      : null,
  );
  const side = (name) => {
    const s = series.find((x) => x.model_version === name);
    if (!s) return h('div', { class: 'muted' }, 'choose a version');
    return h('div', { dataset: { version: name } }, h('h3', {}, `${name} · ${s.resolution} (${s.step_secs} s steps)`), ...versionCharts(s, markers));
  };
  show(
    ...head,
    overlay,
    h('h2', {}, 'Side by side'),
    h('div', { class: 'toolbar' }, 'Version', pick('a'), 'beside', pick('b')),
    h('div', { class: 'cols' }, side(modelState.a), side(modelState.b)),
  );
  return 10000;
}

// ---------- drift page ----------

async function driftPage(model) {
  const [drift, hist] = await Promise.all([
    api(`/v1/models/${enc(model)}/drift`, { allow404: true }),
    api(`/v1/models/${enc(model)}/history?range=1h`, { allow404: true }),
  ]);
  const head = [h('h1', {}, `Drift: ${model}`), h('div', { class: 'toolbar' }, h('a', { href: `#/model/${enc(model)}` }, 'Model'), h('a', { href: `#/incidents/${enc(model)}` }, 'Incidents'))];
  if (!drift || !drift.report) {
    show(...head, h('p', { class: 'muted' }, drift?.status || drift?.error || 'No drift monitor for this model yet (no active profile or no events).'));
    return 5000;
  }
  const r = drift.report;
  const hs = hist?.series.find((s) => s.model_version === drift.model_version && s.segment === '');
  const m = r.method;
  const card = (f, prefix) => {
    const d = f.decision;
    const sc = f.scores;
    const over = hs
      ? lineChart({ title: 'Scores over time', height: 170, series: ['psi', 'js', 'ks', 'wasserstein'].map((k) => ({ name: k, t: hs.t, v: col(hs, `${prefix}.${f.name}.${k}`) })) })
      : null;
    const q = f.quality;
    return h('div', { class: `card feature${d.firing ? ' firing' : ''}`, dataset: { feature: f.name, firing: d.firing } },
      h('h3', {}, `${f.name} `, h('span', { class: 'muted' }, f.kind), ' ', d.firing ? h('span', { class: 'badge alert' }, 'drifting') : h('span', { class: 'badge ok' }, 'stable')),
      distributionChart({ title: `${f.name}: reference (${f.reference_count}) vs current window (${f.count})`, labels: binLabels(f.distribution), reference: f.distribution.reference, current: f.distribution.current }),
      h('dl', { class: 'kv evidence' },
        h('dt', {}, 'statistic z'), h('dd', {}, fmt(d.z)),
        h('dt', {}, 'CUSUM / threshold'), h('dd', {}, `${fmt(d.cusum)} / ${fmt(d.threshold)}`),
        h('dt', {}, 'persistence'), h('dd', {}, `${m.persistence_windows} window(s); false-alarm probability ${m.false_alarm_probability} over ${m.horizon_windows} windows`),
        h('dt', {}, 'PSI · JS · KS · W1'), h('dd', {}, `${fmt(sc.psi)} · ${fmt(sc.js_distance)} · ${fmt(sc.ks)} · ${fmt(sc.wasserstein_normalised)}`),
        h('dt', {}, 'quality'), h('dd', {}, `missing ${pct(q.missing_rate)} (ref ${pct(q.reference_missing_rate)}), out of range ${pct(q.out_of_range_share)}, wrong type ${pct(q.wrong_type_share)}, unseen ${pct(q.unseen_share)}`),
      ),
      over,
    );
  };
  show(
    ...head,
    h('p', {}, `Version ${drift.model_version}, profile v${drift.profile_version}; window ending ${when(r.window_end_ms)} with ${r.window_events} events; ${r.windows_evaluated} windows evaluated.`),
    h('h2', {}, 'Data-quality checks'),
    h('table', { id: 'quality' }, h('thead', {}, h('tr', {}, h('th', {}, 'check'), h('th', {}, 'score (1 = clean)'))),
      h('tbody', {}, ...Object.entries(r.quality_scores).map(([k, v]) => h('tr', {}, h('td', {}, k), h('td', { class: 'num' }, fmt(v)))))),
    r.vanished.length ? h('p', { class: 'error' }, `Vanished features: ${r.vanished.join(', ')}`) : null,
    Object.keys(r.appeared).length ? h('p', { class: 'error' }, `New features: ${Object.keys(r.appeared).join(', ')}`) : null,
    h('h2', {}, 'Features'),
    h('div', { class: 'grid2', id: 'features' }, ...r.features.map((f) => card(f, 'drift'))),
    h('h2', {}, 'Predictions'),
    h('div', { class: 'grid2' }, ...r.predictions.map((f) => card(f, 'prediction'))),
  );
  return 5000;
}

// ---------- incident timeline ----------

async function incidents(model) {
  const peers = await api('/ui/api/peers');
  const q = model ? `?model=${enc(model)}` : '';
  const [alerts, notes, actions] = await Promise.all([
    api(`/v1/alerts${q}${q ? '&' : '?'}limit=1000`),
    peers.alerter ? api('/ui/peer/alerter/api/v1/notifications?limit=1000').catch(() => []) : [],
    peers.remediator ? api(`/ui/peer/remediator/v1/actions${q}`).then((a) => a.actions).catch(() => []) : [],
  ]);
  // One incident per fingerprint (a firing and its resolve share it).
  const byFp = new Map();
  const get = (fp) => {
    if (!byFp.has(fp)) byFp.set(fp, { fp, events: [], alert: null });
    return byFp.get(fp);
  };
  for (const a of [...alerts.active, ...alerts.recent]) {
    const inc = get(a.fingerprint);
    inc.alert = inc.alert || a;
    const key = `${a.status}-${a.id}`;
    if (inc.events.some((e) => e.key === key)) continue;
    if (a.status === 'firing') {
      inc.events.push({ key: `evidence-${a.id}`, t: a.starts_at_ms, kind: 'evidence', text: `evidence started: ${a.summary || a.type}` });
      inc.events.push({ key, t: a.generated_at_ms, kind: 'fired', text: `fired ${a.type} (${a.severity}): value ${fmt(a.value)}, threshold ${fmt(a.threshold)} · analyzer alert ${a.id}` });
    } else {
      inc.events.push({ key, t: a.ends_at_ms || a.generated_at_ms, kind: 'resolved', text: `resolved · analyzer alert ${a.id}` });
    }
  }
  for (const n of notes) {
    for (const fp of n.firing) {
      if (!byFp.has(fp)) continue;
      get(fp).events.push({ key: `n-${n.id}`, t: n.created_at_ms, kind: 'page', text: `paged ${n.receiver} (${n.kind}): ${n.outcome}${n.error ? ` – ${n.error}` : ''} · notification ${n.id}` });
    }
    for (const fp of n.resolved) {
      if (!byFp.has(fp)) continue;
      get(fp).events.push({ key: `nr-${n.id}`, t: n.created_at_ms, kind: 'page-resolved', text: `resolve sent to ${n.receiver}: ${n.outcome} · notification ${n.id}` });
    }
  }
  for (const a of actions) {
    if (!byFp.has(a.alert_fingerprint)) continue;
    const params = Object.entries(a.params || {}).map(([k, v]) => `${k}=${v}`).join(' ');
    get(a.alert_fingerprint).events.push({ key: `a-${a.action_id}-${a.decision}-${a.at_ms}`, t: a.at_ms, kind: 'action', decision: a.decision, text: `${a.kind} ${a.decision}${params ? ` (${params})` : ''}${a.reason ? `: ${a.reason}` : ''} · action ${a.action_id}` });
  }
  const list = [...byFp.values()]
    .filter((i) => i.alert)
    .sort((a, b) => Math.max(...b.events.map((e) => e.t)) - Math.max(...a.events.map((e) => e.t)));
  const order = { evidence: 0, fired: 1, page: 2, action: 3, 'page-resolved': 5, resolved: 4 };
  show(
    h('h1', {}, model ? `Incidents: ${model}` : 'Incidents'),
    h('p', { class: 'muted' }, `From the analyzer's alerts${peers.alerter ? ", the alerter's notifications" : ' (no [ui] alerter_url: pages not shown)'}${peers.remediator ? " and the remediator's actions" : ' (no [ui] remediator_url: actions not shown)'}, linked by alert fingerprint.`),
    list.length === 0 ? h('p', { class: 'muted' }, 'No alerts published by this analyzer since it started.') : null,
    ...list.map((i) => {
      const a = i.alert;
      const labels = Object.entries(a.labels).map(([k, v]) => `${k}=${v}`).join(', ');
      const evs = i.events.sort((x, y) => x.t - y.t || order[x.kind] - order[y.kind]);
      return h('div', { class: 'card incident', dataset: { fingerprint: i.fp, type: a.type, model: a.labels.model || '' } },
        h('h3', {}, `${a.type} `, h('span', { class: 'muted' }, labels), ' ', h('code', { class: 'muted' }, i.fp)),
        h('ol', { class: 'timeline' }, ...evs.map((e) => h('li', { dataset: { kind: e.kind, decision: e.decision } }, h('time', {}, when(e.t)), e.text))),
      );
    }),
  );
  return 5000;
}

// ---------- router ----------

let timer = null;
let generation = 0;

async function route() {
  clearTimeout(timer);
  const mine = ++generation;
  const [page, arg] = location.hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent);
  for (const a of document.querySelectorAll('[data-nav]')) {
    a.classList.toggle('active', a.dataset.nav === (page || 'overview') || (page === 'model' && a.dataset.nav === 'overview'));
  }
  try {
    let refresh;
    if (page === 'model' && arg) refresh = await modelPage(arg);
    else if (page === 'drift' && arg) refresh = await driftPage(arg);
    else if (page === 'incidents') refresh = await incidents(arg);
    else refresh = await overview();
    document.body.dataset.loaded = page || 'overview';
    setStatus(`updated ${new Date().toISOString().slice(11, 19)}Z`);
    // No refresh while the page is hidden or someone is typing a filter.
    const again = () => {
      if (mine !== generation) return;
      if (document.hidden || document.activeElement?.id === 'filter') timer = setTimeout(again, refresh);
      else route();
    };
    if (mine === generation && refresh) timer = setTimeout(again, refresh);
  } catch (e) {
    show(h('p', { class: 'error' }, String(e.message || e)));
    timer = setTimeout(route, 5000);
  }
}

window.addEventListener('hashchange', route);
route();
export { COLORS };
