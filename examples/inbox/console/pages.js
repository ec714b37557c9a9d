// The console's pages. Each page is `async (ctx, root, params) => ({onEvent, dispose})`: it
// renders into `root` from the API, and refreshes what an event concerns. Nothing here writes
// message content to the browser's console.

import { h, fill, short, time, badge, debounce, errorBox } from './dom.js';
import { api, all, token, BASE } from './api.js';
import qrcode from './vendor/qrcode.mjs';

// ----- shared pieces -----

function heading(text, ...rest) {
  return h('div', { class: 'page-head' }, h('h1', { tabindex: '-1' }, text), ...rest);
}

/** The state of an account's connection: `connected`, `needs_login`, ... */
export function connectionOf(account) {
  return (account.connection && account.connection.state) || 'unknown';
}

function connectionBadge(account) {
  const state = connectionOf(account);
  const why = account.connection && account.connection.reason;
  const b = badge(state, state.replace(/_/g, ' '));
  if (why) b.title = why;
  return b;
}

/** A conversation whose person is linked to no contact of yours: a new one. */
function isNew(conversation, person) {
  return !conversation.contact_id && !(person && person.contact_id);
}

function accountName(ctx, id) {
  const a = ctx.accounts.get(id);
  return a ? a.display_name : short(id);
}

function personName(identity) {
  if (!identity) return 'someone';
  return identity.display_name || (identity.username ? '@' + identity.username : identity.address);
}

/** The identities of an account, cached by id (names for the lists). */
async function identities(ctx, accountId) {
  if (!ctx.identities.has(accountId)) {
    const list = await all(`/accounts/${accountId}/identities`, 2000).catch(() => []);
    ctx.identities.set(accountId, new Map(list.map((i) => [i.id, i])));
  }
  return ctx.identities.get(accountId);
}

async function identity(ctx, accountId, id) {
  let map = await identities(ctx, accountId);
  if (!map.has(id)) {
    ctx.identities.delete(accountId);
    map = await identities(ctx, accountId);
  }
  return map.get(id);
}

function field(label, input) {
  const id = input.id || `f-${Math.random().toString(36).slice(2)}`;
  input.id = id;
  return h('div', { class: 'field' }, h('label', { for: id }, label), input);
}

function status(text) {
  return h('p', { class: 'status', role: 'status', 'aria-live': 'polite' }, text || '');
}

async function busy(button, work) {
  button.disabled = true;
  try {
    return await work();
  } finally {
    button.disabled = false;
  }
}

/** Reads a file as base64 (for a send's attachments). */
function base64Of(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(',', 2)[1] || '');
    reader.onerror = () => reject(new Error(`cannot read ${file.name}`));
    reader.readAsDataURL(file);
  });
}

/** Downloads an attachment with the token (a plain link cannot carry it). */
async function download(messageId, index, name) {
  const response = await fetch(`${BASE}/messages/${messageId}/attachments/${index}`, {
    headers: { Authorization: `Bearer ${token()}` },
  });
  if (!response.ok) throw new Error(`the attachment cannot be downloaded (${response.status})`);
  const url = URL.createObjectURL(await response.blob());
  const a = h('a', { href: url, download: name || 'attachment' });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

// ----- accounts -----

export async function accounts(ctx, root) {
  const list = h('tbody');
  const table = h('table', { class: 'list', id: 'accounts' },
    h('caption', { class: 'sr-only' }, 'Accounts and their connection'),
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Account'), h('th', { scope: 'col' }, 'Kind'),
      h('th', { scope: 'col' }, 'Connection'), h('th', { scope: 'col' }, 'Enabled'), h('th', { scope: 'col' }, 'Actions'))),
    list);
  const formStatus = status();
  const email = emailForm(ctx, formStatus);
  const telegram = telegramForm(ctx, formStatus);
  fill(root,
    heading('Accounts'),
    h('div', { class: 'table-wrap' }, table),
    h('section', { class: 'forms', 'aria-label': 'Add an account' }, email, telegram),
    formStatus);

  function render() {
    const rows = [...ctx.accounts.values()].map((a) => h('tr', { 'data-account': a.id },
      h('th', { scope: 'row' }, a.display_name, h('div', { class: 'muted' }, short(a.id))),
      h('td', {}, a.kind),
      h('td', { class: 'connection' }, connectionBadge(a)),
      h('td', {}, a.enabled ? 'yes' : 'no'),
      h('td', { class: 'actions' },
        h('a', { href: `#/login/${a.id}`, class: 'btn' }, 'Log in'),
        h('a', { href: `#/conversations?account=${a.id}`, class: 'btn' }, 'Conversations'),
        h('a', { href: `#/sends/${a.id}`, class: 'btn' }, 'Sends'),
        h('button', {
          type: 'button',
          onclick: (ev) => busy(ev.target, async () => {
            await api(`/accounts/${a.id}/enabled`, { method: 'PUT', body: { enabled: !a.enabled } });
            await ctx.loadAccounts();
          }).catch((e) => fill(formStatus, errorBox(e))),
        }, a.enabled ? 'Disable' : 'Enable'))));
    fill(list, rows.length ? rows : h('tr', {}, h('td', { colspan: 5 }, 'No accounts yet: add one below.')));
  }
  render();
  return {
    onEvent(name) {
      if (name === 'account_state_changed' || name === 'accounts_loaded') render();
    },
  };
}

