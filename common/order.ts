// The order (v1): its schema, its validation (every failing field path), its canonical form and
// fingerprint. Ingest validates with it; the stream entry (common/entry.ts) carries its canonical
// form, which the workers stage as is for PostgreSQL to unpack (each field's `sql`); they validate
// again only an entry PostgreSQL refused, to name what is wrong with it.
import { hash } from 'node:crypto';
import { Ajv, type ErrorObject } from 'ajv';
import addFormatsImport from 'ajv-formats';
import { ISO_4217_CODES, ISO_4217_PUBLISHED } from './iso-4217.js';

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

const LIMITS = {
  maxItems: 100,
  maxQty: 10000,
  maxUnitPriceCents: 100_000_000_000,
  maxMetadataBytes: 4096,
  maxIdempotencyKeyLength: 255,
  maxString: 64,
} as const;

/**
 * One top-level order field: its part of the schema and how it travels on. Methods rather than
 * function properties, so every field's entry can be walked as an OrderFieldEntry.
 */
interface OrderField<T> {
  /** Its JSON schema (ORDER_SCHEMA's property). */
  schema: Record<string, unknown>;
  /** In the schema's `required`; the type makes it agree with the Order interface. */
  required: undefined extends T ? false : true;
  /** Its value in canonical JSON: canonicalJson's text for any validated value. */
  json(value: NonNullable<T>): string;
  /** The `orders` column it fills… */
  column: string;
  /**
   * …and the SQL expression that reads it from the staged order, `body` (jsonb: the entry's
   * canonical JSON as ingest wrote it); sql/apply/insert_orders.sql holds `<sql> AS <column>`
   * for every field (test/order-fields.test.ts).
   */
  sql: string;
}

/**
 * Every top-level order field, once, in insert_orders.sql's column order. ORDER_SCHEMA and the
 * canonical JSON (canonicalOrderJson) are derived from it; keyed by the Order interface, so a
 * field missing here or extra here does not compile, and test/order-fields.test.ts binds it to
 * the SQL that unpacks the staged order and to the migrated `orders` table.
 */
const ORDER_FIELDS: { [K in keyof Order]-?: OrderField<Order[K]> } = {
  order_id: {
    schema: { type: 'string', minLength: 1, maxLength: LIMITS.maxString },
    required: false,
    json: jsonString,
    column: 'order_id',
    sql: "body->>'order_id'",
  },
  customer_id: {
    schema: { type: 'string', minLength: 1, maxLength: LIMITS.maxString },
    required: true,
    json: jsonString,
    column: 'customer_id',
    sql: "body->>'customer_id'",
  },
  currency: {
    schema: { type: 'string', enum: ISO_4217_CODES },
    required: true,
    json: jsonString,
    column: 'currency',
    sql: "body->>'currency'",
  },
  items: {
    schema: {
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
    required: true,
    json: itemsJson,
    // The lines themselves go to order_items (insert_orders.sql); the order keeps their sum.
    column: 'total_cents',
    sql: "(SELECT sum(l.qty * l.unit_price_cents) FROM jsonb_to_recordset(body->'items') AS l(qty bigint, unit_price_cents bigint))",
  },
  placed_at: {
    schema: { type: 'string', format: 'date-time' },
    required: false,
    json: jsonString,
    column: 'placed_at',
    sql: "(body->>'placed_at')::timestamptz",
  },
  metadata: {
    schema: { type: 'object' },
    required: false,
    json: canonicalJson,
    column: 'metadata',
    sql: "body->'metadata'",
  },
};

/** A row of the fields table with its name, as the derived code walks it. */
export interface OrderFieldEntry {
  name: keyof Order;
  schema: Record<string, unknown>;
  required: boolean;
  json(value: unknown): string;
  column: string;
  sql: string;
}

/** The fields table as a list, in insert_orders.sql's column order. */
export const ORDER_FIELD_LIST: readonly OrderFieldEntry[] = (Object.keys(ORDER_FIELDS) as Array<keyof Order>).map(
  (name) => ({
    name,
    ...ORDER_FIELDS[name],
  }),
);

export const ORDER_SCHEMA = {
  $id: 'https://surge.dev/schemas/order-v1.json',
  type: 'object',
  additionalProperties: false,
  required: ORDER_FIELD_LIST.filter((f) => f.required).map((f) => f.name),
  properties: Object.fromEntries(ORDER_FIELD_LIST.map((f) => [f.name, f.schema])),
};

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
    if (e.keyword === 'enum' && e.instancePath === '/currency')
      return { path: e.instancePath, message: CURRENCY_MESSAGE };
    return { path: e.instancePath, message: e.message ?? e.keyword };
  });
}

