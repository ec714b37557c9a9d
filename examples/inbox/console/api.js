// The API client: every request carries the token as `Authorization: Bearer`. The token lives
// in this tab's sessionStorage only (gone when the tab closes; never in a URL, never in
// localStorage, never logged).

const KEY = 'inbox.token';

export const BASE = '/api/v1';

export function token() {
  return sessionStorage.getItem(KEY);
}

export function setToken(t) {
  if (t) sessionStorage.setItem(KEY, t);
  else sessionStorage.removeItem(KEY);
}

/** Called when the API refuses the token (the app shows the sign-in form again). */
let onUnauthorized = () => {};
export function whenUnauthorized(fn) {
  onUnauthorized = fn;
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** `api('/accounts')`, `api('/jobs/x/retry', {method: 'POST'})`, `api(path, {body: {...}})`:
 * the JSON answer, or an ApiError with the API's sentence. */
export async function api(path, { method, body, raw } = {}) {
  const headers = { Authorization: `Bearer ${token()}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(BASE + path, {
    method: method || (body !== undefined ? 'POST' : 'GET'),
    headers,
    body: body !== undefined ? JSON.stringify(body) : undefined,
    cache: 'no-store',
  });
  if (response.status === 401) {
    onUnauthorized();
    throw new ApiError(401, 'the token was refused: sign in again');
  }
  if (!response.ok) {
    let sentence = `${response.status} ${response.statusText}`;
    try {
      const json = await response.json();
      if (json && json.error) sentence = json.error;
    } catch {
      // not JSON: the status says it
    }
    throw new ApiError(response.status, sentence);
  }
  if (raw) return response;
  if (response.status === 204) return null;
  const type = response.headers.get('content-type') || '';
  return type.includes('json') ? response.json() : response.text();
}

/** Every page of a paged list (at most `max` items). */
export async function all(path, max = 1000) {
  const items = [];
  let after = null;
  do {
    const sep = path.includes('?') ? '&' : '?';
    const page = await api(`${path}${sep}limit=500${after ? `&after=${encodeURIComponent(after)}` : ''}`);
    items.push(...page.items);
    after = page.next;
  } while (after && items.length < max);
  return items;
}

/** Checks a token against the API without keeping it. */
export async function check(candidate) {
  const r = await fetch(`${BASE}/accounts?limit=1`, {
    headers: { Authorization: `Bearer ${candidate}` },
    cache: 'no-store',
  });
  return r.ok;
}
