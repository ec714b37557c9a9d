// The console's shell: sign-in, the navigation, the router (the URL's #fragment), the event
// stream feeding the page on screen, and the accounts every page names.

import { h, fill, badge, errorBox } from './dom.js';
import { api, all, token, setToken, check, whenUnauthorized } from './api.js';
import { EventStream } from './events.js';
import * as pages from './pages.js';

const main = document.getElementById('main');
const signin = document.getElementById('signin');
const shell = document.getElementById('shell');
const streamState = document.getElementById('stream-state');
const operatorInput = document.getElementById('operator');

const ROUTES = [
  [/^#\/accounts$/, pages.accounts, 'accounts'],
  [/^#\/login\/([^/?]+)$/, pages.login, 'accounts'],
  [/^#\/conversations$/, pages.conversations, 'conversations'],
  [/^#\/chat\/([^/?]+)$/, pages.chat, 'conversations'],
  [/^#\/sends\/([^/?]+)$/, pages.sends, 'accounts'],
  [/^#\/send\/([^/?]+)$/, pages.sendOfMessage, 'accounts'],
  [/^#\/job\/([^/?]+)$/, pages.job, 'accounts'],
  [/^#\/workers$/, pages.workers, 'workers'],
  [/^#\/dead-letter$/, pages.deadLetter, 'dead-letter'],
];

const ctx = {
  accounts: new Map(),
  identities: new Map(),
  page: null,
  operator: () => operatorInput.value.trim() || 'operator',
  go(hash, replace = false) {
    if (replace) history.replaceState(null, '', hash);
    else history.pushState(null, '', hash);
    route();
  },
  async loadAccounts() {
    const list = await all('/accounts');
    ctx.accounts = new Map(list.map((a) => [a.id, a]));
    deliver('accounts_loaded', {});
  },
};

function deliver(name, event) {
  if (ctx.page && ctx.page.onEvent) {
    try {
      ctx.page.onEvent(name, event);
    } catch {
      // a page's trouble with one event must not stop the others
    }
  }
}

let stream = null;

async function onEvent(name, e) {
  if (name === 'account_state_changed' && ctx.accounts.has(e.account_id)) {
    ctx.accounts.get(e.account_id).connection = e.state;
  }
  if (name === 'login_stepped' || name === 'account_state_changed') {
    if (!ctx.accounts.has(e.account_id)) await ctx.loadAccounts().catch(() => {});
  }
  deliver(name, e);
}

function onStreamState(state) {
  const text = { live: 'live', connecting: 'connecting…', reconnecting: 'reconnecting…' }[state] || state;
  fill(streamState, badge(state, `updates: ${text}`));
  streamState.dataset.state = state;
}

let rendering = 0;
async function route() {
  if (!token()) return;
  const hash = location.hash || '#/conversations';
  const [path, q] = hash.split('?', 2);
  const found = ROUTES.map(([re, page, nav]) => [path.match(re), page, nav]).find(([m]) => m);
  if (ctx.page && ctx.page.dispose) ctx.page.dispose();
  ctx.page = null;
  const mine = ++rendering;
  for (const a of document.querySelectorAll('nav a')) {
    if (found && a.dataset.nav === found[2]) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  if (!found) {
    fill(main, h('h1', { tabindex: '-1' }, 'Not found'), h('p', {}, h('a', { href: '#/conversations' }, 'Conversations')));
    return;
  }
  const [m, page] = found;
  fill(main, h('p', { class: 'muted' }, 'Loading…'));
  try {
    const root = h('div', { class: 'page' });
    const p = await page(ctx, root, m.slice(1).map(decodeURIComponent), new URLSearchParams(q || ''));
    if (mine !== rendering) {
      if (p && p.dispose) p.dispose();
      return;
    }
    ctx.page = p || {};
    fill(main, root);
    document.title = `${root.querySelector('h1')?.textContent || 'Console'} · inbox`;
    root.querySelector('h1')?.focus({ preventScroll: true });
  } catch (e) {
    if (mine === rendering) fill(main, errorBox(e));
  }
}

async function start() {
  signin.hidden = true;
  shell.hidden = false;
  try {
    await ctx.loadAccounts();
  } catch (e) {
    fill(main, errorBox(e));
    return;
  }
  if (!stream) stream = new EventStream(onEvent, onStreamState);
  stream.start();
  route();
}

function signOut() {
  if (stream) stream.stop();
  setToken(null);
  shell.hidden = true;
  signin.hidden = false;
  document.getElementById('token').focus();
}

whenUnauthorized(signOut);
window.addEventListener('hashchange', route);
document.getElementById('sign-out').addEventListener('click', signOut);
operatorInput.value = sessionStorage.getItem('inbox.operator') || 'operator';
operatorInput.addEventListener('change', () => {
  sessionStorage.setItem('inbox.operator', ctx.operator());
  deliver('operator_changed', {});
});
document.getElementById('signin-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const input = document.getElementById('token');
  const out = document.getElementById('signin-status');
  const candidate = input.value.trim();
  fill(out, 'Checking…');
  try {
    if (!(await check(candidate))) {
      fill(out, errorBox('This token is refused: it is in the data directory’s api.token (inbox demo prints it).'));
      return;
    }
  } catch (e) {
    fill(out, errorBox(`The worker does not answer: ${e.message}`));
    return;
  }
  input.value = '';
  fill(out, '');
  setToken(candidate);
  start();
});
// When the tab comes back from sleep or the network returns, reconnect at once.
window.addEventListener('online', () => stream && stream.drop());

if (token()) start();
else {
  signin.hidden = false;
  document.getElementById('token').focus();
}
// For tests and the curious: drop the event stream (it recovers by itself).
window.inboxConsole = { dropStream: () => stream && stream.drop(), api };