function emailForm(ctx, out) {
  const name = h('input', { name: 'name', required: true, autocomplete: 'off' });
  const address = h('input', { name: 'address', type: 'email', required: true, autocomplete: 'off' });
  const imapHost = h('input', { name: 'imap_host', required: true });
  const imapPort = h('input', { name: 'imap_port', type: 'number', min: 1, max: 65535, placeholder: '993' });
  const smtpHost = h('input', { name: 'smtp_host', required: true });
  const smtpPort = h('input', { name: 'smtp_port', type: 'number', min: 1, max: 65535, placeholder: '465' });
  const security = h('select', { name: 'security' },
    h('option', { value: 'tls' }, 'TLS'), h('option', { value: 'starttls' }, 'STARTTLS'),
    h('option', { value: 'plaintext' }, 'none (loopback only)'));
  const password = h('input', { name: 'password', type: 'password', required: true, autocomplete: 'new-password' });
  const submit = h('button', { type: 'submit', class: 'primary' }, 'Add and log in');
  const form = h('form', { id: 'add-email', class: 'card' },
    h('h2', {}, 'Add an email account'),
    field('Name', name), field('Address', address),
    h('div', { class: 'row' }, field('IMAP server', imapHost), field('Port', imapPort)),
    h('div', { class: 'row' }, field('SMTP server', smtpHost), field('Port', smtpPort)),
    field('Security', security),
    field('Password (checked against both servers, then kept encrypted)', password),
    submit);
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    busy(submit, async () => {
      fill(out, 'Adding the account…');
      const sec = security.value;
      const server = (host, port) => {
        const s = { host: host.value.trim(), security: sec };
        if (port.value) s.port = Number(port.value);
        return s;
      };
      const account = await api('/accounts', {
        body: {
          kind: 'email',
          name: name.value.trim(),
          config: { address: address.value.trim(), imap: server(imapHost, imapPort), smtp: server(smtpHost, smtpPort) },
        },
      });
      fill(out, 'Checking the password against the servers…');
      try {
        await api(`/accounts/${account.id}/login`, { body: { flow: 'password', input: { password: password.value } } });
        fill(out, `${account.display_name}: logged in.`);
      } catch (e) {
        fill(out, errorBox(`${account.display_name} was added, but the login failed: ${e.message}. Log in again from the list.`));
      }
      password.value = '';
      form.reset();
      await ctx.loadAccounts();
    }).catch((e) => fill(out, errorBox(e)));
  });
  return form;
}

function telegramForm(ctx, out) {
  const name = h('input', { name: 'name', required: true, autocomplete: 'off' });
  const submit = h('button', { type: 'submit' }, 'Add, then log in');
  const form = h('form', { id: 'add-telegram', class: 'card' },
    h('h2', {}, 'Add a Telegram account'),
    h('p', { class: 'muted' }, 'The worker needs the app’s id and hash (INBOX_TELEGRAM_API_ID and _HASH). Log in next, with the phone or a QR code.'),
    field('Name', name), submit);
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    busy(submit, async () => {
      const account = await api('/accounts', { body: { kind: 'telegram', name: name.value.trim(), config: {} } });
      await ctx.loadAccounts();
      ctx.go(`#/login/${account.id}`);
    }).catch((e) => fill(out, errorBox(e)));
  });
  return form;
}

// ----- login -----

