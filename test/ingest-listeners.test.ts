// Copies of a listening socket (ingest/listeners.ts): each takes connections on its own and keeps
// the socket's listen queue size.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { Agent, createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { copyListeners } from '../ingest/listeners.js';
import { http } from './support/http.js';

const answering = (body: string): Server => createServer((_req, res) => res.end(body));
const closeAll = (servers: Server[]) =>
  Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));

test('copies keep serving the port when the first listener closes, keep its backlog, and closing all frees it', async () => {
  const first = answering('first');
  await new Promise<void>((resolve) => first.listen({ port: 0, host: '127.0.0.1', backlog: 37 }, resolve));
  const { port } = first.address() as AddressInfo;
  const url = `http://127.0.0.1:${port}`;
  const copies = await copyListeners(first, 2, 37, () => answering('copy'));
  assert.equal(copies.length, 2);
  const ss = spawnSync('ss', ['-ltnH', `sport = :${port}`], { encoding: 'utf8' });
  if (!ss.error && ss.status === 0) assert.equal(ss.stdout.trim().split(/\s+/)[2], '37', 'the backlog is kept');
  await closeAll([first]);
  // A new connection each time: a kept-alive one would say nothing about the listeners.
  const fresh = () => new Agent({ keepAlive: false });
  const res = await http(url, { path: '/', agent: fresh() });
  assert.equal(res.text, 'copy', 'a copy took the connection');
  await closeAll(copies);
  await assert.rejects(http(url, { path: '/', agent: fresh() }), /ECONNREFUSED/);
});

test('no copies asked: no child process, nothing returned', async () => {
  const first = answering('first');
  await new Promise<void>((resolve) => first.listen({ port: 0, host: '127.0.0.1' }, resolve));
  assert.deepEqual(await copyListeners(first, 0, 511, () => answering('copy')), []);
  await closeAll([first]);
});
