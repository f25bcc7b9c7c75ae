// The rotatord fleet console: sign-in, the hash router, live refresh and
// the confirmation dialog. Views are in their own modules.

import { call, token, setToken, clearToken, whenUnauthorized, allows, describe } from './api.js';
import { h, replace, fmtTime } from './dom.js';
import * as fleet from './fleet.js';
import * as agent from './agent.js';
import * as accounts from './accounts.js';
import * as alerts from './alerts.js';
import * as audit from './audit.js';

// How often the open page refreshes itself while the tab is visible.
const REFRESH_MS = 3000;

const $ = (id) => document.getElementById(id);

let me = null; // {name, scope} of the signed-in token
let current = null; // {key, view}
let timer = null;
// The view whose refresh is running: a new view refreshes at once even
// while the previous view's refresh has not come back.
let refreshing = null;

function showNotice(message, kind = 'info') {
  const n = $('notice');
  n.className = `notice ${kind}`;
  n.textContent = message;
  n.hidden = !message;
}

// confirmAction opens the confirmation dialog and resolves to
// {ok, reason}: ok is false when the operator cancels.
function confirmAction({ title, message, action, reason = false }) {
  const dlg = $('confirm');
  $('confirm-title').textContent = title;
  $('confirm-message').textContent = message;
  $('confirm-ok').textContent = action;
  $('confirm-reason-row').hidden = !reason;
  $('confirm-reason').value = '';
  return new Promise((resolve) => {
    const done = (ok) => {
      $('confirm-form').removeEventListener('submit', onSubmit);
      $('confirm-cancel').removeEventListener('click', onCancel);
      dlg.removeEventListener('cancel', onCancel);
      if (dlg.open) dlg.close();
      resolve({ ok, reason: $('confirm-reason').value.trim() });
    };
    const onSubmit = (e) => {
      e.preventDefault();
      done(true);
    };
    const onCancel = (e) => {
      e.preventDefault();
      done(false);
    };
    $('confirm-form').addEventListener('submit', onSubmit);
    $('confirm-cancel').addEventListener('click', onCancel);
    dlg.addEventListener('cancel', onCancel);
    dlg.showModal();
    (reason ? $('confirm-reason') : $('confirm-cancel')).focus();
  });
}

const ctx = {
  get me() {
    return me;
  },
  can: (need) => me && allows(me.scope, need),
  confirm: confirmAction,
  notify: showNotice,
  refresh: () => refreshNow(),
};

// parseHash splits "#/agents/kate?x=1" into ["agents", "kate"] and params.
function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [path, qs] = raw.split('?');
  const parts = path.split('/').filter(Boolean).map((p) => {
    try {
      return decodeURIComponent(p);
    } catch (e) {
      return p;
    }
  });
  return { parts, params: new URLSearchParams(qs || '') };
}

function pick({ parts }) {
  const [top, name] = parts;
  switch (top) {
    case undefined:
    case 'fleet':
      return ['fleet', fleet];
    case 'agents':
      return name ? ['agent', agent] : ['fleet', fleet];
    case 'accounts':
      return name ? ['account', accounts.detail] : ['accounts', accounts.list];
    case 'alerts':
      return ['alerts', alerts];
    case 'audit':
      return ['audit', audit];
  }
  return ['fleet', fleet];
}

function render() {
  if (!me) return;
  const r = parseHash();
  const [key, mod] = pick(r);
  for (const a of document.querySelectorAll('#nav a')) {
    const v = a.dataset.view;
    a.classList.toggle('current', v === key || (v === 'fleet' && key === 'agent') || (v === 'accounts' && key === 'account'));
  }
  showNotice('');
  const el = $('view');
  replace(el);
  el.dataset.view = key;
  const view = mod.mount(el, { name: r.parts[1], params: r.params }, ctx);
  current = { key, view };
  refreshNow();
}

async function refreshNow() {
  if (!current || refreshing === current) return;
  const mine = current;
  refreshing = mine;
  try {
    await mine.view.refresh();
    if (mine === current) {
      $('live').textContent = `live · ${fmtTime(new Date().toISOString()).slice(11)}`;
      $('live').classList.remove('stale');
    }
  } catch (e) {
    if (mine === current && e.status !== 401) {
      showNotice(describe(e), 'error');
      $('live').classList.add('stale');
    }
  } finally {
    if (refreshing === mine) refreshing = null;
  }
}

function startTimer() {
  stopTimer();
  timer = setInterval(() => {
    if (document.visibilityState === 'visible') refreshNow();
  }, REFRESH_MS);
}

function stopTimer() {
  if (timer) clearInterval(timer);
  timer = null;
}

function showSignIn(message) {
  me = null;
  current = null;
  stopTimer();
  replace($('view'));
  showNotice('');
  $('nav').hidden = true;
  $('whoami').hidden = true;
  $('signin').hidden = false;
  const err = $('signin-error');
  err.textContent = message || '';
  err.hidden = !message;
  $('token').value = '';
  $('token').focus();
}

function showApp(who) {
  me = who;
  $('signin').hidden = true;
  $('nav').hidden = false;
  $('whoami').hidden = false;
  replace($('identity'), h('strong', { text: who.name }), ' ', h('span', { class: 'scope', text: who.scope }),
    who.expires_at ? h('span', { class: 'muted', text: ` · expires ${fmtTime(who.expires_at)}` }) : null);
  startTimer();
  render();
}

async function signIn(tok) {
  try {
    const { data } = await call('GET', '/v1/whoami', undefined, tok);
    setToken(tok);
    showApp(data);
  } catch (e) {
    showSignIn(e.status === 401 ? 'That token is not valid.' : describe(e));
  }
}

function init() {
  $('signin-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const tok = $('token').value.trim();
    $('token').value = '';
    if (tok) signIn(tok);
  });
  $('signout').addEventListener('click', () => {
    clearToken();
    showSignIn('');
  });
  whenUnauthorized(() => {
    clearToken();
    showSignIn('The token is no longer valid: sign in again.');
  });
  window.addEventListener('hashchange', render);
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') refreshNow();
  });
  const tok = token();
  if (tok) signIn(tok);
  else showSignIn('');
}

init();
