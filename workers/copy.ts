// PostgreSQL COPY text format (SEMANTICS 6.3): columns separated by tab, rows ended by newline,
// NULL written as `\N`. Inside a value a backslash, newline, carriage return and tab must be
// escaped, which also turns a literal `\N` string into `\\N` (never mistaken for NULL).

const SPECIAL = /[\\\n\r\t]/;
const SPECIAL_ALL = /[\\\n\r\t]/g;
const ESCAPES: Record<string, string> = { '\\': '\\\\', '\n': '\\n', '\r': '\\r', '\t': '\\t' };
// SPECIAL_ALL matches only ESCAPES' keys, so the fallback never applies.
const escapeChar = (c: string): string => ESCAPES[c] ?? c;

/** One value in COPY text form; null becomes `\N`. */
export function copyValue(value: string | null | undefined): string {
  if (value === null || value === undefined) return '\\N';
  return SPECIAL.test(value) ? value.replace(SPECIAL_ALL, escapeChar) : value;
}

/** One row (tab-separated, newline-terminated). */
export function copyRow(values: ReadonlyArray<string | null | undefined>): string {
  let out = copyValue(values[0]);
  for (let i = 1; i < values.length; i++) out += `\t${copyValue(values[i])}`;
  return `${out}\n`;
}

/**
 * Joins rows into one Buffer and records where each row ends (for splitting the batch later).
 * Each row is encoded once, straight into the buffer (its byte count is what the write returns),
 * rather than measured, joined and encoded again.
 */
export function copyBuffer(rows: readonly string[]): { buffer: Buffer; rowEnds: number[] } {
  const rowEnds: number[] = new Array(rows.length);
  let chars = 0;
  let longest = 0;
  for (const row of rows) {
    chars += row.length;
    if (row.length > longest) longest = row.length;
  }
  // A UTF-16 code unit takes at most 3 UTF-8 bytes: a row is written only where 3 × its length
  // fits, so a write is never cut short. With this room ASCII rows never need a larger buffer.
  let buffer = Buffer.allocUnsafe(chars + 2 * longest);
  let end = 0;
  let i = 0;
  for (const row of rows) {
    if (buffer.length - end < 3 * row.length) {
      const larger = Buffer.allocUnsafe(Math.max(2 * buffer.length, end + 3 * row.length));
      buffer.copy(larger, 0, 0, end);
      buffer = larger;
    }
    end += buffer.write(row, end);
    rowEnds[i++] = end;
  }
  return { buffer: buffer.subarray(0, end), rowEnds };
}
