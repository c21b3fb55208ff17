// A long poll held for a while, without node:http's per-request state. For each open request
// node:http keeps its parser (native memory, most of it header slots), the request and response
// objects and a dozen bound listeners on the socket: more than the socket itself. A long poll needs
// none of it until it answers, so its socket is taken out of node:http the way an `upgrade` is
// (node's listeners off, the parser freed) and the answer is written on it by hand, with
// `Connection: close` (node:http no longer reads that connection). Only what node itself undoes on
// an upgrade is undone, and only when the socket is exactly as node:http left it; otherwise the
// request stays held the ordinary way.
import { STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import { Socket } from 'node:net';

/** What answering a request needs of its response (a ServerResponse is one). */
export interface Responder {
  readonly headersSent: boolean;
  readonly destroyed: boolean;
  /** `headers`: name, value, name, value, … */
  writeHead(status: number, headers: string[]): unknown;
  end(body: string | Buffer): unknown;
  destroy(): unknown;
}

interface NodeParser {
  incoming: unknown;
  finish(): unknown;
}

type FreeParser = (parser: NodeParser, req: IncomingMessage, socket: Socket) => void;

const freeParser = ((): FreeParser | undefined => {
  try {
    const common = createRequire(import.meta.url)('_http_common') as { freeParser?: unknown };
    return typeof common.freeParser === 'function' ? (common.freeParser as FreeParser) : undefined;
  } catch {
    return undefined;
  }
})();

/** node:http's own listeners on a server socket (lib/_http_server.js), by event: what an upgrade removes. */
const NODE_LISTENERS: ReadonlyArray<readonly [string, string]> = [
  ['data', 'bound socketOnData'],
  ['end', 'bound socketOnEnd'],
  ['close', 'bound socketOnClose'],
  ['drain', 'bound socketOnDrain'],
  ['error', 'socketOnError'],
  ['timeout', 'socketOnTimeout'],
  ['resume', 'onSocketResume'],
  ['pause', 'onSocketPause'],
];

const SOCKET = Socket.prototype;

/** Hears a held socket closed before its answer was written (the client went away). */
export interface HeldListener {
  closed(): void;
}

/** Each held socket's listener, for the one 'close' listener all held sockets share. */
const ends = new WeakMap<Socket, HeldListener>();

function onHeldClose(this: Socket): void {
  const listener = ends.get(this);
  ends.delete(this);
  listener?.closed();
}

/** The client half-closed: node:http ends such a connection too; its answer has nowhere to go. */
function onHeldEnd(this: Socket): void {
  this.destroy();
}

/** Bytes after the request (a pipelined one): not read, the answer closes the connection. */
function ignore(): void {}

/** The answer of a held request, written on its socket by hand. */
class HeldResponse implements Responder {
  headersSent = false;
  private head = '';

  constructor(
    private readonly socket: Socket,
    private readonly headOnly: boolean,
  ) {}

  get destroyed(): boolean {
    return this.socket.destroyed;
  }

  writeHead(status: number, headers: string[]): void {
    let head = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\n`;
    for (let i = 0; i + 1 < headers.length; i += 2) head += `${headers[i]}: ${headers[i + 1]}\r\n`;
    this.head = `${head}date: ${new Date().toUTCString()}\r\nconnection: close\r\n\r\n`;
    this.headersSent = true;
  }

  end(body: string | Buffer): void {
    const { socket } = this;
    ends.delete(socket);
    if (socket.destroyed) return;
    if (this.headOnly || body.length === 0) socket.write(this.head);
    else if (typeof body === 'string') socket.write(this.head + body);
    else {
      socket.write(this.head);
      socket.write(body);
    }
    // Closed once written, as node:http closes a `Connection: close` answer's socket (not left
    // half-open until the client closes its side).
    socket.destroySoon();
  }

  destroy(): void {
    ends.delete(this.socket);
    this.socket.destroy();
  }
}

/**
 * Takes a request's socket out of node:http: what answers it then, or undefined when it cannot
 * (the request is not alone on its connection, its body is still coming, node:http's listeners
 * are not the ones expected, the connection is gone); it then stays held the ordinary way.
 * Call it outside node:http's parsing (from a later event-loop turn). `listener` hears the socket
 * closed before the answer was written; it is not called after the answer.
 */
export function detach(req: IncomingMessage, res: ServerResponse, listener: HeldListener): Responder | undefined {
  const socket = req.socket as (Socket & { parser?: NodeParser | null; _httpMessage?: unknown }) | null;
  if (!freeParser || !socket || socket.destroyed || !req.complete || res.headersSent || res.writableEnded)
    return undefined;
  const parser = socket.parser;
  if (!parser || parser.incoming !== req || socket._httpMessage !== res) return undefined;
  const found: Array<readonly [string, (...args: unknown[]) => void]> = [];
  for (const [event, name] of NODE_LISTENERS) {
    const listener = socket.listeners(event).find((l) => l.name === name);
    if (!listener) return undefined;
    found.push([event, listener as (...args: unknown[]) => void]);
  }
  for (const [event, listener] of found) socket.removeListener(event, listener);
  // node:http overrides these on the socket (to take it back from the parser on a 'data'
  // listener): the prototype's again, assigned rather than deleted so the socket keeps its shape.
  Object.assign(socket, {
    on: SOCKET.on,
    addListener: SOCKET.addListener,
    prependListener: SOCKET.prependListener,
    setEncoding: SOCKET.setEncoding,
  });
  res.detachSocket(socket);
  parser.finish();
  freeParser(parser, req, socket);
  ends.set(socket, listener);
  socket.on('close', onHeldClose);
  socket.on('end', onHeldEnd);
  socket.on('data', ignore);
  // After node's error listener is gone, an error must still not throw: 'close' follows it.
  socket.on('error', ignore);
  return new HeldResponse(socket, req.method === 'HEAD');
}
