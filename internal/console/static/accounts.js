// Accounts: their agents, the account JWT's size against the guard
// (ROTATORD_MAX_ACCOUNT_JWT_BYTES), revocation entries and, on an account's
// page, which servers hold the current JWT.

import { get } from './api.js';
import { h, replace, route, when, badge, table, fmtBytes } from './dom.js';

// meter shows bytes against the guard; past half the account gets an
// account_jwt_large alert, and rotatord makes room before the guard.
function meter(bytes, max) {
  const pct = max > 0 ? Math.min(100, (100 * bytes) / max) : 0;
  const level = pct >= 75 ? 'bad' : pct >= 50 ? 'warn' : 'ok';
  return h('div', { class: 'meter-row' },
    h('meter', { min: 0, max: max || 1, value: bytes, low: (max || 1) * 0.5, high: (max || 1) * 0.75, optimum: 0, class: level }),
    h('span', { class: `size ${level}`, text: `${fmtBytes(bytes)} of ${fmtBytes(max)} (${pct.toFixed(1)}%)` }));
}

export const list = {
  mount(el) {
    const body = h('div', { id: 'accounts-table' });
    replace(el, h('h1', { text: 'Accounts' }), body);
    return {
      async refresh() {
        const { accounts } = await get('/v1/accounts');
        replace(body, table(['Account', 'Agents', 'JWT size', 'JWT version', 'Revocation entries', 'Updated'],
          accounts.map((a) => h('tr', { 'data-account': a.name },
            h('td', {}, h('a', { href: route('accounts', a.name), text: a.name }), a.system ? [' ', badge('system')] : null),
            h('td', {}, h('a', { href: `#/fleet?account=${encodeURIComponent(a.name)}`, text: String(a.agents) })),
            h('td', {}, meter(a.jwt_bytes, a.jwt_max_bytes)),
            h('td', { text: String(a.jwt_version) }),
            h('td', { text: String(a.revocations) }),
            h('td', {}, when(a.updated_at)))), { empty: 'No accounts yet.' }));
      },
    };
  },
};

export const detail = {
  mount(el, { name }) {
    const head = h('div', { id: 'account-head' });
    const servers = h('div', { id: 'account-servers' });
    const revs = h('div', { id: 'account-revocations' });
    const prev = h('button', { type: 'button', class: 'secondary', text: '← Newer' });
    const next = h('button', { type: 'button', class: 'secondary', text: 'Older →' });
    const cursors = [''];
    let nextCursor = '';
    const view = {
      async refresh() {
        const base = `/v1/accounts/${encodeURIComponent(name)}`;
        const [a, r] = await Promise.all([get(base),
          get(`${base}/revocations`, { after: cursors[cursors.length - 1], limit: 50 })]);
        replace(head, h('dl', { class: 'facts' },
          h('dt', { text: 'Public key' }), h('dd', { class: 'key', text: a.public_key }),
          h('dt', { text: 'Description' }), h('dd', { id: 'account-description', text: a.description || '—' }),
          h('dt', { text: 'Agents' }), h('dd', {}, h('a', { href: `#/fleet?account=${encodeURIComponent(a.name)}`, text: `${a.agents} agents` })),
          h('dt', { text: 'JWT size' }), h('dd', {}, meter(a.jwt_bytes, a.jwt_max_bytes)),
          h('dt', { text: 'JWT ID' }), h('dd', { class: 'key', text: a.jwt_id }),
          h('dt', { text: 'Limits' }), h('dd', { text: `connections ${lim(a.limits.conn)}, subscriptions ${lim(a.limits.subs)}, payload ${lim(a.limits.payload)}, data ${lim(a.limits.data)}` }),
          h('dt', { text: 'Signing keys' }), h('dd', {}, a.signing_keys.map((k) => h('div', { class: 'key', text: k }))),
          h('dt', { text: 'Revocation entries' }), h('dd', { text: `${a.revocations}${a.keep_revocations ? ' (kept until they expire: imported account)' : ''}` })));
        if (Array.isArray(a.servers)) {
          replace(servers, h('h2', { text: 'Servers' }), table(['Server', 'ID', 'Version', 'Current'],
            a.servers.map((s) => h('tr', {}, h('td', { text: s.name || '' }), h('td', { class: 'key', text: s.id || '' }),
              h('td', { text: s.version === undefined ? '' : String(s.version) }), h('td', {}, badge(s.current ? 'ok' : 'warning'))))));
        } else {
          replace(servers);
        }
        nextCursor = r.next || '';
        prev.disabled = cursors.length <= 1;
        next.disabled = !nextCursor;
        replace(revs, table(['Key', 'Agent', 'Reason', 'Revoked from', 'Until'], r.revocations.map((v) => h('tr', {},
          h('td', { class: 'key', text: v.all_keys ? '* (every JWT issued before)' : v.public_key }),
          h('td', {}, v.agent ? h('a', { href: route('agents', v.agent), text: v.agent }) : '—'),
          h('td', { class: 'reason', text: v.reason }),
          h('td', {}, when(v.revoked_at)), h('td', {}, when(v.expires_at)))), { empty: 'No revocation entries.' }));
      },
    };
    prev.addEventListener('click', () => {
      if (cursors.length > 1) cursors.pop();
      view.refresh();
    });
    next.addEventListener('click', () => {
      if (nextCursor) cursors.push(nextCursor);
      view.refresh();
    });
    replace(el,
      h('p', { class: 'crumbs' }, h('a', { href: '#/accounts', text: 'Accounts' }), ' / '),
      h('h1', { id: 'account-name', text: name }),
      head, servers,
      h('h2', { text: 'Revocation entries' }), revs,
      h('div', { class: 'pager' }, prev, next));
    return view;
  },
};

function lim(n) {
  return n < 0 ? 'unlimited' : String(n);
}
