// More listeners on ingest's one listening socket. libuv (since 1.45) takes one new connection
// per event-loop turn from each listening handle; under a burst a turn serves hundreds of
// requests, so a thousand new connections wait seconds in the kernel's queue before the door sees
// their requests. Each copy here is another descriptor of the same socket, polled on its own, so
// n listeners take up to n connections per turn (and, with no connection waiting, the extra ones
// find none: a failed accept each). Node 20 can neither duplicate a descriptor nor set
// SO_REUSEPORT, so the copies come back from a short-lived child process the socket is passed to
// and returned from (child_process handle passing, SCM_RIGHTS). The raw handle is passed, not the
// server: a server passed to a child listens there, and could take connections nobody answers.
import { type SendHandle, spawn } from 'node:child_process';
import type { Server } from 'node:http';

/** How long one copy may take (a child process starting on a loaded machine). */
const TIMEOUT_MS = 10_000;
const RETURN_HANDLE = "process.on('message',(m,h)=>process.send(m,h));process.on('disconnect',()=>process.exit(0));";

/**
 * `count` more servers (from `make`) listening on `server`'s socket, whose listen queue holds
 * `backlog` (each listen call sets it). Rejects when the child cannot be started or does not
 * answer; the servers made so far are closed then.
 */
export async function copyListeners(
  server: Server,
  count: number,
  backlog: number,
  make: () => Server,
): Promise<Server[]> {
  if (count <= 0) return [];
  const child = spawn(process.execPath, ['-e', RETURN_HANDLE], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
  const copies: Server[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const handle = await new Promise<object>((resolve, reject) => {
        const timer = setTimeout(() => failed(new Error('the listener copy process did not answer')), TIMEOUT_MS);
        const failed = (why: unknown) => {
          clearTimeout(timer);
          child.removeListener('message', got);
          reject(why instanceof Error ? why : new Error(`the listener copy process exited (${String(why)})`));
        };
        const got = (_m: unknown, h: unknown) => {
          clearTimeout(timer);
          child.removeListener('error', failed);
          child.removeListener('exit', failed);
          resolve(h as object);
        };
        child.once('message', got);
        child.once('error', failed);
        child.once('exit', failed);
        // node:http keeps the listening handle as `_handle`; the typings do not list it.
        child.send('copy', (server as unknown as { _handle: SendHandle })._handle);
      });
      const copy = make();
      // The copy listens on the same socket again: with the backlog, or the kernel's queue would
      // shrink to Node's default.
      await new Promise<void>((resolve, reject) => {
        copy.once('error', reject);
        copy.listen(handle, backlog, () => {
          copy.removeListener('error', reject);
          resolve();
        });
      });
      copies.push(copy);
    }
    return copies;
  } catch (err) {
    for (const c of copies) c.close();
    throw err;
  } finally {
    if (child.connected) child.disconnect();
    child.kill();
  }
}
