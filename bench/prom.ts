// Reading the /metrics pages the benchmark samples (lag exporter, ingest, workers).
import { parseExposition, type Sample } from '../devkit/prom.js';
export type { Sample };

/** The one exposition parser of the project (devkit/prom.ts); handles braces and escapes in label values. */
export function parsePrometheus(text: string): Sample[] {
  return parseExposition(text);
}

/** Sum of every sample named `name` (optionally filtered by labels); undefined when absent. */
export function sumOf(
  samples: readonly Sample[],
  name: string,
  where: Record<string, string> = {},
): number | undefined {
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
