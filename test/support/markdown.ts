// Reading Markdown as GitHub renders it, for the tests that bind docs to code and to each other.

/** GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens. */
export function slug(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\s_-]/gu, '')
    .replace(/\s/g, '-');
}

/** The headings of a page at the given levels (outside code fences), as written. */
export function headings(markdown: string, levels: readonly number[] = [1, 2, 3, 4, 5, 6]): string[] {
  const out: string[] = [];
  let fenced = false;
  for (const line of markdown.split('\n')) {
    if (line.startsWith('```')) fenced = !fenced;
    else if (!fenced) {
      const [, hashes = '', text = ''] = /^(#{1,6}) (.*)$/.exec(line) ?? [];
      if (levels.includes(hashes.length)) out.push(text.trim());
    }
  }
  return out;
}

/** Every anchor of a page: each heading's slug, a repeated one suffixed `-1`, `-2`… as GitHub does. */
export function anchors(markdown: string): Set<string> {
  const seen = new Map<string, number>();
  const out = new Set<string>();
  for (const h of headings(markdown)) {
    const base = slug(h);
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    out.add(n === 0 ? base : `${base}-${n}`);
  }
  return out;
}
