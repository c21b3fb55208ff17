// Types of check-commits.mjs for the TypeScript test that imports it.
export declare const MAX_SUBJECT_LENGTH: number;
export declare function commitMessageProblems(message: string): string[];
export declare function unmergedCommits(): Array<{ hash: string; message: string }>;
