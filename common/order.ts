// The order (v1): its schema, its validation (every failing field path), its canonical form and
// fingerprint. Ingest validates with it; the stream entry (common/entry.ts) carries its canonical
// form and the workers validate it again when they decode.
import { hash } from 'node:crypto';
import { Ajv, type ErrorObject } from 'ajv';
import addFormatsImport from 'ajv-formats';

export interface OrderItem {
  sku: string;
  qty: number;
  unit_price_cents: number;
}

export interface Order {
  customer_id: string;
  currency: string;
  items: OrderItem[];
  order_id?: string;
  placed_at?: string;
  metadata?: Record<string, unknown>;
}

export const LIMITS = {
  maxItems: 100,
  maxQty: 10000,
  maxUnitPriceCents: 100_000_000_000,
  maxMetadataBytes: 4096,
  maxIdempotencyKeyLength: 255,
  maxString: 64,
} as const;

export const ORDER_SCHEMA = {
  $id: 'https://surge.dev/schemas/order-v1.json',
  type: 'object',
  additionalProperties: false,
  required: ['customer_id', 'currency', 'items'],
  properties: {
    customer_id: { type: 'string', minLength: 1, maxLength: LIMITS.maxString },
    currency: { type: 'string', pattern: '^[A-Z]{3}$' },
    items: {
      type: 'array',
      minItems: 1,
      maxItems: LIMITS.maxItems,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['sku', 'qty', 'unit_price_cents'],
        properties: {
          sku: { type: 'string', minLength: 1, maxLength: LIMITS.maxString },
          qty: { type: 'integer', minimum: 1, maximum: LIMITS.maxQty },
          unit_price_cents: { type: 'integer', minimum: 0, maximum: LIMITS.maxUnitPriceCents },
        },
      },
    },
    order_id: { type: 'string', minLength: 1, maxLength: LIMITS.maxString },
    placed_at: { type: 'string', format: 'date-time' },
    metadata: { type: 'object' },
  },
} as const;

export interface FieldError {
  /** JSON pointer of the failing field, e.g. `/items/0/qty` ('' for the body itself). */
  path: string;
  message: string;
}

// ajv-formats is CommonJS with `exports.default`; under NodeNext the default import is the module.
const addFormats = ((addFormatsImport as unknown as { default?: unknown }).default ?? addFormatsImport) as (
  ajv: Ajv,
  formats: string[],
) => Ajv;

const ajv = new Ajv({ allErrors: true, strict: true });
addFormats(ajv, ['date-time']);
const validateSchema = ajv.compile(ORDER_SCHEMA);

function ajvErrors(errors: ErrorObject[] | null | undefined): FieldError[] {
  return (errors ?? []).map((e) => {
    if (e.keyword === 'additionalProperties') {
      const extra = (e.params as { additionalProperty: string }).additionalProperty;
      return { path: `${e.instancePath}/${escapePointer(extra)}`, message: 'unknown field' };
    }
    if (e.keyword === 'required') {
      const missing = (e.params as { missingProperty: string }).missingProperty;
      return { path: `${e.instancePath}/${escapePointer(missing)}`, message: 'is required' };
    }
    return { path: e.instancePath, message: e.message ?? e.keyword };
  });
}

function escapePointer(s: string): string {
  return s.replace(/~/g, '~0').replace(/\//g, '~1');
}

// PostgreSQL text and jsonb cannot hold NUL, and a lone surrogate cannot be encoded as UTF-8.
// biome-ignore lint/suspicious/noControlCharactersInRegex: NUL is exactly what we look for
const UNSTORABLE = /\u0000|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/** JSON pointer of a path given as segments; built only when an error needs it. */
function pointer(segments: ReadonlyArray<string | number>): string {
  let out = '';
  for (const s of segments) out += `/${typeof s === 'number' ? s : escapePointer(s)}`;
  return out;
}

/**
 * Lists strings (values and field names) that PostgreSQL cannot store. `at` is the path of
 * `value` as segments, shared and restored on the way back: the common case (nothing wrong)
 * allocates no path strings.
 */
function unstorableStrings(value: unknown, at: Array<string | number>, out: FieldError[], checkStrings: boolean): void {
  if (typeof value === 'string') {
    if (checkStrings && UNSTORABLE.test(value)) out.push({ path: pointer(at), message: 'contains NUL or invalid UTF-16/UTF-8, which cannot be stored' });
    return;
  }
  if (value === null || typeof value !== 'object') return;
  if (at.length > 32) {
    out.push({ path: pointer(at), message: 'is nested too deeply (at most 32 levels)' });
    return;
  }
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      at.push(i);
      unstorableStrings(value[i], at, out, checkStrings);
      at.pop();
    }
    return;
  }
  for (const k in value) {
    if (!Object.hasOwn(value, k)) continue;
    at.push(k);
    if (checkStrings && UNSTORABLE.test(k)) out.push({ path: pointer(at), message: 'field name contains NUL or invalid UTF-16' });
    unstorableStrings((value as Record<string, unknown>)[k], at, out, checkStrings);
    at.pop();
  }
}

export type ValidationResult = { ok: true; order: Order } | { ok: false; errors: FieldError[] };

