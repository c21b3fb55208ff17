// Requests with a fresh idempotency key each, made cheaply for autocannon.
//
// autocannon's way to vary requests (`setupRequest`) rebuilds the whole request object and
// its bytes on every request. That costs the load generator's thread clearly more CPU per
// request than a static request (bench/results/HISTORY.md has the figures), CPU the servers
// under test then do not get on a shared host. Here each request's bytes are one string
// concatenation from a fixed head — the same bytes autocannon's own builder writes
// (test/bench-unit.test.ts compares them).
import type autocannon from 'autocannon';

/**
 * The bytes of a request to `url` (its host and path) as autocannon's request builder writes
 * them: request line, Host, Connection: keep-alive, the headers in the order given, then
 * Content-Length and the body. `extra` is one more header, after `headers`.
 */
export function httpRequestBytes(
  url: string,
  method: string,
  headers: Readonly<Record<string, string>>,
): (body: string, extra?: readonly [string, string]) => Buffer {
  const { host, pathname, search } = new URL(url);
  const head = `${method} ${pathname}${search} HTTP/1.1\r\nHost: ${host}\r\nConnection: keep-alive\r\n${Object.entries(
    headers,
  )
    .map(([name, value]) => `${name}: ${value}\r\n`)
    .join('')}`;
  return (body, extra) =>
    Buffer.from(
      `${head}${extra ? `${extra[0]}: ${extra[1]}\r\n` : ''}Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
    );
}

/** Where an autocannon 9 client takes its next request's bytes (lib/httpClient.js, lib/requestIterator.js). */
interface RequestIteratorInternals {
  currentRequest: { requestBuffer: Buffer };
  nextRequest: () => unknown;
}

/**
 * Makes an autocannon client (pass it from `setupClient`) send the bytes `next` returns, one call
 * per request. autocannon has no public option for this: the client writes its request
 * iterator's `currentRequest.requestBuffer` and asks `nextRequest()` for the next one. That is
 * checked here, so an autocannon upgrade that moves it fails with this message, not silently.
 */
export function takeRequestsFrom(client: autocannon.Client, next: () => Buffer): void {
  const it = (client as unknown as { requestIterator?: Partial<RequestIteratorInternals> }).requestIterator;
  if (!it || typeof it.nextRequest !== 'function' || !it.currentRequest) {
    throw new Error(
      'autocannon: client.requestIterator.nextRequest not found (autocannon internals changed); ' +
        'run bench:ingest with --requests setup-request',
    );
  }
  const iterator = it as RequestIteratorInternals;
  iterator.currentRequest = { requestBuffer: next() };
  iterator.nextRequest = () => {
    iterator.currentRequest = { requestBuffer: next() };
    return iterator.currentRequest;
  };
}
