import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../functions/lib/config.js';
import { createUploadIdCodec, uploadIdCodecFor } from '../../functions/lib/upload-id.js';

const codec = createUploadIdCodec(async () => new Uint8Array(32).fill(7));

describe('upload ids', () => {
  it('round-trip any JSON payload, and any change to a sealed id makes it unopenable', async () => {
    await fc.assert(
      fc.asyncProperty(fc.jsonValue(), fc.nat(), fc.integer({ min: 1, max: 63 }), async (payload, at, flip) => {
        const id = await codec.seal(payload);
        expect(await codec.open(id)).toEqual(JSON.parse(JSON.stringify(payload)));
        const i = at % id.length;
        const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.';
        const replacement = alphabet[(alphabet.indexOf(id[i]!) + flip) % alphabet.length]!;
        const altered = id.slice(0, i) + replacement + id.slice(i + 1);
        if (altered !== id) expect(await codec.open(altered)).toBeUndefined();
      }),
      { numRuns: 500, seed: 11 },
    );
  });

  it('a different key never opens an id', async () => {
    const other = createUploadIdCodec(async () => new Uint8Array(32).fill(8));
    expect(await other.open(await codec.seal({ u: 'x' }))).toBeUndefined();
  });

  it('derives the key from the HS256 JWT secret by default, from UPLOAD_ID_SECRET when set, and needs one with JWKS', async () => {
    const base = { AWS_REGION: 'us-east-1', BUCKET_NAME: 'b', TABLE_NAME: 't' };
    const a = uploadIdCodecFor(loadConfig({ ...base, JWT_SECRET: 'one' }));
    const b = uploadIdCodecFor(loadConfig({ ...base, JWT_SECRET: 'one' }));
    const c = uploadIdCodecFor(loadConfig({ ...base, JWT_SECRET: 'two' }));
    const own = uploadIdCodecFor(loadConfig({ ...base, JWT_SECRET: 'one', UPLOAD_ID_SECRET: 'separate' }));
    const id = await a.seal({ n: 1 });
    expect(await b.open(id)).toEqual({ n: 1 }); // another instance of the same deployment
    expect(await c.open(id)).toBeUndefined();
    expect(await own.open(id)).toBeUndefined();
    const jwks = uploadIdCodecFor(loadConfig({ ...base, JWKS_URL: 'https://idp.example/jwks.json' }));
    await expect(jwks.seal({})).rejects.toThrow(/UPLOAD_ID_SECRET/);
    const jwksOwn = uploadIdCodecFor(loadConfig({ ...base, JWKS_URL: 'https://idp.example/jwks.json', UPLOAD_ID_SECRET: 's' }));
    expect(await jwksOwn.open(await jwksOwn.seal('ok'))).toBe('ok');
  });
});