/**
 * Validates a parsed JSON body as an order v1; on failure lists every failing field path.
 * `escapeFree`: the JSON text the body was parsed from holds no `\u` escape (see parseJson).
 * A string parsed from JSON can then hold neither NUL nor a lone surrogate — raw control
 * characters are not JSON, and strict UTF-8 never decodes to a surrogate — so the check of
 * every string is skipped (the depth check still runs). A property test holds both ways equal.
 */
export function validateOrder(body: unknown, escapeFree = false): ValidationResult {
  const errors: FieldError[] = [];
  if (!validateSchema(body)) errors.push(...ajvErrors(validateSchema.errors));
  unstorableStrings(body, [], errors, !escapeFree);
  if (body !== null && typeof body === 'object' && !Array.isArray(body)) {
    const metadata = (body as { metadata?: unknown }).metadata;
    if (metadata !== undefined && metadata !== null && typeof metadata === 'object') {
      // JSON.stringify recurses: metadata nested thousands deep (it fits in 64 KiB) overflows
      // the stack. The depth error is already listed above; never let it become a 500.
      let size: number | undefined;
      try {
        size = Buffer.byteLength(JSON.stringify(metadata));
      } catch {
        errors.push({ path: '/metadata', message: 'cannot be serialized (nested too deeply)' });
      }
      if (size !== undefined && size > LIMITS.maxMetadataBytes) {
        errors.push({ path: '/metadata', message: `is ${size} bytes serialized; at most ${LIMITS.maxMetadataBytes}` });
      }
    }
  }
  if (errors.length > 0) return { ok: false, errors };
  return { ok: true, order: body as Order };
}

/** Checks an Idempotency-Key: 1–255 printable ASCII. Returns an error message or undefined. */
export function idempotencyKeyProblem(key: string | undefined): string | undefined {
  if (key === undefined || key === '') return 'is required';
  if (key.length > LIMITS.maxIdempotencyKeyLength) return `is ${key.length} characters; at most ${LIMITS.maxIdempotencyKeyLength}`;
  if (!/^[\x21-\x7e]+$/.test(key)) return 'must be printable ASCII (0x21–0x7E) without spaces';
  return undefined;
}

/**
 * JSON with object keys sorted at every level: equal orders give equal text. Built by string
 * concatenation (no per-level arrays): it runs once per order on the ingest hot path.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  if (Array.isArray(value)) {
    let out = '[';
    for (let i = 0; i < value.length; i++) {
      if (i > 0) out += ',';
      const item = canonicalJson(value[i]) as string | undefined;
      if (item !== undefined) out += item;
    }
    return `${out}]`;
  }
  const keys = Object.keys(value).sort();
  let out = '{';
  let first = true;
  for (const k of keys) {
    const v = (value as Record<string, unknown>)[k];
    if (v === undefined) continue;
    out += `${first ? '' : ','}${JSON.stringify(k)}:${canonicalJson(v)}`;
    first = false;
  }
  return `${out}}`;
}

/** Strings JSON.stringify leaves as they are between quotes: no quote, backslash, control character or surrogate. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are exactly what JSON escapes
const PLAIN_JSON_STRING = /^[^"\\\u0000-\u001f\ud800-\udfff]*$/;

/** JSON.stringify of a string, without its general path for the usual plain string. */
function jsonString(s: string): string {
  return PLAIN_JSON_STRING.test(s) ? `"${s}"` : JSON.stringify(s);
}

/**
 * canonicalJson of a validated order, written field by field: the schema fixes the fields and
 * their sorted order (currency, customer_id, items, metadata, order_id, placed_at; qty, sku,
 * unit_price_cents), so only metadata needs the general walk. Same text as canonicalJson —
 * fingerprints stored by earlier versions still match (a property test holds them equal).
 */
export function canonicalOrderJson(order: Order): string {
  let out = `{"currency":${jsonString(order.currency)},"customer_id":${jsonString(order.customer_id)},"items":[`;
  const items = order.items;
  for (let i = 0; i < items.length; i++) {
    const item = items[i] as OrderItem;
    // qty and unit_price_cents are validated integers: a number's JSON text is its String().
    out += `${i > 0 ? ',' : ''}{"qty":${String(item.qty)},"sku":${jsonString(item.sku)},"unit_price_cents":${String(item.unit_price_cents)}}`;
  }
  out += ']';
  if (order.metadata !== undefined) out += `,"metadata":${canonicalJson(order.metadata)}`;
  if (order.order_id !== undefined) out += `,"order_id":${jsonString(order.order_id)}`;
  if (order.placed_at !== undefined) out += `,"placed_at":${jsonString(order.placed_at)}`;
  return `${out}}`;
}

/**
 * The payload fingerprint of SEMANTICS 1.2: SHA-256 over method, path and the canonical body.
 * Method and path are fixed to the single-order route so that the same order sent through
 * `/v1/orders` or `/v1/orders:batch` has the same fingerprint. Pass `canonical` when the
 * caller already has `canonicalOrderJson(order)` (ingest shares it with the stream entry).
 */
export function orderFingerprint(order: Order, canonical: string = canonicalOrderJson(order)): string {
  return canonicalFingerprint(canonical);
}

/** orderFingerprint from the order's canonical text (`canonicalOrderJson(order)`). */
export function canonicalFingerprint(canonical: string): string {
  return hash('sha256', `POST /v1/orders\n${canonical}`);
}
