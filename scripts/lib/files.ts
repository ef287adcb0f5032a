import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';

/**
 * Whether two files hold the same bytes, streamed (flat memory at any size). Deliberately independent
 * of the worker-client's own digest code, since it is used to check that client's output.
 */
export async function sameBytes(a: string, b: string): Promise<boolean> {
  const [sa, sb] = await Promise.all([stat(a), stat(b)]); // throws if either file is missing
  return sa.size === sb.size && (await fileSha256(a)) === (await fileSha256(b));
}

async function fileSha256(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}
