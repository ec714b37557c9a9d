// The event stream, read with fetch: EventSource cannot send an Authorization header, and the
// token must not travel in a URL (URLs end up in logs). The stream is parsed as
// server-sent events; after a drop it reconnects with backoff and `Last-Event-ID`, so no
// event is missed (the API resumes from the durable feed).

import { BASE, token } from './api.js';

const LAST = 'inbox.last-event';

export class EventStream {
  /** `onEvent(name, data)` for every event; `onState('connecting'|'live'|'reconnecting')`. */
  constructor(onEvent, onState) {
    this.onEvent = onEvent;
    this.onState = onState;
    this.last = sessionStorage.getItem(LAST);
    this.abort = null;
    this.stopped = true;
    this.failures = 0;
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    this.run();
  }

  stop() {
    this.stopped = true;
    if (this.abort) this.abort.abort();
  }

  /** Drops the connection now (as a network failure would); it reconnects by itself. */
  drop() {
    if (this.abort) this.abort.abort();
  }

  async run() {
    while (!this.stopped) {
      this.onState(this.failures ? 'reconnecting' : 'connecting');
      try {
        await this.read();
      } catch (e) {
        if (e && e.gone) {
          // The feed no longer holds what follows our position: start again from its start.
          this.last = null;
          sessionStorage.removeItem(LAST);
        }
      }
      if (this.stopped) break;
      this.failures += 1;
      this.onState('reconnecting');
      const wait = Math.min(10000, 500 * 2 ** Math.min(this.failures, 5));
      await new Promise((resolve) => setTimeout(resolve, wait * (0.5 + Math.random() / 2)));
    }
  }

  async read() {
    this.abort = new AbortController();
    const headers = { Authorization: `Bearer ${token()}`, Accept: 'text/event-stream' };
    if (this.last) headers['Last-Event-ID'] = this.last;
    const response = await fetch(`${BASE}/events`, {
      headers,
      signal: this.abort.signal,
      cache: 'no-store',
    });
    if (response.status === 410) throw Object.assign(new Error('gone'), { gone: true });
    if (!response.ok || !response.body) throw new Error(`events: ${response.status}`);
    this.onState('live');
    this.failures = 0;
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    let frame = { id: null, event: 'message', data: [] };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let nl;
      while ((nl = buffer.search(/\r\n|\r|\n/)) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + (buffer.startsWith('\r\n', nl) ? 2 : 1));
        if (line === '') {
          if (frame.data.length) this.dispatch(frame);
          frame = { id: null, event: 'message', data: [] };
          continue;
        }
        if (line.startsWith(':')) continue; // keep-alive comment
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let v = colon < 0 ? '' : line.slice(colon + 1);
        if (v.startsWith(' ')) v = v.slice(1);
        if (field === 'id') frame.id = v;
        else if (field === 'event') frame.event = v;
        else if (field === 'data') frame.data.push(v);
      }
    }
  }

  dispatch(frame) {
    if (frame.event === 'error') {
      // The server ends the stream after an error event; reconnect from our position.
      this.drop();
      return;
    }
    if (frame.id) {
      this.last = frame.id;
      sessionStorage.setItem(LAST, frame.id);
    }
    let data = null;
    try {
      data = JSON.parse(frame.data.join('\n'));
    } catch {
      return;
    }
    // The feed's JSON: {position, event: {event: name, ...ids}, ...}.
    const event = data && data.event && typeof data.event === 'object' ? data.event : data;
    this.onEvent(frame.event, event);
  }
}
