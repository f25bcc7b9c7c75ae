// The fleet: every agent with its account, state, delivery, last and next
// rotation and the outcome of the last one; searched and filtered on the
// server, a page of 100 at a time, so thousands of agents stay fast.

import { get } from './api.js';
import { h, replace, route, when, ago, badge, table, debounce } from './dom.js';

const PAGE = 100;

export function mount(el, { params }) {
  const state = {
    search: params.get('search') || '',
    account: params.get('account') || '',
    state: params.get('state') || '',
    outcome: params.get('outcome') || '',
    cursors: [''], // after-cursor of each page seen; the last is the current page
    accounts: null,
  };

  const summary = h('p', { class: 'summary', id: 'fleet-summary' });
  const search = h('input', { type: 'search', id: 'fleet-search', placeholder: 'Search agents by name', value: state.search,
    autocomplete: 'off', spellcheck: 'false', 'aria-label': 'Search agents by name' });
  const accountSel = h('select', { id: 'fleet-account', 'aria-label': 'Account' }, h('option', { value: '', text: 'Every account' }));
  const stateSel = select('fleet-state', 'State', [['', 'Any state'], ['active', 'Active'], ['revoked', 'Revoked']], state.state);
  const outcomeSel = select('fleet-outcome', 'Last rotation', [['', 'Any last rotation'], ['completed', 'Completed'],
    ['rolled_back', 'Rolled back'], ['in_flight', 'In flight'], ['none', 'None yet']], state.outcome);
  const body = h('div', { id: 'fleet-table' });
  const prev = h('button', { type: 'button', class: 'secondary', id: 'fleet-prev', text: '← Previous' });
  const next = h('button', { type: 'button', class: 'secondary', id: 'fleet-next', text: 'Next →' });
  const pageInfo = h('span', { class: 'muted', id: 'fleet-page' });

  const restart = () => {
    state.cursors = [''];
    view.refresh();
  };
  search.addEventListener('input', debounce(() => {
    state.search = search.value.trim();
    restart();
  }, 250));
  accountSel.addEventListener('change', () => {
    state.account = accountSel.value;
    restart();
  });
  stateSel.addEventListener('change', () => {
    state.state = stateSel.value;
    restart();
  });
  outcomeSel.addEventListener('change', () => {
    state.outcome = outcomeSel.value;
    restart();
  });
  prev.addEventListener('click', () => {
    if (state.cursors.length > 1) state.cursors.pop();
    view.refresh();
  });
  next.addEventListener('click', () => {
    if (state.next) state.cursors.push(state.next);
    view.refresh();
  });

  replace(el,
    h('h1', { text: 'Fleet' }),
    summary,
    h('div', { class: 'filters' }, search, accountSel, stateSel, outcomeSel),
    body,
    h('div', { class: 'pager' }, prev, pageInfo, next));

  const view = {
    async refresh() {
      const after = state.cursors[state.cursors.length - 1];
      const [accs, page] = await Promise.all([
        get('/v1/accounts'),
        get('/v1/agents', { search: state.search, account: state.account, state: state.state,
          outcome: state.outcome, after, limit: PAGE }),
      ]);
      fillAccounts(accountSel, accs.accounts, state.account);
      const total = accs.accounts.reduce((n, a) => n + a.agents, 0);
      summary.textContent = `${total} agents in ${accs.accounts.length} accounts`;
      state.next = page.next || '';
      prev.disabled = state.cursors.length <= 1;
      next.disabled = !state.next;
      const first = (state.cursors.length - 1) * PAGE;
      pageInfo.textContent = page.agents.length ? `${first + 1}–${first + page.agents.length}` : '';
      replace(body, table(
        ['Agent', 'Account', 'State', 'Delivery', 'Last rotation', 'Outcome', 'Next rotation'],
        page.agents.map(row),
        { class: 'fleet', empty: 'No agent matches.' }));
    },
  };
  return view;
}

function row(a) {
  const last = a.last_rotation;
  return h('tr', { 'data-agent': a.name },
    h('td', {}, h('a', { href: route('agents', a.name), class: 'agent-link', text: a.name })),
    h('td', {}, h('a', { href: route('accounts', a.account), text: a.account })),
    h('td', {}, badge(a.state)),
    h('td', { text: a.delivery }),
    h('td', {}, last ? when(last.created_at) : h('span', { class: 'muted', text: 'never' })),
    h('td', { class: 'outcome' }, last ? [badge(last.state), last.reason ? h('div', { class: 'reason', text: last.reason }) : null]
      : h('span', { class: 'muted', text: '—' })),
    h('td', {}, a.next_rotation_at ? h('span', { title: ago(a.next_rotation_at) }, when(a.next_rotation_at)) : h('span', { class: 'muted', text: '—' })));
}

function select(id, label, options, value) {
  return h('select', { id, 'aria-label': label },
    options.map(([v, t]) => h('option', { value: v, text: t, selected: v === value })));
}

function fillAccounts(sel, accs, value) {
  const names = accs.filter((a) => !a.system).map((a) => a.name);
  const have = Array.from(sel.options).slice(1).map((o) => o.value);
  if (names.join('\n') === have.join('\n')) return;
  replace(sel, h('option', { value: '', text: 'Every account' }),
    names.map((n) => h('option', { value: n, text: n, selected: n === value })));
}
