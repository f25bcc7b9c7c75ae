// One agent: its credential and policy, its rotations as a timeline, its
// keys (never a seed), its recent audit events, and, for rotate and admin
// tokens, Rotate and Revoke buttons behind a confirmation.

import { get, call, describe } from './api.js';
import { h, replace, route, when, ago, badge, table } from './dom.js';

export function mount(el, { name }, ctx) {
  const head = h('div', { id: 'agent-head' });
  const actions = h('div', { class: 'actions', id: 'agent-actions' });
  const timeline = h('ol', { class: 'timeline', id: 'agent-timeline' });
  const keys = h('div', { id: 'agent-keys' });
  const events = h('div', { id: 'agent-audit' });
  let agent = null;
  let inFlight = false;

  const rotateBtn = h('button', { type: 'button', id: 'rotate', text: 'Rotate now' });
  const revokeBtn = h('button', { type: 'button', id: 'revoke', class: 'danger', text: 'Revoke…' });
  rotateBtn.addEventListener('click', async () => {
    const { ok } = await ctx.confirm({ title: `Rotate ${name}?`, action: 'Rotate',
      message: `A new key is issued now. ${name} has its grace period to fetch it and reconnect; until then its current key keeps working, and if it does not reconnect the rotation rolls back.` });
    if (!ok) return;
    try {
      const { data } = await call('POST', `/v1/agents/${encodeURIComponent(name)}/rotate`);
      ctx.notify(`Rotation ${data.id} started (${data.state}).`, 'ok');
    } catch (e) {
      ctx.notify(describe(e), 'error');
    }
    ctx.refresh();
  });
  revokeBtn.addEventListener('click', async () => {
    const { ok, reason } = await ctx.confirm({ title: `Revoke ${name}?`, action: 'Revoke every key', reason: true,
      message: `Every key of ${name} is revoked now and its connections are dropped. This cannot be undone: the agent needs new credentials (reissue) to come back.` });
    if (!ok) return;
    try {
      const { data } = await call('POST', `/v1/agents/${encodeURIComponent(name)}/revoke`, { reason });
      ctx.notify(`${data.agent} revoked: ${data.revoked_keys.length} keys, ${data.pushed ? `pushed to ${data.servers} servers` : 'push pending (servers get it from the resolver)'}.`, 'ok');
    } catch (e) {
      ctx.notify(describe(e), 'error');
    }
    ctx.refresh();
  });
  if (ctx.can('rotate')) {
    actions.append(rotateBtn, revokeBtn);
  } else {
    actions.append(h('p', { class: 'muted', text: `Your token has scope ${ctx.me.scope}: rotating and revoking need a rotate or admin token.` }));
  }

  replace(el,
    h('p', { class: 'crumbs' }, h('a', { href: '#/fleet', text: 'Fleet' }), ' / '),
    h('h1', { id: 'agent-name', text: name }),
    head, actions,
    h('h2', { text: 'Rotations' }), timeline,
    h('h2', { text: 'Keys' }), keys,
    h('h2', { text: 'Recent events' }), events);

  return {
    async refresh() {
      const base = `/v1/agents/${encodeURIComponent(name)}`;
      const [a, rots, ks, ev] = await Promise.all([
        get(base),
        get(`${base}/rotations`, { limit: 20 }),
        get(`${base}/keys`, { limit: 20 }),
        get('/v1/audit', { agent: name, order: 'desc', limit: 20 }),
      ]);
      agent = a;
      inFlight = rots.rotations.some((r) => ['issued', 'distributed', 'confirmed'].includes(r.state));
      rotateBtn.disabled = agent.state !== 'active' || inFlight;
      rotateBtn.title = inFlight ? 'A rotation is in flight' : '';
      revokeBtn.disabled = agent.state !== 'active';
      renderHead(head, agent);
      renderTimeline(timeline, rots.rotations);
      replace(keys, table(['Public key', 'State', 'Issued', 'Expires', 'Revoked'], ks.keys.map((k) => h('tr', {},
        h('td', { class: 'key', text: k.public_key }), h('td', {}, badge(k.state)), h('td', {}, when(k.issued_at)),
        h('td', {}, when(k.expires_at)), h('td', {}, when(k.revoked_at)))), { empty: 'No keys.' }));
      replace(events, table(['Time', 'Actor', 'Action', 'Details'], ev.events.map((e) => h('tr', {},
        h('td', {}, when(e.at)), h('td', { text: e.actor }), h('td', { text: e.action }),
        h('td', {}, h('code', { class: 'details', text: JSON.stringify(e.details) })))), { empty: 'No events.' }));
    },
  };
}

function renderHead(el, a) {
  const c = a.credential;
  replace(el, h('dl', { class: 'facts' },
    fact('State', badge(a.state)),
    fact('Account', h('a', { href: route('accounts', a.account), text: a.account })),
    fact('Delivery', a.delivery),
    fact('Schedule', `${a.rotation.schedule}, grace ${a.rotation.grace}`),
    fact('Next rotation', a.next_rotation_at ? [when(a.next_rotation_at), ` (${ago(a.next_rotation_at)})`] : '—'),
    fact('Active key', c ? h('span', { class: 'key', text: c.public_key }) : '—'),
    fact('Key expires', c ? [when(c.expires_at), ` (${ago(c.expires_at)})`] : '—'),
    fact('Created', when(a.created_at))));
}

function fact(label, ...value) {
  return [h('dt', { text: label }), h('dd', {}, value)];
}

function renderTimeline(el, rotations) {
  if (rotations.length === 0) {
    replace(el, h('li', { class: 'muted', text: 'No rotation yet.' }));
    return;
  }
  replace(el, rotations.map((r) => h('li', { class: `rotation state-${r.state}`, 'data-rotation': r.id, 'data-state': r.state },
    h('div', { class: 'line' }, badge(r.state), ' ', h('span', { class: 'trigger', text: r.trigger }), ' ',
      when(r.created_at), h('span', { class: 'muted id', text: r.id })),
    h('ul', { class: 'steps' },
      step('issued', r.created_at),
      step('distributed', r.distributed_at, r.deadline && !r.finished_at ? `deadline ${ago(r.deadline)}` : ''),
      step('confirmed', r.confirmed_at, r.confirmed_by ? `by ${r.confirmed_by}` : ''),
      r.state === 'completed' ? step('completed', r.finished_at) : null,
      r.state === 'rolled_back' ? step('rolled back', r.finished_at) : null),
    r.reason ? h('p', { class: 'reason', text: r.reason }) : null,
    h('p', { class: 'keys muted' }, r.old_public_key ? h('span', { class: 'key', text: r.old_public_key }) : 'no key', ' → ',
      h('span', { class: 'key', text: r.new_public_key })))));
}

function step(label, at, note) {
  return h('li', { class: at ? 'done' : 'todo' }, h('span', { class: 'step', text: label }), ' ', at ? when(at) : '',
    note ? h('span', { class: 'muted', text: ` ${note}` }) : null);
}
