// The load generator's HTTP/1.1 client: keep-alive connections, one request at a time on each, a
// request written as one string and an answer parsed only as far as the benchmark reads it (status,
// Content-Length or chunked body, Retry-After, Idempotent-Replayed, Connection: close). A general
// client (undici) cost the generator far more CPU per request than this one (HISTORY.md in
// bench/results), so on a small machine the generator, not the server, set a burst's pace.
import { connect, type Socket } from 'node:net';

export interface Answer {
  status: number;
  /** Retry-After in seconds, when the answer had one as a number. */
  retryAfterS: number | undefined;
  replayed: boolean;
  /** The body as text; only kept for answers of status ≥ 300 (error samples). */
  body: string;
  /** When the request was written to its socket, and when its answer's last byte was parsed (performance.now ms). */
  sentAt: number;
  receivedAt: number;
}

/** An attempt that got no answer: 'timeout' (none within the timeout) or 'net' (the connection failed). */
export class AttemptError extends Error {
  constructor(
    readonly kind: 'timeout' | 'net',
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

interface Pending {
  resolve: (a: Answer) => void;
  reject: (e: AttemptError) => void;
  sentAt: number;
}

const CRLF2 = Buffer.from('\r\n\r\n');

/** One keep-alive connection; connects on first use and again after it was closed. */
class Connection {
  private socket: Socket | undefined;
  private pending: Pending | undefined;
  private buf: Buffer = Buffer.alloc(0);
  // The answer being parsed: its head once read, then how much body is still due.
  private head: { status: number; retryAfterS: number | undefined; replayed: boolean; close: boolean } | undefined;
  private bodyLeft = 0;
  private chunked = false;
  private body: Buffer[] = [];

  constructor(
    private readonly host: string,
    private readonly port: number,
  ) {}

  request(bytes: string, now: number): Promise<Answer> {
    return new Promise<Answer>((resolve, reject) => {
      this.pending = { resolve, reject, sentAt: now };
      (this.socket ?? this.open()).write(bytes);
    });
  }

  /** Fails the outstanding attempt as timed out if it was sent before `before`. */
  expire(before: number): void {
    if (this.pending && this.pending.sentAt < before)
      this.fail(new AttemptError('timeout', 'timeout', 'no answer in time'));
  }

  close(): void {
    this.socket?.destroy();
    this.socket = undefined;
  }

  /** Connects now if not connected, so a later request finds the connection open. */
  warm(): void {
    if (!this.socket) this.open();
  }

  private open(): Socket {
    const socket = connect({ host: this.host, port: this.port, noDelay: true });
    this.socket = socket;
    this.buf = Buffer.alloc(0);
    this.head = undefined;
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (e: Error & { code?: string }) => {
      if (this.socket === socket) this.fail(new AttemptError('net', e.code ?? e.name, e.message));
    });
    socket.on('close', () => {
      if (this.socket === socket) this.fail(new AttemptError('net', 'closed', 'the connection closed'));
    });
    return socket;
  }

  /** The attempt failed: its connection cannot be reused (a late answer would be misread). */
  private fail(e: AttemptError): void {
    const p = this.pending;
    this.pending = undefined;
    this.close();
    p?.reject(e);
  }

  private onData(chunk: Buffer): void {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    for (;;) {
      if (!this.head) {
        const end = this.buf.indexOf(CRLF2);
        if (end < 0) return;
        if (!this.parseHead(this.buf.toString('latin1', 0, end))) return;
        this.buf = this.buf.subarray(end + 4);
      }
      if (this.chunked ? !this.readChunks() : !this.readBody()) return;
      this.finish();
      if (this.buf.length === 0) return;
    }
  }

  private parseHead(text: string): boolean {
    const lines = text.split('\r\n');
    const status = Number(lines[0]?.slice(9, 12));
    if (!Number.isInteger(status)) {
      this.fail(new AttemptError('net', 'parse', `not an HTTP answer: ${lines[0]?.slice(0, 40)}`));
      return false;
    }
    let retryAfterS: number | undefined;
    let replayed = false;
    let close = false;
    this.bodyLeft = 0;
    this.chunked = false;
    for (let i = 1; i < lines.length; i++) {
      const line = lines[i] ?? '';
      const colon = line.indexOf(':');
      const name = line.slice(0, colon).toLowerCase();
      const value = line.slice(colon + 1).trim();
      if (name === 'content-length') this.bodyLeft = Number(value);
      else if (name === 'transfer-encoding') this.chunked = value.toLowerCase().includes('chunked');
      else if (name === 'retry-after') {
        const n = Number(value);
        if (value !== '' && Number.isFinite(n) && n >= 0) retryAfterS = n;
      } else if (name === 'idempotent-replayed') replayed = value === 'true';
      else if (name === 'connection') close = value.toLowerCase() === 'close';
    }
    this.head = { status, retryAfterS, replayed, close };
    this.body = [];
    return true;
  }

  private keep(part: Buffer): void {
    if ((this.head?.status ?? 0) >= 300) this.body.push(part);
  }

  private readBody(): boolean {
    const take = Math.min(this.bodyLeft, this.buf.length);
    if (take > 0) this.keep(this.buf.subarray(0, take));
    this.buf = this.buf.subarray(take);
    this.bodyLeft -= take;
    return this.bodyLeft === 0;
  }

  /** Chunked body: size line, data, CRLF, … up to the zero-size chunk and its (empty) trailer. */
  private readChunks(): boolean {
    for (;;) {
      if (this.bodyLeft > 0) {
        if (this.buf.length < this.bodyLeft + 2) return false;
        this.keep(this.buf.subarray(0, this.bodyLeft));
        this.buf = this.buf.subarray(this.bodyLeft + 2);
        this.bodyLeft = 0;
      }
      const eol = this.buf.indexOf('\r\n');
      if (eol < 0) return false;
      const size = Number.parseInt(this.buf.toString('latin1', 0, eol), 16);
      if (size === 0) {
        const end = this.buf.indexOf(CRLF2, eol);
        if (end === eol) this.buf = this.buf.subarray(eol + 4);
        else if (end < 0) return false;
        else this.buf = this.buf.subarray(end + 4);
        return true;
      }
      this.buf = this.buf.subarray(eol + 2);
      this.bodyLeft = size;
    }
  }

  private finish(): void {
    const head = this.head;
    const p = this.pending;
    this.head = undefined;
    this.pending = undefined;
    if (!head) return;
    if (head.close) this.close();
    p?.resolve({
      status: head.status,
      retryAfterS: head.retryAfterS,
      replayed: head.replayed,
      body: this.body.length > 0 ? Buffer.concat(this.body).toString('utf8') : '',
      sentAt: p.sentAt,
      receivedAt: performance.now(),
    });
  }
}

/**
 * `size` connections to `url`'s host. The caller keeps at most `size` attempts outstanding and
 * passes each a connection index that is free (loadgen.ts does, with its own FIFO).
 */
export class Http1Pool {
  private readonly connections: Connection[];
  private readonly free: number[];
  private readonly timer: NodeJS.Timeout;
  private readonly hostHeader: string;

