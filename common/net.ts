// Loopback ports and readiness for processes this one starts (the stack's children, private servers).
import { createServer } from 'node:net';

/** A port free on 127.0.0.1 now: `preferred` when it is free, else any (0 = any). */
export function freePort(preferred = 0): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', (e: NodeJS.ErrnoException) => {
      if (preferred !== 0 && e.code === 'EADDRINUSE') freePort(0).then(resolve, reject);
      else reject(e);
    });
    srv.listen(preferred, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => resolve(typeof addr === 'object' && addr ? addr.port : preferred));
    });
  });
}

/** Whether `url` answers 2xx within a second (readiness probes of the processes we start). */
export async function httpOk(url: string): Promise<boolean> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
    await res.arrayBuffer();
    return res.ok;
  } catch {
    return false;
  }
}
