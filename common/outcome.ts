// An order's outcome as the outcome streams carry it (one entry per order, after its COMMIT):
// the fields a downstream consumer reads and ingest's long-poll answers with. Field names are
// part of the contract (docs/workers.md, "Outcome streams").

/** Longest `?wait` of GET /v1/orders/:key (s): what ingest accepts and the client asks for. */
export const MAX_WAIT_SECONDS = 60;

/** An order's state as GET /v1/orders/:key answers it (the contract's `OrderState`). */
export interface OrderState {
  idempotency_key: string;
  status: 'queued' | 'applied' | 'rejected' | 'dead_lettered';
  order_ref?: string;
  /** Why it was rejected (`out_of_stock`) or dead-lettered. */
  reason?: string;
  applied_at?: string;
}

/** A final state: applied, rejected (with its reason) or dead-lettered (with its reason). */
export interface Outcome {
  clientId: string;
  idempotencyKey: string;
  status: 'applied' | 'rejected' | 'dead_lettered';
  reason?: string;
  /** `s<shard>-<entry id>` of the entry the order was applied from. */
  orderRef?: string;
  /** When it was applied (ISO 8601), for applied and rejected orders. */
  appliedAt?: string;
}

/** The stream entry's field/value list. */
export function outcomeFields(o: Outcome): string[] {
  return pushOutcomeFields([], o.clientId, o.idempotencyKey, o.status, o.reason, o.orderRef, o.appliedAt);
}

/**
 * outcomeFields appended to `out` from its values. The worker's publish script
 * (workers/outcomes.ts) writes the same fields in the same order; test/outcomes-publish.test.ts
 * holds the two equal.
 */
function pushOutcomeFields(
  out: string[],
  clientId: string,
  idempotencyKey: string,
  status: Outcome['status'],
  reason: string | undefined,
  orderRef: string | undefined,
  appliedAt: string | undefined,
): string[] {
  out.push('client', clientId, 'key', idempotencyKey, 'status', status);
  if (reason !== undefined) out.push('reason', reason);
  if (orderRef !== undefined) out.push('order_ref', orderRef);
  if (appliedAt !== undefined) out.push('applied_at', appliedAt);
  return out;
}

const STATUSES = new Set(['applied', 'rejected', 'dead_lettered']);

/** An entry's fields read back; undefined when they are not an outcome. */
export function parseOutcome(fields: readonly string[]): Outcome | undefined {
  const f: Record<string, string> = {};
  for (let i = 0; i + 1 < fields.length; i += 2) f[fields[i]!] = fields[i + 1]!; // in bounds: the loop checks i + 1
  const { client, key, status } = f;
  if (client === undefined || key === undefined || status === undefined || !STATUSES.has(status)) return undefined;
  return {
    clientId: client,
    idempotencyKey: key,
    status: status as Outcome['status'],
    ...(f.reason !== undefined ? { reason: f.reason } : {}),
    ...(f.order_ref !== undefined ? { orderRef: f.order_ref } : {}),
    ...(f.applied_at !== undefined ? { appliedAt: f.applied_at } : {}),
  };
}
