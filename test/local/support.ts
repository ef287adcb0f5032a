/**
 * Shared helpers for the local-service robustness tests.
 */

/**
 * A JSONL transcript of about `bytes` bytes (UTF-8) whose lines are quote-heavy, like tool output
 * quoting code: every line is valid JSON and about half of it is `\"` escapes, so each JSON-escaping
 * pass (the POST body, then API Gateway's event) roughly doubles its size.
 */
export function quoteHeavyTranscript(bytes: number): string {
  const lines: string[] = [];
  let size = 0;
  for (let i = 0; size < bytes; i++) {
    const line = JSON.stringify({ type: 'tool_result', i, text: `"q${i}" said "${'"'.repeat(40)}" and ${'"x" '.repeat(20)}` }) + '\n';
    lines.push(line);
    size += Buffer.byteLength(line);
  }
  return lines.join('');
}