export async function login(ctx, root, [id]) {
  const account = await api(`/accounts/${id}`);
  const flows = account.kind === 'email' ? [['password', 'Password']]
    : account.kind === 'telegram' ? [['phone', 'Phone number'], ['qr', 'QR code'], ['bot', 'Bot token']]
      : [['password', 'Password']];
  const area = h('div', { id: 'login-step', class: 'card', 'aria-live': 'polite' });
  const state = h('span', { id: 'login-connection' }, connectionBadge(account));
  fill(root,
    heading(`Log in: ${account.display_name}`, h('p', {}, 'Connection: ', state)),
    h('div', { class: 'flows', role: 'group', 'aria-label': 'How to log in' },
      flows.map(([flow, label]) => h('button', { type: 'button', 'data-flow': flow, onclick: () => start(flow) }, label))),
    area);
  let timer = null;
  let disposed = false;

  function start(flow) {
    clearTimeout(timer);
    step(flow, {});
  }

  async function step(flow, input) {
    let answer;
    try {
      answer = await api(`/accounts/${id}/login`, { body: { flow, input } });
    } catch (e) {
      if (disposed) return;
      area.prepend(errorBox(e));
      return;
    }
    if (disposed) return;
    show(flow, answer);
  }

  function show(flow, s) {
    clearTimeout(timer);
    if (s.step === 'input') {
      const inputs = s.fields.map((f) => {
        const input = h('input', {
          name: f.id,
          required: true,
          autocomplete: 'off',
          type: f.kind === 'password' || f.kind === 'token' ? 'password' : f.kind === 'phone' ? 'tel' : 'text',
          inputmode: f.kind === 'code' ? 'numeric' : null,
        });
        return [f.id, input, field(f.label, input)];
      });
      const submit = h('button', { type: 'submit', class: 'primary' }, 'Continue');
      const form = h('form', { 'data-step': s.name },
        h('h2', {}, `Step: ${s.name}`),
        s.hint ? h('p', { class: 'muted' }, s.name === 'password' ? `Password hint: ${s.hint}` : s.hint) : null,
        inputs.map((i) => i[2]), submit);
      form.addEventListener('submit', (ev) => {
        ev.preventDefault();
        const values = Object.fromEntries(inputs.map(([k, input]) => [k, input.value]));
        inputs.forEach(([, input]) => { input.value = ''; });
        busy(submit, () => step(flow, values));
      });
      fill(area, form);
      if (inputs[0]) inputs[0][1].focus();
    } else if (s.step === 'display') {
      const qr = qrcode(0, 'M');
      qr.addData(s.data);
      qr.make();
      const img = h('img', {
        id: 'qr',
        src: qr.createDataURL(6, 4),
        alt: 'QR code to scan with the Telegram app (Settings, Devices, Link Desktop Device)',
        'data-token': s.data.slice(-12),
      });
      fill(area,
        h('h2', {}, 'Scan this code'),
        h('p', {}, 'In the Telegram app where the account is logged in: Settings → Devices → Link Desktop Device. The code changes as Telegram rotates it.'),
        img,
        s.expires_at ? h('p', { class: 'muted' }, 'This code is valid until ', time(s.expires_at), '.') : null);
      timer = setTimeout(() => step(flow, {}), 2000);
    } else if (s.step === 'done') {
      fill(area, h('p', { id: 'login-done', class: 'done' }, `Logged in${s.who ? ` as ${s.who}` : ''}.`));
      ctx.loadAccounts();
    }
  }

  return {
    onEvent(name, e) {
      if (name === 'account_state_changed' && e.account_id === id) {
        const a = ctx.accounts.get(id);
        if (a) fill(state, connectionBadge(a));
      }
    },
    dispose() {
      disposed = true;
      clearTimeout(timer);
    },
  };
}

// ----- conversations -----

const STATUSES = ['open', 'idle', 'closed', 'expired'];

