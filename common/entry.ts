// The order stream entry: its field names, its encoding, its decoding and field lookup. Ingest's
// accept script (its XADD is built from these names), the DLQ replay, the workers and the dead
// letters all go through this file, so a field is added here and nowhere else.
import { checkOrder, idempotencyKeyProblem, inexactNumbers, type Order } from './order.js';

/** The entry layout's version (field `v`): a decoder refuses any other. */
const ENTRY_SCHEMA_VERSION = '1';

/** The entry's field names. */
export const ENTRY_FIELD = {
  version: 'v',
  client: 'c',
  key: 'k',
  order: 'o',
  /** Optional: the W3C `traceparent` of the request that accepted the order (tracing on only). */
  trace: 't',
} as const;

/** What an entry carries besides its version, as written. */
export interface EntryValues {
  clientId: string;
  idempotencyKey: string;
  /** canonicalOrderJson(order): the order as the entry holds it. */
  canonical: string;
  /** The accepting request's `traceparent`; the entry gets a `t` field only when it is set. */
  traceparent?: string | undefined;
}

/**
 * The fields after `v`, in XADD order, each with where its value comes from: encodeEntry,
 * putEntryValues and entryXaddLua all walk this list, so they cannot disagree.
 */
const VALUE_FIELDS: ReadonlyArray<readonly [name: string, value: (e: EntryValues) => string]> = [
  [ENTRY_FIELD.client, (e) => e.clientId],
  [ENTRY_FIELD.key, (e) => e.idempotencyKey],
  [ENTRY_FIELD.order, (e) => e.canonical],
];

/** How many values putEntryValues writes per entry. */
export const ENTRY_VALUE_COUNT = VALUE_FIELDS.length;

/**
 * Writes an entry's values (not their names) into `out` from index `at`; returns the next
 * index. Ingest's accept call passes them to its script, which pairs them with the names
 * (entryXaddLua).
 */
export function putEntryValues(out: unknown[], at: number, e: EntryValues): number {
  for (const [, value] of VALUE_FIELDS) out[at++] = value(e);
  return at;
}

/**
 * putEntryValues, then the trace field's value ('' for none): the traced accept call's values.
 * A separate list, so the untraced call (tracing off) sends exactly what it sent before.
 */
export function putTracedEntryValues(out: unknown[], at: number, e: EntryValues): number {
  at = putEntryValues(out, at, e);
  out[at++] = e.traceparent ?? '';
  return at;
}

/** An entry's flat field list, in XADD order: v, c, k, o, then t when the entry has a trace context. */
export function encodeEntry(e: EntryValues): string[] {
  const fields: string[] = [ENTRY_FIELD.version, ENTRY_SCHEMA_VERSION];
  for (const [name, value] of VALUE_FIELDS) fields.push(name, value(e));
  if (e.traceparent) fields.push(ENTRY_FIELD.trace, e.traceparent);
  return fields;
}

/**
 * The XADD field/value arguments of an entry in a Lua script: names and version are literals,
 * the values are ARGV[<base> + first], ARGV[<base> + first + 1], … in putEntryValues order.
 */
export function entryXaddLua(base: string, first: number, traced = false): string {
  let out = `'${ENTRY_FIELD.version}', '${ENTRY_SCHEMA_VERSION}'`;
  VALUE_FIELDS.forEach(([name], i) => {
    out += `, '${name}', ARGV[${base} + ${first + i}]`;
  });
  if (traced) out += `, '${ENTRY_FIELD.trace}', ${entryTraceArgLua(base, first)}`;
  return out;
}

/** The Lua expression of the trace value in putTracedEntryValues order ('' for none). */
export function entryTraceArgLua(base: string, first: number): string {
  return `ARGV[${base} + ${first + ENTRY_VALUE_COUNT}]`;
}

