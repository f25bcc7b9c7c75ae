// DOM helpers. Every value from the API is attacker-influenced (agent
// names, reasons, audit details): it only ever becomes a text node or an
// attribute value set through the DOM, never markup. Nothing here parses
// HTML.

// h creates an element. attrs: "class", "text", "title", "href" (internal
// "#/..." links only), "on<event>" (a function), "data-*", and other
// attributes set with setAttribute. Children are nodes or strings (text).
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = String(v);
    else if (k === 'href') el.setAttribute('href', safeHref(v));
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

// safeHref allows only the console's own hash routes.
function safeHref(v) {
  const s = String(v);
  return s.startsWith('#/') ? s : '#/';
}

// route builds a hash route from path segments, each encoded.
export function route(...segments) {
  return '#/' + segments.map((s) => encodeURIComponent(String(s))).join('/');
}

// replace puts children in place of el's content.
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

const pad = (n) => String(n).padStart(2, '0');

// fmtTime writes a time as local "YYYY-MM-DD HH:MM:SS"; "—" for none.
export function fmtTime(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (isNaN(d)) return String(iso);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

// ago writes how long ago (or from now) a time is: "3m ago", "in 2h".
export function ago(iso, now = Date.now()) {
  if (!iso) return '';
  const t = new Date(iso).getTime();
  if (isNaN(t)) return '';
  let s = Math.round((t - now) / 1000);
  const future = s > 0;
  s = Math.abs(s);
  let out;
  if (s < 60) out = `${s}s`;
  else if (s < 3600) out = `${Math.floor(s / 60)}m`;
  else if (s < 86400) out = `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  else out = `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
  return future ? `in ${out}` : `${out} ago`;
}

// when is a <time> with the local time and, as its title, how long ago.
export function when(iso) {
  if (!iso) return h('span', { class: 'muted', text: '—' });
  return h('time', { datetime: iso, title: ago(iso) }, fmtTime(iso));
}

// fmtBytes writes a size in B, KiB or MiB.
export function fmtBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(2)} MiB`;
}

// badge is a state label; the class comes from a fixed list, never from data.
const badgeClasses = {
  active: 'ok', completed: 'ok', ok: 'ok', info: 'info',
  revoked: 'bad', rolled_back: 'bad', failed: 'bad', critical: 'bad', retired: 'muted',
  issued: 'busy', distributed: 'busy', confirmed: 'busy', pending: 'busy', running: 'busy',
  warning: 'warn', none: 'muted',
};
export function badge(state) {
  const cls = badgeClasses[state] || 'muted';
  return h('span', { class: `badge ${cls}`, 'data-state': state, text: String(state).replace('_', ' ') });
}

// table builds a table with a header row and one row per item.
export function table(columns, rows, opts = {}) {
  const thead = h('thead', {}, h('tr', {}, columns.map((c) => h('th', { text: c }))));
  const tbody = h('tbody', {}, rows);
  if (rows.length === 0) {
    tbody.appendChild(h('tr', {}, h('td', { colspan: columns.length, class: 'empty', text: opts.empty || 'Nothing here.' })));
  }
  return h('table', { class: opts.class || '' }, thead, tbody);
}

// debounce calls fn once calls stop for ms.
export function debounce(fn, ms) {
  let t;
  return (...args) => {
    clearTimeout(t);
    t = setTimeout(() => fn(...args), ms);
  };
}
