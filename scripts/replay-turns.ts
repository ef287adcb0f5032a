/** The fixture replay's turns (bench:replay, bench:append). */

/** The transcript cut before every user message: turn 0 is what precedes the first one. */
export function turnsOf(transcript: Buffer): Buffer[] {
  const turns: Buffer[] = [];
  let start = 0;
  let at = 0;
  while (at < transcript.length) {
    const end = transcript.indexOf(0x0a, at);
    const next = end === -1 ? transcript.length : end + 1;
    const line = transcript.subarray(at, next).toString('utf8');
    let user = false;
    try {
      const o = JSON.parse(line) as { type?: string; message?: { role?: string } };
      user = o.type === 'message' && o.message?.role === 'user';
    } catch {
      // not JSON: part of the current turn
    }
    if (user && at > start) {
      turns.push(transcript.subarray(start, at));
      start = at;
    }
    at = next;
  }
  turns.push(transcript.subarray(start));
  return turns;
}