const CURRENCY_MESSAGE = `must be an ISO 4217 alphabetic code (List One published ${ISO_4217_PUBLISHED})`;

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
    if (checkStrings && UNSTORABLE.test(value))
      out.push({ path: pointer(at), message: 'contains NUL or invalid UTF-16/UTF-8, which cannot be stored' });
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
    if (checkStrings && UNSTORABLE.test(k))
      out.push({ path: pointer(at), message: 'field name contains NUL or invalid UTF-16' });
    unstorableStrings((value as Record<string, unknown>)[k], at, out, checkStrings);
    at.pop();
  }
}

/**
 * An RFC 3339 date-time as the `date-time` format reads it (ajv-formats), in parts: separator,
 * seconds, fraction and zone are checked here against what PostgreSQL `timestamptz` stores.
 */
const DATE_TIME_PARTS = /^(\d{4})-\d{2}-\d{2}(.)\d{2}:\d{2}:(\d{2})(?:\.(\d+))?(?:[Zz]|[+-](\d{2})(?::?(\d{2}))?)$/s;

/**
 * Why `timestamptz` cannot store a `date-time` string as sent, or undefined. The format lets
 * through what PostgreSQL refuses (year 0000, offsets past ±15:59, any whitespace as separator, a
 * fractional leap second) or changes (a leap second becomes the next minute, digits past the
 * microsecond are rounded): each would be a 202 ending as a dead letter or a changed order.
 */
function timestampProblem(v: string): string | undefined {
  const m = DATE_TIME_PARTS.exec(v);
  if (m === null) return 'must be an RFC 3339 date-time';
  if (m[2] !== 'T' && m[2] !== 't' && m[2] !== ' ') return 'must separate date and time with T (or a space)';
  if (m[1] === '0000') return 'must be in the years 0001–9999 (timestamptz has no year 0)';
  if (m[3] === '60') return 'cannot be a leap second (timestamptz has no second 60)';
  if (m[4] !== undefined && m[4].length > 6 && !/^0+$/.test(m[4].slice(6)))
    return 'has more precision than microseconds, which timestamptz keeps';
  if (Number(m[5] ?? 0) > 15) return 'must have a time zone offset within ±15:59';
  return undefined;
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
    const placedAt = (body as { placed_at?: unknown }).placed_at;
    if (typeof placedAt === 'string' && !errors.some((e) => e.path === '/placed_at')) {
      const why = timestampProblem(placedAt);
      if (why !== undefined) errors.push({ path: '/placed_at', message: why });
    }
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

/**
 * An order parsed from JSON text, as ingest and the dead-letter decoder judge it: the usual order
 * passes the quick check (surelyValidOrder never accepts what validateOrder refuses); the rest
 * gets the full validation, whose errors come with the text's inexact numbers (inexactNumbers).
 */
export function checkOrder(value: unknown, escapeFree: boolean, inexact: readonly FieldError[]): ValidationResult {
  if (inexact.length === 0 && surelyValidOrder(value, escapeFree)) return { ok: true, order: value };
  const valid = validateOrder(value, escapeFree);
  if (valid.ok && inexact.length === 0) return valid;
  return { ok: false, errors: [...(valid.ok ? [] : valid.errors), ...inexact] };
}

/** The top-level fields surelyValidOrder looks at; any other field (metadata too) sends the order to validateOrder. */
const PLAIN_ORDER_FIELDS = new Set<string>(['customer_id', 'currency', 'items', 'order_id', 'placed_at']);
const CURRENCIES = new Set(ISO_4217_CODES);
/** UTC date-time with a `Z`, as Date#toISOString writes it (fraction optional). */
const UTC_DATE_TIME = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.\d{1,6})?Z$/;
const MONTH_DAYS = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

/** A string within the schema's 1–64 characters: UTF-16 units bound its code points from above. */
function boundedString(v: unknown): boolean {
  return typeof v === 'string' && v.length >= 1 && v.length <= LIMITS.maxString;
}

function integerIn(v: unknown, min: number, max: number): boolean {
  return typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max;
}

