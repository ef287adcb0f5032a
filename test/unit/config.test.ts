import { describe, expect, it } from 'vitest';
import { ConfigError, DEFAULT_MAX_SNAPSHOT_BYTES, loadConfig, loadStorageConfig, retentionSettings, type Config } from '../../functions/lib/config.js';

const BASE = { AWS_REGION: 'eu-west-1', BUCKET_NAME: 'snapshots', TABLE_NAME: 'snapshot-index', JWT_SECRET: 's3cret' };
const ARN = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:jwt-abc123';

/** The ConfigError loadConfig threw for env (fails the test if it did not throw one). */
function configError(env: Record<string, string | undefined>): ConfigError {
  try {
    loadConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error(`expected loadConfig to reject ${JSON.stringify(env)}`);
}

function expectConfigError(env: Record<string, string | undefined>, variable: string, problem?: RegExp): void {
  const err = configError(env);
  expect(err.variable).toBe(variable);
  expect(err.message).toContain(variable);
  expect(err.name).toBe('ConfigError');
  if (problem) expect(err.message).toMatch(problem);
}

describe('loadConfig: required variables', () => {
  it.each(['AWS_REGION', 'BUCKET_NAME', 'TABLE_NAME'])('fails fast naming %s when it is missing', (name) => {
    expectConfigError({ ...BASE, [name]: undefined }, name, /required/);
  });

  it.each(['AWS_REGION', 'BUCKET_NAME', 'TABLE_NAME'])('treats a blank %s as missing', (name) => {
    expectConfigError({ ...BASE, [name]: '   ' }, name, /required/);
  });

  it('does not fall back to AWS_DEFAULT_REGION', () => {
    expectConfigError({ ...BASE, AWS_REGION: undefined, AWS_DEFAULT_REGION: 'eu-west-1' }, 'AWS_REGION');
  });

  it('names the key source variables when none is set', () => {
    const err = configError({ ...BASE, JWT_SECRET: undefined });
    expect(err.variable).toBe('JWT_SECRET');
    expect(err.message).toContain('JWT_SECRET_ARN');
    expect(err.message).toContain('JWKS_URL');
  });
});

describe('loadConfig: key source', () => {
  it.each([
    [{ JWT_SECRET: 's', JWT_SECRET_ARN: ARN }, 'JWT_SECRET, JWT_SECRET_ARN'],
    [{ JWT_SECRET: 's', JWKS_URL: 'https://idp.example/jwks.json' }, 'JWT_SECRET, JWKS_URL'],
    [{ JWT_SECRET_ARN: ARN, JWKS_URL: 'https://idp.example/jwks.json' }, 'JWT_SECRET_ARN, JWKS_URL'],
    [{ JWT_SECRET: 's', JWT_SECRET_ARN: ARN, JWKS_URL: 'https://idp.example/jwks.json' }, 'JWT_SECRET, JWT_SECRET_ARN, JWKS_URL'],
  ])('rejects two or more key sources at once (%o)', (sources, variables) => {
    expectConfigError({ ...BASE, JWT_SECRET: undefined, ...sources }, variables, /mutually exclusive/);
  });

  it('uses a shared secret', () => {
    expect(loadConfig(BASE).keySource).toEqual({ kind: 'secret', secret: 's3cret' });
  });

  it('uses a Secrets Manager ARN and rejects a value that is not an ARN', () => {
    expect(loadConfig({ ...BASE, JWT_SECRET: undefined, JWT_SECRET_ARN: ARN }).keySource).toEqual({ kind: 'secretArn', arn: ARN });
    expectConfigError({ ...BASE, JWT_SECRET: undefined, JWT_SECRET_ARN: 'jwt-secret-name' }, 'JWT_SECRET_ARN', /ARN/);
  });

  it('accepts an https JWKS URL', () => {
    const c = loadConfig({ ...BASE, JWT_SECRET: undefined, JWKS_URL: 'https://idp.example/.well-known/jwks.json' });
    expect(c.keySource.kind).toBe('jwks');
    expect(c.keySource.kind === 'jwks' && c.keySource.url.href).toBe('https://idp.example/.well-known/jwks.json');
  });

  it.each(['http://127.0.0.1:8080/jwks.json', 'http://localhost:8080/jwks.json'])('allows plain http for localhost (%s)', (url) => {
    expect(loadConfig({ ...BASE, JWT_SECRET: undefined, JWKS_URL: url }).keySource.kind).toBe('jwks');
  });

  it.each(['http://idp.example/jwks.json', 'http://localhost.evil.example/jwks.json', 'http://127.0.0.1@evil.example/jwks.json'])(
    'rejects a non-https JWKS URL for a remote host (%s)',
    (url) => {
      expectConfigError({ ...BASE, JWT_SECRET: undefined, JWKS_URL: url }, 'JWKS_URL', /https/);
    },
  );

  it('rejects a JWKS URL that is not absolute', () => {
    expectConfigError({ ...BASE, JWT_SECRET: undefined, JWKS_URL: '/jwks.json' }, 'JWKS_URL', /absolute/);
  });
});

describe('loadConfig: JWT_ALGORITHMS', () => {
  const jwks = { ...BASE, JWT_SECRET: undefined, JWKS_URL: 'https://idp.example/jwks.json' };

  it('defaults to HS256 for a secret and to RS256, ES256, EdDSA for a JWKS', () => {
    expect(loadConfig(BASE).algorithms).toEqual(['HS256']);
    expect(loadConfig(jwks).algorithms).toEqual(['RS256', 'ES256', 'EdDSA']);
  });

  it('accepts a list with blanks around entries', () => {
    expect(loadConfig({ ...BASE, JWT_ALGORITHMS: ' HS256 , HS512 ' }).algorithms).toEqual(['HS256', 'HS512']);
    expect(loadConfig({ ...jwks, JWT_ALGORITHMS: 'ES256' }).algorithms).toEqual(['ES256']);
  });

  it.each([
    ['an HS algorithm with a JWKS source', jwks, 'RS256,HS256'],
    ['only HS algorithms with a JWKS source', jwks, 'HS256'],
    ['an RS algorithm with a shared secret', BASE, 'HS256,RS256'],
    ['none', BASE, 'none'],
    ['an unknown name', BASE, 'HS257'],
    ['an empty list', BASE, ' , '],
  ])('rejects %s', (_name, env, algs) => {
    expectConfigError({ ...env, JWT_ALGORITHMS: algs }, 'JWT_ALGORITHMS');
  });

  it('returns a frozen allowlist', () => {
    expect(Object.isFrozen(loadConfig(BASE).algorithms)).toBe(true);
  });
});

describe('loadConfig: numbers and flags', () => {
  it.each(['abc', '1.5', '1e6', '-1', '0', '4MiB', '0x10'])('rejects MAX_SNAPSHOT_BYTES=%s', (raw) => {
    expectConfigError({ ...BASE, MAX_SNAPSHOT_BYTES: raw }, 'MAX_SNAPSHOT_BYTES', /positive integer/);
  });

  it('accepts an integer MAX_SNAPSHOT_BYTES', () => {
    expect(loadConfig({ ...BASE, MAX_SNAPSHOT_BYTES: '1048576' }).maxSnapshotBytes).toBe(1_048_576);
  });

  it('accepts JWT_CLOCK_TOLERANCE_SECONDS=0 and rejects a negative or fractional one', () => {
    expect(loadConfig({ ...BASE, JWT_CLOCK_TOLERANCE_SECONDS: '0' }).clockToleranceSeconds).toBe(0);
    expect(loadConfig({ ...BASE, JWT_CLOCK_TOLERANCE_SECONDS: '30' }).clockToleranceSeconds).toBe(30);
    expectConfigError({ ...BASE, JWT_CLOCK_TOLERANCE_SECONDS: '-5' }, 'JWT_CLOCK_TOLERANCE_SECONDS');
    expectConfigError({ ...BASE, JWT_CLOCK_TOLERANCE_SECONDS: '2.5' }, 'JWT_CLOCK_TOLERANCE_SECONDS');
  });

  it('rejects an S3_FORCE_PATH_STYLE that is not a boolean', () => {
    expectConfigError({ ...BASE, S3_FORCE_PATH_STYLE: 'maybe' }, 'S3_FORCE_PATH_STYLE');
  });
});

describe('loadConfig: defaults', () => {
  it('applies the documented defaults', () => {
    const c: Config = loadConfig(BASE);
    // toMatchObject: later issues add settings; these are the ones the contract pins.
    expect(c).toMatchObject({
      region: 'eu-west-1',
      bucketName: 'snapshots',
      tableName: 'snapshot-index',
      keySource: { kind: 'secret', secret: 's3cret' },
      algorithms: ['HS256'],
      issuer: undefined,
      audience: undefined,
      clockToleranceSeconds: 5,
      maxSnapshotBytes: 4 * 1024 * 1024,
      s3ForcePathStyle: false,
    });
    expect(DEFAULT_MAX_SNAPSHOT_BYTES).toBe(4_194_304);
    expect(Object.isFrozen(c)).toBe(true);
  });

  it('turns path-style addressing on when AWS_ENDPOINT_URL or AWS_ENDPOINT_URL_S3 is set', () => {
    expect(loadConfig({ ...BASE, AWS_ENDPOINT_URL: 'http://127.0.0.1:4566' }).s3ForcePathStyle).toBe(true);
    expect(loadConfig({ ...BASE, AWS_ENDPOINT_URL_S3: 'http://127.0.0.1:4569' }).s3ForcePathStyle).toBe(true);
  });

  it('lets S3_FORCE_PATH_STYLE override the endpoint-based default both ways', () => {
    expect(loadConfig({ ...BASE, AWS_ENDPOINT_URL: 'http://127.0.0.1:4566', S3_FORCE_PATH_STYLE: 'false' }).s3ForcePathStyle).toBe(false);
    expect(loadConfig({ ...BASE, S3_FORCE_PATH_STYLE: 'true' }).s3ForcePathStyle).toBe(true);
  });

  it('reads issuer and audience and trims values', () => {
    const c = loadConfig({ ...BASE, BUCKET_NAME: '  snapshots  ', JWT_ISSUER: 'https://gw.example', JWT_AUDIENCE: 'transcripts' });
    expect(c.bucketName).toBe('snapshots');
    expect(c.issuer).toBe('https://gw.example');
    expect(c.audience).toBe('transcripts');
  });
});

describe('loadStorageConfig: what the reconciler needs', () => {
  const STORAGE = { AWS_REGION: 'eu-west-1', BUCKET_NAME: 'snapshots', TABLE_NAME: 'snapshot-index' };

  it('needs no JWT key source and defaults the orphan grace period to one hour', () => {
    expect(loadStorageConfig(STORAGE)).toMatchObject({ bucketName: 'snapshots', tableName: 'snapshot-index', orphanGraceSeconds: 3600 });
  });

  it('rejects a grace period shorter than any request can live (15 min), naming ORPHAN_GRACE_SECONDS', () => {
    expect(() => loadStorageConfig({ ...STORAGE, ORPHAN_GRACE_SECONDS: '60' })).toThrow(ConfigError);
    expect(() => loadStorageConfig({ ...STORAGE, ORPHAN_GRACE_SECONDS: '60' })).toThrow(/ORPHAN_GRACE_SECONDS/);
    expect(loadStorageConfig({ ...STORAGE, ORPHAN_GRACE_SECONDS: '900' }).orphanGraceSeconds).toBe(900);
  });

  it('is part of the full service config', () => {
    expect(loadConfig({ ...STORAGE, JWT_SECRET: 's3cret', ORPHAN_GRACE_SECONDS: '7200' }).orphanGraceSeconds).toBe(7200);
  });
});

describe('loadStorageConfig: retention settings', () => {
  const STORAGE = { AWS_REGION: 'eu-west-1', BUCKET_NAME: 'snapshots', TABLE_NAME: 'snapshot-index' };
  const storageError = (env: Record<string, string>): ConfigError => {
    try {
      loadStorageConfig({ ...STORAGE, ...env });
    } catch (err) {
      if (err instanceof ConfigError) return err;
      throw err;
    }
    throw new Error(`expected loadStorageConfig to reject ${JSON.stringify(env)}`);
  };

  it('defaults to 3 completed runs, 7 days for runs that did not complete, no conversation TTL, a pass every 60 minutes', () => {
    const c = loadStorageConfig(STORAGE);
    expect(c).toMatchObject({ retainCompletedRuns: 3, retainFailedDays: 7, conversationTtlDays: 0, retentionIntervalMinutes: 60 });
    expect(retentionSettings(c)).toEqual({ retainCompletedRuns: 3, retainFailedDays: 7, conversationTtlDays: 0, intervalMinutes: 60, graceSeconds: 3600 });
  });

  it('reads each variable (blank = default), for the reconciler config and the full service config alike', () => {
    const env = { RETAIN_COMPLETED_RUNS: '1', RETAIN_FAILED_DAYS: ' 30 ', CONVERSATION_TTL_DAYS: '90', RETENTION_INTERVAL_MINUTES: '1440', ORPHAN_GRACE_SECONDS: '900' };
    expect(retentionSettings(loadStorageConfig({ ...STORAGE, ...env }))).toEqual({ retainCompletedRuns: 1, retainFailedDays: 30, conversationTtlDays: 90, intervalMinutes: 1440, graceSeconds: 900 });
    expect(loadConfig({ ...STORAGE, JWT_SECRET: 's', ...env })).toMatchObject({ retainCompletedRuns: 1, retainFailedDays: 30, conversationTtlDays: 90, retentionIntervalMinutes: 1440 });
    expect(loadStorageConfig({ ...STORAGE, RETAIN_COMPLETED_RUNS: '  ', CONVERSATION_TTL_DAYS: '0' })).toMatchObject({ retainCompletedRuns: 3, conversationTtlDays: 0 });
  });

  it.each([
    ['RETAIN_COMPLETED_RUNS', '0', /positive integer/],
    ['RETAIN_COMPLETED_RUNS', '2.5', /positive integer/],
    ['RETAIN_COMPLETED_RUNS', '10001', /at most 10000/],
    ['RETAIN_FAILED_DAYS', '0', /positive integer/],
    ['RETAIN_FAILED_DAYS', '-7', /positive integer/],
    ['RETAIN_FAILED_DAYS', 'seven', /positive integer/],
    ['CONVERSATION_TTL_DAYS', '-1', /0 \(off\) or a whole number/],
    ['CONVERSATION_TTL_DAYS', '1e3', /0 \(off\) or a whole number/],
    ['CONVERSATION_TTL_DAYS', '36501', /0 \(off\) or a whole number/],
    ['RETENTION_INTERVAL_MINUTES', '0', /positive integer/],
    ['RETENTION_INTERVAL_MINUTES', '1441', /at most 1440/],
  ])('rejects %s=%s with a ConfigError naming it', (variable, value, problem) => {
    const err = storageError({ [variable]: value });
    expect(err.variable).toBe(variable);
    expect(err.message).toContain(variable);
    expect(err.message).toMatch(problem);
  });
});
