// Reading Prometheus text exposition (tests and benchmarks scrape /metrics pages). Label values
// may hold `{`, `}`, `,`, `:` and escaped quotes (stream keys do). Hand-written because the npm
// parsers group samples into families and reshape histograms, where callers want flat samples.

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export function parseExposition(text: string): Sample[] {
  const out: Sample[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const [, name] = /^([a-zA-Z_:][a-zA-Z0-9_:]*)/.exec(line) ?? [];
    if (name === undefined) throw new Error(`bad sample line: ${line}`);
    let i = name.length;
    const labels: Record<string, string> = {};
    if (line[i] === '{') {
      i++;
      while (line[i] !== '}') {
        const [matched, labelName] = /^\s*([a-zA-Z_][a-zA-Z0-9_]*)="/.exec(line.slice(i)) ?? [];
        if (matched === undefined || labelName === undefined) throw new Error(`bad labels in: ${line}`);
        i += matched.length;
        let value = '';
        while (line[i] !== '"') {
          if (i >= line.length) throw new Error(`unterminated label value in: ${line}`);
          if (line[i] === '\\') {
            const next = line[i + 1];
            value += next === 'n' ? '\n' : next;
            i += 2;
          } else value += line[i++];
        }
        i++;
        labels[labelName] = value;
        if (line[i] === ',') i++;
      }
      i++;
    }
    const rest = line.slice(i).trim().split(/\s+/)[0] ?? '';
    const value =
      rest === '+Inf' ? Number.POSITIVE_INFINITY : rest === '-Inf' ? Number.NEGATIVE_INFINITY : Number(rest);
    out.push({ name, labels, value });
  }
  return out;
}