export async function conversations(ctx, root, _params, query) {
  const filter = {
    status: query.get('status') || '',
    account: query.get('account') || '',
    assignee: query.get('assignee') || '',
  };
  const statusSel = h('select', { name: 'status' }, h('option', { value: '' }, 'any'),
    STATUSES.map((s) => h('option', { value: s, selected: s === filter.status }, s)));
  const accountSel = h('select', { name: 'account' }, h('option', { value: '' }, 'any'),
    [...ctx.accounts.values()].map((a) => h('option', { value: a.id, selected: a.id === filter.account }, a.display_name)));
  const assigneeSel = h('select', { name: 'assignee' },
    [['', 'anyone or no one'], ['me', 'me'], ['none', 'no one'], ['others', 'others']]
      .map(([v, l]) => h('option', { value: v, selected: v === filter.assignee }, l)));
  const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter conversations' },
    field('Status', statusSel), field('Account', accountSel), field('Assigned to', assigneeSel),
    h('button', { type: 'submit' }, 'Filter'));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    if (statusSel.value) q.set('status', statusSel.value);
    if (accountSel.value) q.set('account', accountSel.value);
    if (assigneeSel.value) q.set('assignee', assigneeSel.value);
    ctx.go(`#/conversations${q.toString() ? `?${q}` : ''}`);
  });
  [statusSel, accountSel, assigneeSel].forEach((s) => s.addEventListener('change', () => form.requestSubmit()));
  const list = h('ul', { class: 'conversations', id: 'conversations', 'aria-label': 'Conversations' });
  const more = h('button', { type: 'button', hidden: true }, 'More');
  const out = status();
  fill(root, heading('Conversations'), form, out, list, more);

  let next = null;
  let shown = [];

  function url(after) {
    const q = new URLSearchParams({ limit: '50' });
    if (filter.status) q.set('status', filter.status);
    if (filter.account) q.set('account', filter.account);
    if (filter.assignee === 'me') q.set('assignee', ctx.operator());
    if (filter.assignee === 'none') q.set('unassigned', 'true');
    if (after) q.set('after', after);
    return `/conversations?${q}`;
  }

  function keep(c) {
    const me = ctx.operator();
    switch (filter.assignee) {
      case 'me': return c.assignee === me;
      case 'none': return !c.assignee;
      case 'others': return !!c.assignee && c.assignee !== me;
      default: return true;
    }
  }

  async function row(c) {
    const person = await identity(ctx, c.account_id, c.primary_identity);
    const me = ctx.operator();
    const claim = h('button', {
      type: 'button',
      class: 'claim',
      onclick: (ev) => busy(ev.target, async () => {
        const body = c.assignee === me ? { release: me } : { claim: me };
        await api(`/conversations/${c.id}/assignment`, { body });
        refresh();
      }).catch((e) => fill(out, errorBox(e))),
    }, c.assignee === me ? 'Release' : 'Claim');
    if (c.assignee && c.assignee !== me) claim.disabled = true;
    return h('li', { 'data-conversation': c.id, 'data-status': c.status },
      h('a', { href: `#/chat/${c.id}`, class: 'who' },
        personName(person),
        isNew(c, person) ? h('span', { class: 'badge badge-new', title: 'Not linked to a contact yet' }, 'new') : null),
      h('span', { class: 'meta' }, accountName(ctx, c.account_id)),
      badge(c.status),
      h('span', { class: 'assignee' }, c.assignee ? `assigned to ${c.assignee}` : 'unassigned'),
      h('span', { class: 'meta' }, time(c.last_activity_at)),
      claim);
  }

  async function load(after) {
    const page = await api(url(after));
    next = page.next;
    more.hidden = !next;
    return page.items.filter(keep);
  }

  async function refresh() {
    try {
      const items = await load(null);
      shown = items;
      const rows = await Promise.all(items.map(row));
      fill(list, rows.length ? rows : h('li', { class: 'empty' }, 'No conversations match.'));
    } catch (e) {
      fill(out, errorBox(e));
    }
  }
  more.addEventListener('click', () => busy(more, async () => {
    const items = await load(next);
    shown.push(...items);
    list.append(...(await Promise.all(items.map(row))));
  }));
  const later = debounce(refresh, 200);
  await refresh();
  return {
    onEvent(name) {
      if (name.startsWith('conversation_') || name === 'message_received' || name === 'operator_changed') later();
    },
  };
}

// ----- chat -----

