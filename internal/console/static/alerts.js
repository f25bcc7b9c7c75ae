// Alerts, newest first, a page at a time.

import { get } from './api.js';
import { h, replace, route, when, badge, table } from './dom.js';

export function mount(el) {
  const sev = h('select', { id: 'alerts-severity', 'aria-label': 'Severity' },
    [['', 'Any severity'], ['critical', 'Critical'], ['warning', 'Warning'], ['info', 'Info']].map(([v, t]) => h('option', { value: v, text: t })));
  const kind = h('input', { type: 'search', id: 'alerts-kind', placeholder: 'Kind, e.g. rotation_rolled_back', autocomplete: 'off', 'aria-label': 'Kind' });
  const body = h('div', { id: 'alerts-table' });
  const prev = h('button', { type: 'button', class: 'secondary', text: '← Newer' });
  const next = h('button', { type: 'button', class: 'secondary', text: 'Older →' });
  let cursors = [''];
  let nextCursor = '';
  const view = {
    async refresh() {
      const r = await get('/v1/alerts', { severity: sev.value, kind: kind.value.trim(), after: cursors[cursors.length - 1], limit: 50 });
      nextCursor = r.next || '';
      prev.disabled = cursors.length <= 1;
      next.disabled = !nextCursor;
      replace(body, table(['Time', 'Severity', 'Kind', 'Account', 'Agent', 'Reason'], r.alerts.map((a) => h('tr', { 'data-alert': a.id },
        h('td', {}, when(a.created_at)), h('td', {}, badge(a.severity)), h('td', { text: a.kind }),
        h('td', {}, a.account ? h('a', { href: route('accounts', a.account), text: a.account }) : '—'),
        h('td', {}, a.agent ? h('a', { href: route('agents', a.agent), text: a.agent }) : '—'),
        h('td', { class: 'reason', text: a.reason }))), { empty: 'No alerts.' }));
    },
  };
  const restart = () => {
    cursors = [''];
    view.refresh();
  };
  sev.addEventListener('change', restart);
  kind.addEventListener('change', restart);
  prev.addEventListener('click', () => {
    if (cursors.length > 1) cursors.pop();
    view.refresh();
  });
  next.addEventListener('click', () => {
    if (nextCursor) cursors.push(nextCursor);
    view.refresh();
  });
  replace(el, h('h1', { text: 'Alerts' }), h('div', { class: 'filters' }, sev, kind), body, h('div', { class: 'pager' }, prev, next));
  return view;
}
