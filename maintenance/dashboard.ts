// `surge dashboard`: Bull Board for the `maintenance` and `dlq-replay` queues on a local port.
// Bull Board and its fastify adapter are imported only here, when the command runs, so no other
// command pays for them.
import type { Config } from '../common/config.js';
import type { Logger } from '../common/log.js';
import { createReplayQueue } from './dlq.js';
import { bullConnection, createMaintenanceQueue } from './queues.js';

export interface DashboardOptions {
  host: string;
  /** 0 picks a free port. */
  port: number;
  /** Bull Board's read-only mode: no retry, promote, clean, pause or delete buttons (nor API routes). */
  readOnly: boolean;
  logger?: Logger;
}

export interface DashboardHandle {
  url: string;
  port: number;
  stop(): Promise<void>;
}

export async function startDashboard(config: Config, options: DashboardOptions): Promise<DashboardHandle> {
  const [{ createBullBoard }, { BullMQAdapter }, { FastifyAdapter }, { default: fastify }] = await Promise.all([
    import('@bull-board/api'),
    import('@bull-board/api/bullMQAdapter'),
    import('@bull-board/fastify'),
    import('fastify'),
  ]);
  const connection = bullConnection(config, 'surge-dashboard');
  // The same factories as the services, so the board's queues carry the same events cap and job options.
  const queues = [createMaintenanceQueue(config, connection), createReplayQueue(config, connection)];
  const app = fastify({ logger: false });
  const close = async () => {
    await app.close();
    for (const q of queues) await q.close();
    connection.disconnect();
  };
  try {
    const serverAdapter = new FastifyAdapter();
    createBullBoard({
      queues: queues.map((q) => new BullMQAdapter(q, { readOnlyMode: options.readOnly })),
      serverAdapter,
      options: { uiConfig: { boardTitle: `Surge ${config.redisPrefix}` } },
    });
    serverAdapter.setBasePath('/');
    await app.register(serverAdapter.registerPlugin(), { prefix: '/' });
    await app.listen({ host: options.host, port: options.port });
  } catch (e) {
    await close().catch(() => {});
    throw e;
  }
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : options.port;
  const host = options.host.includes(':') ? `[${options.host}]` : options.host;
  const url = `http://${host}:${port}/`;
  options.logger?.info(
    { url, port, readOnly: options.readOnly, queues: queues.map((q) => q.name) },
    `dashboard on ${url}`,
  );
  let stopping: Promise<void> | undefined;
  return {
    url,
    port,
    stop: () => {
      stopping ??= close();
      return stopping;
    },
  };
}