export async function chat(ctx, root, [id]) {
  const conversation = await api(`/conversations/${id}`);
  const person = await identity(ctx, conversation.account_id, conversation.primary_identity);
  const me = ctx.operator();
  const out = status();
  const log = h('ol', { class: 'messages', id: 'messages', 'aria-label': 'Messages', 'aria-live': 'polite' });
  const text = h('textarea', { name: 'text', rows: 3, placeholder: 'Write a reply (Ctrl+Enter sends)' });
  const files = h('input', { type: 'file', name: 'files', multiple: true });
  const send = h('button', { type: 'submit', class: 'primary' }, 'Send');
  const box = h('form', { class: 'sendbox', id: 'sendbox', 'aria-label': 'Reply' },
    field('Reply', text), field('Attach files', files), send);
  const syncButton = h('button', { type: 'button', id: 'sync-history' }, 'Sync history');
  const progress = h('span', { id: 'sync-progress', role: 'status', 'aria-live': 'polite' });
  const claim = h('button', { type: 'button', id: 'claim' }, conversation.assignee === me ? 'Release' : 'Claim');
  const assignee = h('span', { class: 'assignee' }, conversation.assignee ? `assigned to ${conversation.assignee}` : 'unassigned');
  const statusBadge = h('span', {}, badge(conversation.status));
  const olderButton = h('button', { type: 'button', id: 'older', hidden: true }, 'Earlier messages');
  fill(root,
    heading(personName(person),
      h('div', { class: 'chat-meta' },
        isNew(conversation, person) ? h('span', { class: 'badge badge-new', title: 'Not linked to a contact yet' }, 'new') : null,
        statusBadge, h('span', { class: 'meta' }, accountName(ctx, conversation.account_id)),
        assignee, claim, syncButton, progress)),
    out,
    h('div', { class: 'chat' }, olderButton, log, box));

  claim.addEventListener('click', () => busy(claim, async () => {
    const current = await api(`/conversations/${id}`);
    const body = current.assignee === me ? { release: me } : { claim: me };
    const after = await api(`/conversations/${id}/assignment`, { body });
    fill(assignee, after.assignee ? `assigned to ${after.assignee}` : 'unassigned');
    claim.textContent = after.assignee === me ? 'Release' : 'Claim';
  }).catch((e) => fill(out, errorBox(e))));

  const messages = new Map();

  function messageItem(m) {
    const outbound = m.direction === 'outbound';
    const statusEl = outbound ? badge(m.status) : null;
    const body = m.deleted_at ? h('p', { class: 'muted' }, '(deleted)')
      : h('p', { class: 'text' }, m.text || (m.subject ? m.subject : ''));
    const attachments = (m.attachments || []).map((a, i) => h('li', {},
      h('button', {
        type: 'button',
        class: 'link',
        onclick: () => download(m.id, i, a.name).catch((e) => fill(out, errorBox(e))),
      }, `${a.name || 'attachment'} (${a.mime_type}${a.size ? `, ${Math.ceil(a.size / 1024)} KiB` : ''})`)));
    return h('li', {
      class: `message ${outbound ? 'out' : 'in'}`,
      'data-message': m.id,
      'data-status': m.status,
    },
      m.subject && m.text ? h('p', { class: 'subject' }, m.subject) : null,
      body,
      attachments.length ? h('ul', { class: 'attachments', 'aria-label': 'Attachments' }, attachments) : null,
      h('p', { class: 'meta' },
        time(m.sent_at || m.created_at),
        m.origin === 'other_app' ? ' · from another app' : '',
        m.edited_at ? ' · edited' : '',
        statusEl ? ' · ' : '', statusEl,
        m.status === 'failed' ? [' ', h('a', { href: `#/send/${m.id}` }, 'attempts')] : null,
        m.status === 'failed' && m.error ? h('span', { class: 'error-text' }, ` ${m.error}`) : null));
  }

  function put(m) {
    messages.set(m.id, m);
    const el = messageItem(m);
    const old = log.querySelector(`[data-message="${m.id}"]`);
    if (old) old.replaceWith(el);
    else {
      // Keep them in order of time.
      const at = new Date(m.sent_at || m.created_at).getTime();
      const after = [...log.children].find((c) => {
        const o = messages.get(c.dataset.message);
        return o && new Date(o.sent_at || o.created_at).getTime() > at;
      });
      if (after) log.insertBefore(el, after);
      else log.append(el);
    }
  }

  // The newest page first; older pages on demand (the API pages newest first).
  let older;
  async function reload() {
    try {
      const page = await api(`/conversations/${id}/messages?limit=100`);
      page.items.slice().reverse().forEach(put);
      if (older === undefined) {
        older = page.next;
        olderButton.hidden = !older;
      }
      log.lastElementChild?.scrollIntoView({ block: 'end' });
    } catch (e) {
      fill(out, errorBox(e));
    }
  }
  await reload();
  olderButton.addEventListener('click', () => busy(olderButton, async () => {
    const page = await api(`/conversations/${id}/messages?limit=100&after=${encodeURIComponent(older)}`);
    page.items.forEach(put);
    older = page.next;
    olderButton.hidden = !older;
    log.firstElementChild?.scrollIntoView({ block: 'start' });
  }).catch((e) => fill(out, errorBox(e))));

  async function refreshMessage(messageId) {
    try {
      put(await api(`/messages/${messageId}`));
    } catch (e) {
      fill(out, errorBox(e));
    }
  }

  text.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) {
      ev.preventDefault();
      box.requestSubmit();
    }
  });
  box.addEventListener('submit', (ev) => {
    ev.preventDefault();
    if (!text.value.trim() && !files.files.length) return;
    busy(send, async () => {
      const attachments = await Promise.all([...files.files].map(async (f) => ({
        name: f.name,
        mime_type: f.type || 'application/octet-stream',
        data: await base64Of(f),
      })));
      const answer = await api(`/conversations/${id}/messages`, {
        body: { text: text.value, idempotency_key: crypto.randomUUID(), attachments },
      });
      text.value = '';
      files.value = '';
      await refreshMessage(answer.message_id);
      log.lastElementChild?.scrollIntoView({ block: 'end' });
      text.focus();
    }).catch((e) => fill(out, errorBox(e)));
  });

  // History sync: queue a job, follow its pages (history_synced events) and its state.
  let syncJob = null;
  let syncTotals = { fetched: 0, stored: 0 };
  let syncTimer = null;
  async function followSync() {
    if (!syncJob) return;
    try {
      const job = await api(`/jobs/${syncJob}`);
      const counts = `${syncTotals.stored} new of ${syncTotals.fetched} fetched`;
      if (job.state === 'completed') {
        fill(progress, `History synced: ${counts}.`);
        progress.dataset.state = 'done';
        syncJob = null;
        syncButton.disabled = false;
        reload();
        return;
      }
      if (job.state === 'discarded' || job.state === 'cancelled') {
        fill(progress, errorBox(`History sync ${job.state}: ${job.last_error || 'no reason given'}`));
        syncJob = null;
        syncButton.disabled = false;
        return;
      }
      fill(progress, h('progress', { 'aria-label': 'History sync' }), ` syncing (${job.state}, attempt ${job.attempt}): ${counts}`);
    } catch (e) {
      fill(progress, errorBox(e));
    }
    syncTimer = setTimeout(followSync, 1000);
  }
  syncButton.addEventListener('click', () => {
    syncButton.disabled = true;
    syncTotals = { fetched: 0, stored: 0 };
    fill(progress, h('progress', { 'aria-label': 'History sync' }), ' queued');
    progress.dataset.state = 'running';
    api(`/accounts/${conversation.account_id}/history`, { body: { thread_key: conversation.thread_key, limit: 100 } })
      .then((r) => {
        syncJob = r.job_id;
        followSync();
      })
      .catch((e) => {
        syncButton.disabled = false;
        fill(progress, errorBox(e));
      });
  });

  const later = debounce(reload, 100);
  return {
    onEvent(name, e) {
      if ((name === 'message_received' || name === 'message_queued') && e.conversation_id === id) later();
      else if (['message_sent', 'message_status_changed', 'message_edited', 'message_deleted', 'send_attempted'].includes(name)
        && messages.has(e.message_id)) refreshMessage(e.message_id);
      else if (name === 'message_merged' && messages.has(e.kept)) {
        log.querySelector(`[data-message="${e.removed}"]`)?.remove();
        messages.delete(e.removed);
        refreshMessage(e.kept);
      } else if (name === 'conversation_status_changed' && e.conversation_id === id) fill(statusBadge, badge(e.status));
      else if (name === 'conversation_assigned' && e.conversation_id === id) {
        fill(assignee, e.assignee ? `assigned to ${e.assignee}` : 'unassigned');
        claim.textContent = e.assignee === me ? 'Release' : 'Claim';
      } else if (name === 'history_synced' && e.job_id === syncJob) {
        syncTotals.fetched += e.fetched;
        syncTotals.stored += e.stored;
        later();
      }
    },
    dispose() {
      clearTimeout(syncTimer);
    },
  };
}