/**
 * A subset of what validateOrder accepts as placed_at: years from 0001, at most microseconds;
 * leap seconds, offsets and longer fractions are left to the full check.
 */
function utcDateTime(v: unknown): boolean {
  if (typeof v !== 'string') return false;
  const m = UTC_DATE_TIME.exec(v);
  if (m === null) return false;
  const year = Number(m[1]);
  const month = Number(m[2]);
  const day = Number(m[3]);
  const leap = year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0);
  const days = month === 2 && leap ? 29 : (MONTH_DAYS[month - 1] ?? 0);
  return year >= 1 && day >= 1 && day <= days && Number(m[4]) <= 23 && Number(m[5]) <= 59 && Number(m[6]) <= 59;
}

/**
 * A quick check that never says yes to what validateOrder refuses: true means valid, false
 * means "ask validateOrder" (which also lists the errors). It accepts the usual order — no
 * metadata, a UTC placed_at, parsed from text without `\u` escapes (`escapeFree`, as for
 * validateOrder) — and skips ajv's general walk. A property test holds it to validateOrder.
 */
export function surelyValidOrder(body: unknown, escapeFree: boolean): body is Order {
  if (!escapeFree || body === null || typeof body !== 'object' || Array.isArray(body)) return false;
  const o = body as Record<string, unknown>;
  for (const k in o) if (!PLAIN_ORDER_FIELDS.has(k)) return false;
  if (!boundedString(o.customer_id)) return false;
  if (typeof o.currency !== 'string' || !CURRENCIES.has(o.currency)) return false;
  if (o.order_id !== undefined && !boundedString(o.order_id)) return false;
  if (o.placed_at !== undefined && !utcDateTime(o.placed_at)) return false;
  const items = o.items;
  if (!Array.isArray(items) || items.length < 1 || items.length > LIMITS.maxItems) return false;
  for (const item of items as unknown[]) {
    if (item === null || typeof item !== 'object' || Array.isArray(item)) return false;
    const line = item as Record<string, unknown>;
    for (const k in line) if (k !== 'sku' && k !== 'qty' && k !== 'unit_price_cents') return false;
    if (!boundedString(line.sku)) return false;
    if (!integerIn(line.qty, 1, LIMITS.maxQty)) return false;
    if (!integerIn(line.unit_price_cents, 0, LIMITS.maxUnitPriceCents)) return false;
  }
  return true;
}

/** The Idempotency-Key as a JSON schema (the rules idempotencyKeyProblem checks), for the API contract. */
export const IDEMPOTENCY_KEY_SCHEMA = {
  type: 'string',
  minLength: 1,
  maxLength: LIMITS.maxIdempotencyKeyLength,
  pattern: '^[\\x21-\\x7e]+$',
} as const;

/** Checks an Idempotency-Key: 1–255 printable ASCII. Returns an error message or undefined. */
export function idempotencyKeyProblem(key: string | undefined): string | undefined {
  if (key === undefined || key === '') return 'is required';
  if (key.length > LIMITS.maxIdempotencyKeyLength)
    return `is ${key.length} characters; at most ${LIMITS.maxIdempotencyKeyLength}`;
  if (!/^[\x21-\x7e]+$/.test(key)) return 'must be printable ASCII (0x21–0x7E) without spaces';
  return undefined;
}

/**
 * Where JSON text may hold a number a double cannot hold exactly. A number literal (after `:`,
 * `,` or `[`) with at most 15 significant digits and no exponent is always exact (a double keeps
 * 15 decimal digits, and such a literal is within 1e-15…1e15); the others are checked one by one.
 * Strings may match too: that only costs the closer look.
 */