  constructor(
    url: string,
    size: number,
    private readonly timeoutMs: number,
  ) {
    const u = new URL(url);
    const host = u.hostname.replace(/^\[|\]$/g, '');
    const port = Number(u.port || 80);
    this.hostHeader = u.host;
    this.connections = Array.from({ length: size }, () => new Connection(host, port));
    this.free = Array.from({ length: size }, (_, i) => size - 1 - i);
    // One timer for every connection: attempts older than the timeout fail.
    this.timer = setInterval(
      () => {
        const before = performance.now() - this.timeoutMs;
        for (const c of this.connections) c.expire(before);
      },
      Math.max(10, Math.min(100, timeoutMs / 4)),
    );
    this.timer.unref();
  }

  /**
   * POSTs `body` on a free connection (the caller guarantees one is free). With `clockOffsetMs`
   * (the host's monotonic clock minus performance.now()), the request carries its send time on
   * that clock as `x-bench-sent`, which ingest's timeline reads.
   */
  async post(path: string, headers: string, body: string, clockOffsetMs?: number): Promise<Answer> {
    const i = this.free.pop();
    const c = i === undefined ? undefined : this.connections[i];
    if (i === undefined || c === undefined) throw new Error('Http1Pool: no free connection');
    try {
      const now = performance.now();
      const stamp = clockOffsetMs === undefined ? '' : `x-bench-sent: ${(now + clockOffsetMs).toFixed(3)}\r\n`;
      return await c.request(
        `POST ${path} HTTP/1.1\r\nhost: ${this.hostHeader}\r\n${headers}${stamp}content-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
        now,
      );
    } finally {
      this.free.push(i);
    }
  }

  /** Opens every connection now instead of at its first request. */
  openAll(): void {
    for (const c of this.connections) c.warm();
  }

  close(): void {
    clearInterval(this.timer);
    for (const c of this.connections) c.close();
  }
}