// ----- sends and their audit -----

const JOB_STATES = ['available', 'running', 'retryable', 'completed', 'discarded', 'cancelled'];

export async function sends(ctx, root, [accountId], query) {
  const state = query.get('state') || '';
  const since = query.get('since') || '';
  const stateSel = h('select', { name: 'state' }, h('option', { value: '' }, 'any'),
    JOB_STATES.map((s) => h('option', { value: s, selected: s === state }, s === 'discarded' ? 'failed (dead letter)' : s)));
  const sinceInput = h('input', { type: 'date', name: 'since', value: since });
  const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter sends' },
    field('State', stateSel), field('Since', sinceInput), h('button', { type: 'submit' }, 'Filter'));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    if (stateSel.value) q.set('state', stateSel.value);
    if (sinceInput.value) q.set('since', sinceInput.value);
    ctx.go(`#/sends/${accountId}${q.toString() ? `?${q}` : ''}`);
  });
  const body = h('tbody');
  const out = status();
  fill(root,
    heading(`Sends: ${accountName(ctx, accountId)}`),
    form, out,
    h('div', { class: 'table-wrap' }, h('table', { class: 'list', id: 'sends' },
      h('thead', {}, h('tr', {}, ['Message', 'State', 'Attempts', 'Last error', 'Queued', 'Next run'].map((t) => h('th', { scope: 'col' }, t)))),
      body)));

  async function refresh() {
    try {
      // The API filters by kind and date where it can; the page filters again, so that it
      // shows the same with an API that does not.
      const q = new URLSearchParams({ account: accountId, kind: 'send' });
      if (state) q.set('state', state);
      const from = since ? new Date(`${since}T00:00:00`).getTime() : 0;
      if (since) q.set('since', new Date(from).toISOString());
      const jobs = (await all(`/jobs?${q}`, 1000))
        .filter((j) => j.kind === 'send' && new Date(j.created_at).getTime() >= from);
      fill(body, jobs.length ? jobs.map((j) => h('tr', { 'data-job': j.id, 'data-state': j.state },
        h('th', { scope: 'row' }, h('a', { href: `#/job/${j.id}` }, short(j.message_id))),
        h('td', {}, badge(j.state)),
        h('td', {}, `${j.attempt}/${j.max_attempts}`),
        h('td', { class: 'error-text' }, j.last_error || ''),
        h('td', {}, time(j.created_at)),
        h('td', {}, ['completed', 'discarded', 'cancelled'].includes(j.state) ? '' : time(j.run_at)))) :
        h('tr', {}, h('td', { colspan: 6 }, 'No sends match.')));
    } catch (e) {
      fill(out, errorBox(e));
    }
  }
  const later = debounce(refresh, 300);
  await refresh();
  return {
    onEvent(name, e) {
      if (['send_attempted', 'message_queued', 'message_sent', 'message_status_changed'].includes(name) && e.account_id === accountId) later();
    },
  };
}