/** The value of field `name` in a flat field list (the first one), or undefined. */
export function entryField(fields: readonly string[] | null | undefined, name: string): string | undefined {
  if (!fields) return undefined;
  for (let i = 0; i + 1 < fields.length; i += 2) if (fields[i] === name) return fields[i + 1];
  return undefined;
}

/** An entry's own fields, checked; the order is its text as the entry holds it, not parsed. */
export interface EntryHeader {
  clientId: string;
  idempotencyKey: string;
  /** The `o` field: canonicalOrderJson of the order ingest validated. */
  orderJson: string;
}

export type HeaderResult = { ok: true; header: EntryHeader } | { ok: false; reason: string };

/**
 * Reads and checks an entry's own fields (version, client, key, order present) without parsing
 * the order: the workers' apply step trusts what ingest validated under this version and lets
 * PostgreSQL unpack the order; decodeEntry adds the full check. Never throws.
 */
export function readEntryHeader(fields: readonly string[] | null | undefined): HeaderResult {
  if (!fields) return { ok: false, reason: 'entry has no fields (payload deleted)' };
  // A plain scan, no Map: this runs once per order on the apply path. A repeated field: last wins.
  let v: string | undefined;
  let clientId: string | undefined;
  let idempotencyKey: string | undefined;
  let raw: string | undefined;
  for (let i = 0; i + 1 < fields.length; i += 2) {
    const value = fields[i + 1]!; // in bounds: the loop checks i + 1
    switch (fields[i]) {
      case ENTRY_FIELD.version:
        v = value;
        break;
      case ENTRY_FIELD.client:
        clientId = value;
        break;
      case ENTRY_FIELD.key:
        idempotencyKey = value;
        break;
      case ENTRY_FIELD.order:
        raw = value;
        break;
    }
  }
  if (v !== ENTRY_SCHEMA_VERSION)
    return { ok: false, reason: `unsupported entry schema version ${JSON.stringify(v ?? null)}` };
  if (!clientId) return { ok: false, reason: `missing field ${ENTRY_FIELD.client} (client id)` };
  if (idempotencyKey === undefined || idempotencyKeyProblem(idempotencyKey) !== undefined) {
    return { ok: false, reason: `missing or invalid field ${ENTRY_FIELD.key} (idempotency key)` };
  }
  if (raw === undefined) return { ok: false, reason: `missing field ${ENTRY_FIELD.order} (order)` };
  return { ok: true, header: { clientId, idempotencyKey, orderJson: raw } };
}

export interface DecodedEntry {
  clientId: string;
  idempotencyKey: string;
  order: Order;
}

export type DecodeResult = { ok: true; entry: DecodedEntry } | { ok: false; reason: string };

/** Decodes a stream entry's flat field list and validates its order as ingest does; never throws. */
export function decodeEntry(fields: readonly string[] | null | undefined): DecodeResult {
  const header = readEntryHeader(fields);
  if (!header.ok) return header;
  const { clientId, idempotencyKey, orderJson: raw } = header.header;
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch (e) {
    return { ok: false, reason: `field ${ENTRY_FIELD.order} is not JSON: ${(e as Error).message}` };
  }
  // Text without a `\u` escape cannot give a string holding NUL or a lone surrogate (raw control
  // characters are not JSON, and Redis replies are decoded as UTF-8): the per-string check can be
  // skipped, as ingest does for request bodies, and the usual order needs no more than the quick check.
  const escapeFree = !raw.includes('\\u');
  // Ingest's canonical text is JSON.stringify's: its numbers are always exact. The check keeps
  // decoding to ingest's verdict for any writer.
  const result = checkOrder(parsed, escapeFree, inexactNumbers(raw));
  if (!result.ok)
    return {
      ok: false,
      reason: `invalid order: ${result.errors.map((e) => `${e.path || '/'} ${e.message}`).join('; ')}`,
    };
  return { ok: true, entry: { clientId, idempotencyKey, order: result.order } };
}