const MAYBE_INEXACT = /[:,[]\s*-?(?:\d[\d.]*[eE]|[\d.]{16})/;
const NUMBER_LITERAL = /-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
const DECIMAL_PARTS = /^(-?)(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$/;

/** A JSON number literal's exact decimal value as `<sign><digits>e<exponent>`, digits without leading or trailing zeros; '0' for zero. */
function decimalValue(literal: string): string {
  const m = DECIMAL_PARTS.exec(literal);
  if (m === null) return literal;
  const fraction = m[3] ?? '';
  let digits = (m[2]! + fraction).replace(/^0+/, '');
  if (digits === '') return '0';
  let exponent = Number(m[4] ?? 0) - fraction.length;
  const kept = digits.replace(/0+$/, '');
  exponent += digits.length - kept.length;
  digits = kept;
  return `${m[1]}${digits}e${exponent}`;
}

/**
 * True when the literal's value survives JSON.parse and the canonical text exactly: it is finite
 * as a double and the double's shortest text (JSON.stringify, what the entry carries and jsonb
 * or the integer columns store) has the same decimal value. `1.0`, `1e2` and `-0` pass;
 * `1e400`, `12345678901234567890` and `0.30000000000000001` do not.
 */
function exactNumber(literal: string): boolean {
  const x = Number(literal);
  return Number.isFinite(x) && decimalValue(literal) === decimalValue(JSON.stringify(x));
}

/**
 * The numbers of valid JSON text that would not be stored as sent, by JSON pointer: JSON.parse
 * turns each number into a double, so `1e400` became null in jsonb and `12345678901234567890`
 * another integer, while the fingerprint of the changed order matched a body that really said
 * so. A literal a later duplicate key replaces is checked too. Usually returns at once (see
 * MAYBE_INEXACT); otherwise walks the text, tracking the path.
 */
export function inexactNumbers(text: string): FieldError[] {
  if (!MAYBE_INEXACT.test(text)) return [];
  const out: FieldError[] = [];
  const at: Array<string | number> = [];
  const inArray: boolean[] = [];
  let expectKey = false;
  let i = 0;
  while (i < text.length) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      let j = i + 1;
      while (j < text.length && text.charCodeAt(j) !== 0x22) j += text.charCodeAt(j) === 0x5c ? 2 : 1;
      if (expectKey) {
        at[at.length - 1] = JSON.parse(text.slice(i, j + 1)) as string;
        expectKey = false;
      }
      i = j + 1;
    } else if (c === 0x2d || (c >= 0x30 && c <= 0x39)) {
      NUMBER_LITERAL.lastIndex = i;
      const literal = NUMBER_LITERAL.exec(text)?.[0] ?? text[i]!;
      if (!exactNumber(literal))
        out.push({
          path: pointer(at),
          message: 'is a number that cannot be stored exactly (past a double’s range or precision)',
        });
      i += literal.length;
    } else {
      if (c === 0x7b || c === 0x5b) {
        inArray.push(c === 0x5b);
        at.push(c === 0x5b ? 0 : '');
        expectKey = c === 0x7b;
      } else if (c === 0x7d || c === 0x5d) {
        inArray.pop();
        at.pop();
      } else if (c === 0x2c) {
        if (inArray[inArray.length - 1]) (at[at.length - 1] as number)++;
        else expectKey = true;
      }
      i++;
    }
  }
  return out;
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

/** An item's canonical JSON; its fields (qty, sku, unit_price_cents) are written in sorted order. */
function itemsJson(items: readonly OrderItem[]): string {
  let out = '[';
  for (let i = 0; i < items.length; i++) {
    const item = items[i]!;
    // qty and unit_price_cents are validated integers: a number's JSON text is its String().
    out +=
      `${i > 0 ? ',' : ''}{"qty":${String(item.qty)},"sku":${jsonString(item.sku)},` +
      `"unit_price_cents":${String(item.unit_price_cents)}}`;
  }
  return `${out}]`;
}

interface CanonicalStep {
  name: keyof Order;
  /** `{"name":` when it is the first field written, else `,"name":`, built once. */
  first: string;
  next: string;
  json(value: unknown): string;
}

/** The fields table in canonicalJson's key order (the same sort). */
const CANONICAL_STEPS: readonly CanonicalStep[] = [...ORDER_FIELD_LIST]
  .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
  .map(({ name, json }) => ({ name, first: `{${JSON.stringify(name)}:`, next: `,${JSON.stringify(name)}:`, json }));

/**
 * canonicalJson of a validated order, walked from the fields table: the schema fixes the fields,
 * so their sorted order is known ahead and each field's value has a writer that skips the
 * general walk (only metadata needs it). Same text as canonicalJson — fingerprints stored by
 * earlier versions still match (a property test holds them equal).
 */
export function canonicalOrderJson(order: Order): string {
  let out = '';
  for (let i = 0; i < CANONICAL_STEPS.length; i++) {
    const step = CANONICAL_STEPS[i]!;
    const value = order[step.name];
    if (value === undefined) continue;
    out += (out === '' ? step.first : step.next) + step.json(value);
  }
  return out === '' ? '{}' : `${out}}`;
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
