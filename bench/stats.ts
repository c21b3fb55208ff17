/** Median of the values (the mean of the two middle ones for an even count); NaN when there are none. */
export function median(values: readonly number[]): number {
  const s = [...values].sort((x, y) => x - y);
  // The two middle values; the same one when the count is odd.
  const lower = s[(s.length - 1) >> 1];
  const upper = s[s.length >> 1];
  return lower === undefined || upper === undefined ? Number.NaN : (lower + upper) / 2;
}
