// The audit trail, newest first, and its verification: whether the hash
// chain rehashes cleanly, and its head (sequence number and hash) for the
// operator to record somewhere the database's superuser cannot write.

import { get, describe } from './api.js';
import { h, replace, route, when, table, ago } from './dom.js';

// The page's own refresh reuses a verification up to a minute old: a full
// one reads the whole trail. "Verify now" asks for a fresh one.
const MAX_AGE = 60;

export function mount(el) {
  const status = h('div', { id: 'verify', class: 'card verify' }, h('p', { class: 'muted', text: 'Verifying the audit chain…' }));
  const verifyBtn = h('button', { type: 'button', id: 'verify-now', class: 'secondary', text: 'Verify now' });
  const agent = h('input', { type: 'search', id: 'audit-agent', placeholder: 'Agent', autocomplete: 'off', 'aria-label': 'Agent' });
  const action = h('input', { type: 'search', id: 'audit-action', placeholder: 'Action, e.g. agent.revoke', autocomplete: 'off', 'aria-label': 'Action' });
  const body = h('div', { id: 'audit-table' });
  const prev = h('button', { type: 'button', class: 'secondary', text: '← Newer' });
  const next = h('button', { type: 'button', class: 'secondary', text: 'Older →' });
  let cursors = [''];
  let nextCursor = '';
  let verifying = false;

  async function verify(maxAge) {
    if (verifying) return;
    verifying = true;
    verifyBtn.disabled = true;
    try {
      const r = await get('/v1/audit/verify', { max_age: maxAge });
      renderVerify(status, r, verifyBtn);
    } catch (e) {
      replace(status, h('p', { class: 'error', text: `Verification could not run: ${describe(e)}` }), verifyBtn);
    } finally {
      verifying = false;
      verifyBtn.disabled = false;
    }
  }
  verifyBtn.addEventListener('click', () => verify(0));

  const view = {
    async refresh() {
      verify(MAX_AGE);
      const r = await get('/v1/audit', { agent: agent.value.trim(), action: action.value.trim(), order: 'desc',
        after: cursors[cursors.length - 1], limit: 50 });
      nextCursor = r.next || '';
      prev.disabled = cursors.length <= 1;
      next.disabled = !nextCursor;
      replace(body, table(['ID', 'Time', 'Actor', 'Action', 'Account', 'Agent', 'Key', 'Details'], r.events.map((e) => h('tr', { 'data-event': e.id },
        h('td', { text: String(e.id) }), h('td', {}, when(e.at)), h('td', { text: e.actor }), h('td', { text: e.action }),
        h('td', {}, e.account ? h('a', { href: route('accounts', e.account), text: e.account }) : ''),
        h('td', {}, e.agent ? h('a', { href: route('agents', e.agent), text: e.agent }) : ''),
        h('td', { class: 'key', text: e.public_key || '' }),
        h('td', {}, h('code', { class: 'details', text: JSON.stringify(e.details) })))), { empty: 'No events.' }));
    },
  };
  const restart = () => {
    cursors = [''];
    view.refresh();
  };
  agent.addEventListener('change', restart);
  action.addEventListener('change', restart);
  prev.addEventListener('click', () => {
    if (cursors.length > 1) cursors.pop();
    view.refresh();
  });
  next.addEventListener('click', () => {
    if (nextCursor) cursors.push(nextCursor);
    view.refresh();
  });
  replace(el, h('h1', { text: 'Audit trail' }), status, h('div', { class: 'filters' }, agent, action), body,
    h('div', { class: 'pager' }, prev, next));
  return view;
}

function renderVerify(el, r, btn) {
  if (r.status === 'running') {
    replace(el, h('p', { class: 'busy', id: 'verify-status', text: `Verification running since ${ago(r.started_at)}; the trail is large. This page asks again.` }), btn);
    return;
  }
  const head = `${r.head.seq}:${r.head.hash}`;
  replace(el,
    h('p', { id: 'verify-status', class: r.ok ? 'ok' : 'bad', 'data-ok': String(r.ok),
      text: r.ok ? `Verified: the chain of ${r.events} events rehashes cleanly.` : `Verification FAILED: ${r.problems.length + r.more_problems} problems.` }),
    h('dl', { class: 'facts' },
      h('dt', { text: 'Chain head' }), h('dd', {}, h('code', { id: 'verify-head', class: 'key', text: head })),
      h('dt', { text: 'Checked' }), h('dd', {}, when(r.finished_at), ` (${ago(r.finished_at)})`)),
    h('p', { class: 'hint', text: 'Record the chain head outside this database (a ticket, a log). Later, rotatord audit verify --anchor SEQ:HASH proves that the trail up to it was not rewritten.' }),
    r.unsealed > 0 ? h('p', { class: 'warn', text: `${r.unsealed} events older than ${ago(r.unsealed_before)} are not sealed into the chain: they are not protected.` }) : null,
    r.problems.length ? h('ul', { class: 'problems', id: 'verify-problems' }, r.problems.map((p) => h('li', { text: `${p.kind}: ${p.message}` }))) : null,
    btn);
}
