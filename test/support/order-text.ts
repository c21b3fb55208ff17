// Generators of order fields as JSON text, for the property tests that hold validation to what
// PostgreSQL stores: number literals as a client may write them, RFC 3339 date-times across and
// past timestamptz's range, and the instant a date-time names, computed apart from PostgreSQL.
import fc from 'fast-check';
import { defined } from './defined.js';

const digits = (min: number, max: number) => fc.stringMatching(new RegExp(`^[0-9]{${min},${max}}$`));

/** JSON number literals: any sign, up to 25 integer and 24 fraction digits, exponents to ±400. */
export const numberLiteral: fc.Arbitrary<string> = fc
  .record({
    sign: fc.constantFrom('', '-'),
    int: fc.oneof(
      fc.constant('0'),
      fc.tuple(fc.integer({ min: 1, max: 9 }), digits(0, 24)).map(([d, r]) => `${d}${r}`),
    ),
    fraction: fc.option(digits(1, 24), { nil: undefined }),
    exponent: fc.option(
      fc.tuple(fc.constantFrom('e', 'E'), fc.constantFrom('', '+', '-'), fc.integer({ min: 0, max: 400 })),
      { nil: undefined },
    ),
  })
  .map(
    (n) =>
      `${n.sign}${n.int}${n.fraction === undefined ? '' : `.${n.fraction}`}` +
      (n.exponent === undefined ? '' : `${n.exponent[0]}${n.exponent[1]}${n.exponent[2]}`),
  );

/** A non-negative integer as a client may write it: plain, `n.0`, `ne0`, or a hair off it. */
export const integerLiteral = (min: number, max: number): fc.Arbitrary<string> =>
  fc
    .tuple(
      fc.integer({ min, max }),
      fc.oneof(
        { weight: 20, arbitrary: fc.constant('') },
        { weight: 4, arbitrary: fc.constantFrom('.0', 'e0', 'E+0', '.000000000000000000') },
        { weight: 1, arbitrary: fc.constant('.00000000000000001') },
      ),
    )
    .map(([n, tail]) => `${n}${tail}`);

const two = (max: number) => fc.integer({ min: 0, max }).map((n) => String(n).padStart(2, '0'));

/** Date-times of the `date-time` format's shapes, some past what timestamptz stores as sent. */
export const rfc3339Stamp: fc.Arbitrary<string> = fc
  .record({
    year: fc.oneof(fc.integer({ min: 0, max: 9999 }), fc.constantFrom(0, 1, 9999)),
    month: two(12),
    day: two(31),
    sep: fc.constantFrom('T', 't', ' ', '\t', '\u00a0', '\n'),
    h: two(23),
    m: two(59),
    s: fc.oneof(two(59), fc.constant('60')),
    fraction: fc.oneof(fc.constant(''), fc.stringMatching(/^\.[0-9]{1,9}$/), fc.constant('.1234560')),
    zone: fc.oneof(
      fc.constantFrom('Z', 'z', '+15:59', '-15:59', '+16:00', '-00:00'),
      fc
        .tuple(fc.constantFrom('+', '-'), two(23), two(59), fc.constantFrom(':', ''))
        .map(([sign, h, m, colon]) => `${sign}${h}${colon}${m}`),
      fc.tuple(fc.constantFrom('+', '-'), two(23)).map(([sign, h]) => `${sign}${h}`),
    ),
  })
  .map(
    (p) => `${String(p.year).padStart(4, '0')}-${p.month}-${p.day}${p.sep}${p.h}:${p.m}:${p.s}${p.fraction}${p.zone}`,
  );

/** The instant a valid RFC 3339 date-time names, in microseconds since the epoch (digits past the microsecond dropped). */
export function rfc3339Micros(v: string): bigint {
  const m = /^(\d{4})-(\d\d)-(\d\d).(\d\d):(\d\d):(\d\d)(?:\.(\d+))?(?:[Zz]|([+-])(\d\d):?(\d\d)?)$/s.exec(v);
  const [, y, mo, d, h, mi, s, f, sign, oh, om] = defined(m ?? undefined, v);
  const day = new Date(0);
  day.setUTCFullYear(Number(y), Number(mo) - 1, Number(d));
  const offset = (Number(oh ?? 0) * 60 + Number(om ?? 0)) * (sign === '-' ? -1 : 1);
  const seconds = BigInt(day.getTime() / 1000) + BigInt(Number(h) * 3600 + (Number(mi) - offset) * 60 + Number(s));
  return seconds * 1_000_000n + BigInt((f ?? '').padEnd(6, '0').slice(0, 6));
}