/** `#/send/<message id>`: finds the send job of a message, then shows its audit. */
export async function sendOfMessage(ctx, root, [messageId]) {
  const m = await api(`/messages/${messageId}`);
  const jobs = await all(`/jobs?account=${m.account_id}`, 5000);
  const job = jobs.find((j) => j.kind === 'send' && j.message_id === messageId);
  if (!job) {
    fill(root, heading('Send'), h('p', {}, 'This message has no send job (it was not sent from here).'));
    return {};
  }
  ctx.go(`#/job/${job.id}`, true);
  return {};
}

export async function job(ctx, root, [id]) {
  const out = status();
  const summary = h('dl', { class: 'summary', id: 'job-summary' });
  const attempts = h('tbody');
  const actions = h('div', { class: 'actions' });
  fill(root,
    heading(`Send ${short(id)}`),
    summary, actions, out,
    h('h2', {}, 'Attempts'),
    h('div', { class: 'table-wrap' }, h('table', { class: 'list', id: 'attempts' },
      h('thead', {}, h('tr', {}, ['#', 'Outcome', 'Started', 'Finished', 'Worker', 'Error'].map((t) => h('th', { scope: 'col' }, t)))),
      attempts)));
  let messageId = null;

  async function refresh() {
    try {
      const [j, list] = await Promise.all([api(`/jobs/${id}`), api(`/jobs/${id}/attempts`)]);
      messageId = j.message_id;
      const message = j.message_id ? await api(`/messages/${j.message_id}`).catch(() => null) : null;
      const item = (k, v) => [h('dt', {}, k), h('dd', {}, v)];
      fill(summary,
        item('State', badge(j.state, j.state === 'discarded' ? 'failed (dead letter)' : j.state)),
        item('Message', message ? [badge(message.status), ' ', h('a', { href: `#/chat/${message.conversation_id}` }, 'open the conversation')] : short(j.message_id)),
        item('Account', accountName(ctx, j.account_id)),
        item('Attempts', `${j.attempt} of at most ${j.max_attempts}`),
        item('Queued', time(j.created_at)),
        j.last_error ? item('Last error', h('span', { class: 'error-text' }, j.last_error)) : null);
      fill(actions, j.state === 'discarded' ? h('button', {
        type: 'button',
        class: 'primary',
        id: 'retry',
        onclick: (ev) => busy(ev.target, async () => {
          await api(`/jobs/${id}/retry`, { method: 'POST' });
          refresh();
        }).catch((e) => fill(out, errorBox(e))),
      }, 'Retry') : null, h('a', { href: `#/sends/${j.account_id}`, class: 'btn' }, 'All sends of the account'));
      fill(attempts, list.length ? list.map((a) => h('tr', { 'data-attempt': a.attempt, 'data-outcome': a.outcome },
        h('th', { scope: 'row' }, String(a.attempt)),
        h('td', {}, badge(a.outcome)),
        h('td', {}, time(a.started_at)),
        h('td', {}, a.finished_at ? time(a.finished_at) : ''),
        h('td', { class: 'muted' }, a.worker),
        h('td', { class: 'error-text' }, a.error || ''))) :
        h('tr', {}, h('td', { colspan: 6 }, 'No attempt yet.')));
    } catch (e) {
      fill(out, errorBox(e));
    }
  }
  const later = debounce(refresh, 200);
  await refresh();
  return {
    onEvent(name, e) {
      if ((e && e.job_id === id) || (e && messageId && e.message_id === messageId)) later();
    },
  };
}

