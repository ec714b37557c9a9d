// Small DOM helpers: elements are built with `h`, text always goes in as text (never as HTML).

/** `h('a', {href: '#/x', class: 'btn'}, 'text', child)`: an element with attributes, event
 * listeners (`onclick: fn`) and children (strings become text nodes; null/false are skipped). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces the children of `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** The last 8 characters of an id, as the command line shows them. */
export function short(id) {
  return id ? '#' + String(id).replace(/-/g, '').slice(-8) : '';
}

/** A timestamp (milliseconds, or an RFC 3339 string) as local date and time. */
export function when(t) {
  if (t === null || t === undefined) return '';
  const d = new Date(typeof t === 'number' ? t : String(t));
  if (Number.isNaN(d.getTime())) return String(t);
  const today = new Date().toDateString() === d.toDateString();
  return today ? d.toLocaleTimeString() : d.toLocaleString();
}

/** A `<time>` element for a timestamp. */
export function time(t) {
  const d = new Date(typeof t === 'number' ? t : String(t));
  return h('time', { datetime: Number.isNaN(d.getTime()) ? null : d.toISOString() }, when(t));
}

/** A badge: `<span class="badge badge-KIND" data-state=STATE>TEXT</span>`. */
export function badge(state, text = state) {
  return h('span', { class: `badge badge-${String(state).replace(/[^a-z_]/g, '')}`, 'data-state': state }, text);
}

/** Coalesces calls: `fn` runs once, `ms` after the last call in a burst. */
export function debounce(fn, ms = 150) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

/** An error message for people, in a live region. */
export function errorBox(e) {
  return h('p', { class: 'error', role: 'alert' }, e instanceof Error ? e.message : String(e));
}
