// A small parser for the Prometheus text exposition format (what every /metrics here serves).
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

const LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

export function parsePrometheus(text: string): Sample[] {
  const out: Sample[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const m = LINE.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(LABEL)) {
      labels[l[1] as string] = (l[2] as string).replace(/\\n/g, '\n').replace(/\\"/g, '"').replace(/\\\\/g, '\\');
    }
    const v = m[3] as string;
    const value = v === '+Inf' ? Number.POSITIVE_INFINITY : v === '-Inf' ? Number.NEGATIVE_INFINITY : Number(v);
    out.push({ name: m[1] as string, labels, value });
  }
  return out;
}

/** Sum of every sample named `name` (optionally filtered by labels); undefined when absent. */
export function sumOf(samples: readonly Sample[], name: string, where: Record<string, string> = {}): number | undefined {
  let found = false;
  let total = 0;
  for (const s of samples) {
    if (s.name !== name || Number.isNaN(s.value)) continue;
    if (Object.entries(where).some(([k, v]) => s.labels[k] !== v)) continue;
    found = true;
    total += s.value;
  }
  return found ? total : undefined;
}

/** Largest value of the samples named `name`; undefined when absent. */
export function maxOf(samples: readonly Sample[], name: string): number | undefined {
  const vals = samples.filter((s) => s.name === name && !Number.isNaN(s.value)).map((s) => s.value);
  return vals.length > 0 ? Math.max(...vals) : undefined;
}

/** The first sample whose name ends with `suffix` (default metrics carry a prefix). */
export function bySuffix(samples: readonly Sample[], suffix: string): number | undefined {
  return samples.find((s) => s.name.endsWith(suffix))?.value;
}

export async function scrape(url: string, timeoutMs = 2000): Promise<Sample[] | undefined> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    if (!res.ok) {
      await res.arrayBuffer();
      return undefined;
    }
    return parsePrometheus(await res.text());
  } catch {
    return undefined;
  }
}