// ----- workers -----

export async function workers(ctx, root) {
  const out = status();
  const health = h('p', { id: 'health' });
  const list = h('div', { id: 'workers' });
  fill(root, heading('Workers and loops'), health, out, list,
    h('p', { class: 'muted' }, 'Each worker writes its loops’ state with its heartbeat; this page reads it again every 3 seconds.'));
  let timer = null;
  async function refresh() {
    try {
      const [ws, h2] = await Promise.all([api('/workers'), fetch('/healthz', { cache: 'no-store' }).then((r) => r.json())]);
      fill(health, 'This worker: ', badge(h2.status === 'ok' ? 'healthy' : 'failed', h2.status === 'ok' ? 'healthy' : `failed: ${(h2.failed_loops || []).join(', ')}`));
      fill(list, ws.map((w) => h('section', { class: 'card worker', 'data-worker': w.id },
        h('h2', {}, w.id, ' ', badge(w.alive ? 'alive' : 'gone')),
        h('p', { class: 'muted' }, `${w.host}, pid ${w.pid}, version ${w.version}; started `, time(w.started_at), ', last beat ', time(w.beat_at),
          `; ${w.accounts.length} account(s)`),
        h('div', { class: 'table-wrap' }, h('table', { class: 'list loops' },
          h('thead', {}, h('tr', {}, ['Loop', 'State', 'Restarts', 'Last error'].map((t) => h('th', { scope: 'col' }, t)))),
          h('tbody', {}, w.loops.map((l) => h('tr', { 'data-loop': l.name, 'data-restarts': l.restarts },
            h('th', { scope: 'row' }, l.name.startsWith('account:') ? `account ${accountName(ctx, l.name.slice(8))}` : l.name),
            h('td', {}, badge(l.state)),
            h('td', { class: 'restarts' }, String(l.restarts)),
            h('td', { class: 'error-text' }, l.last_error || '')))))))));
    } catch (e) {
      fill(out, errorBox(e));
    }
    timer = setTimeout(refresh, 3000);
  }
  await refresh();
  return { dispose() { clearTimeout(timer); } };
}

// ----- dead letter -----

export async function deadLetter(ctx, root) {
  const out = status();
  const body = h('tbody');
  fill(root, heading('Dead letter'),
    h('p', { class: 'muted' }, 'Jobs that failed their last attempt. Retry puts one back in the queue (its message is pending again).'),
    out,
    h('div', { class: 'table-wrap' }, h('table', { class: 'list', id: 'dead-letter' },
      h('thead', {}, h('tr', {}, ['Job', 'Kind', 'Account', 'Attempts', 'Last error', 'Failed', ''].map((t) => h('th', { scope: 'col' }, t)))),
      body)));
  async function refresh() {
    try {
      const jobs = await all('/jobs?state=discarded', 1000);
      fill(body, jobs.length ? jobs.map((j) => h('tr', { 'data-job': j.id },
        h('th', { scope: 'row' }, h('a', { href: `#/job/${j.id}` }, short(j.id))),
        h('td', {}, j.kind),
        h('td', {}, j.account_id ? accountName(ctx, j.account_id) : ''),
        h('td', {}, `${j.attempt}/${j.max_attempts}`),
        h('td', { class: 'error-text' }, j.last_error || ''),
        h('td', {}, time(j.updated_at)),
        h('td', {}, h('button', {
          type: 'button',
          class: 'retry',
          onclick: (ev) => busy(ev.target, async () => {
            await api(`/jobs/${j.id}/retry`, { method: 'POST' });
            fill(out, `Job ${short(j.id)} is queued again.`);
            refresh();
          }).catch((e) => fill(out, errorBox(e))),
        }, 'Retry')))) : h('tr', {}, h('td', { colspan: 7 }, 'The dead letter is empty.')));
    } catch (e) {
      fill(out, errorBox(e));
    }
  }
  const later = debounce(refresh, 300);
  await refresh();
  return {
    onEvent(name) {
      if (name === 'send_attempted' || name === 'message_status_changed') later();
    },
  };
}
