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

/** Joins rows into one Buffer and records where each row ends (for splitting the batch later). */
export function copyBuffer(rows: readonly string[]): { buffer: Buffer; rowEnds: number[] } {
  const rowEnds: number[] = new Array(rows.length);
  let end = 0;
  let i = 0;
  for (const row of rows) {
    end += Buffer.byteLength(row);
    rowEnds[i++] = end;
  }
  return { buffer: Buffer.from(rows.join(''), 'utf8'), rowEnds };
}
