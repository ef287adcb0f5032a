// Fails `npm run test:ddb-local` fast, with one line, when Java (needed by DynamoDB Local) is missing.
import { spawnSync } from 'node:child_process';

const r = spawnSync('java', ['-version'], { encoding: 'utf8' });
const major = Number(/version "(\d+)/.exec(r.stderr ?? '')?.[1] ?? 0);
if (r.error || r.status !== 0 || major < 17) {
  const why = r.error ? 'java not found on PATH' : r.status !== 0 ? `java -version exited with ${r.status}` : `java ${major} found`;
  console.error(`test:ddb-local: ${why}; DynamoDB Local needs Java 17+ (apt-get install openjdk-17-jre-headless)`);
  process.exit(1);
}
