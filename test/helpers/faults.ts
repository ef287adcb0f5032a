import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { S3Client } from '@aws-sdk/client-s3';
import { createClients } from '../../functions/lib/aws.js';
import { SnapshotStore } from '../../functions/lib/store/index.js';
import { Logger } from '@aws-lambda-powertools/logger';
import { createRoutes } from '../../functions/lib/app.js';
import { createAdminVerifier, createVerifier } from '../../functions/lib/auth.js';
import { cursorCodecFor } from '../../functions/lib/upload-id.js';
import { startAdapter } from '../../local/adapter.js';
import { routeTable, type LocalService } from '../../local/service.js';
import { Api } from './service.js';

export class InjectedFault extends Error {
  override name = 'InjectedFault';
}

type Hook = (commandName: string, callNumber: number) => Promise<void> | void;

/**
 * Counts every AWS call made through the clients it is installed on (S3 and DynamoDB share one
 * counter) and lets a test fail or pause a chosen call. Installed at the `initialize` step, i.e.
 * outside the SDK's retry loop: one injected failure is one failed command, exactly like a process
 * that dies at that point.
 *   before(n): call n is never sent (the process died just before it).
 *   after(n):  call n reaches storage but its caller never learns the outcome (died just after it).
 */
export class FaultPlan {
  calls: string[] = [];
  private failBefore: number | undefined;
  private failAfter: number | undefined;
  private beforeHooks: Hook[] = [];

  reset(): this {
    this.calls = [];
    this.failBefore = undefined;
    this.failAfter = undefined;
    this.beforeHooks = [];
    return this;
  }

  failBeforeCall(n: number): this {
    this.failBefore = n;
    return this;
  }

  /**
   * Fails before the `occurrence`-th call of `commandName` (e.g. 'UpdateItemCommand'): a crash named by what it
   * interrupts, independent of how many calls came before it.
   */
  failBeforeCommand(commandName: string, occurrence = 1): this {
    let seen = 0;
    return this.onCall((name, n) => {
      if (name === commandName && ++seen === occurrence) this.failBefore = n;
    });
  }

  failAfterCall(n: number): this {
    this.failAfter = n;
    return this;
  }

  /** Runs `hook` before every call (it may await a gate to force an interleaving). */
  onCall(hook: Hook): this {
    this.beforeHooks.push(hook);
    return this;
  }

  install(client: S3Client | DynamoDBClient): void {
    (client.middlewareStack as { add: (mw: unknown, opts: unknown) => void }).add(
      (next: (args: unknown) => Promise<unknown>, context: { commandName?: string }) => async (args: unknown) => {
        const n = this.calls.push(context.commandName ?? 'unknown');
        for (const hook of this.beforeHooks) await hook(context.commandName ?? 'unknown', n);
        if (n === this.failBefore) throw new InjectedFault(`injected before call ${n} (${context.commandName})`);
        const out = await next(args);
        if (n === this.failAfter) throw new InjectedFault(`injected after call ${n} (${context.commandName})`);
        return out;
      },
      { step: 'initialize', name: 'faultPlan', override: true },
    );
  }
}

/**
 * A second store over the same storage and bucket/table as `svc` (embedded s3rver, and dynalite or
 * DynamoDB Local), with a fault plan on its clients.
 */
export function faultyStore(svc: LocalService, plan: FaultPlan, opts: { now?: () => number } = {}): SnapshotStore {
  const emu = svc.emulators;
  if (!emu || svc.storage.s3 !== 'embedded') throw new Error('fault tests need the embedded S3 emulator');
  // DynamoDB Local accepts any credentials; s3rver only its own.
  const { s3, ddb } = createClients(
    { region: svc.config.region, s3ForcePathStyle: true },
    { endpoints: { s3: svc.endpoints.s3, dynamodb: svc.endpoints.dynamodb }, credentials: emu.credentials },
  );
  plan.install(s3);
  plan.install(ddb);
  return new SnapshotStore({
    s3,
    ddb,
    bucket: svc.config.bucketName,
    table: svc.config.tableName,
    // Same upload-id key and limits as the service: tickets from one commit through the other.
    uploadIds: svc.store.uploadIds,
    limits: svc.store.limits,
    ...(opts.now && { now: opts.now }),
  });
}

/** A promise you can resolve from outside: forces one interleaving of two requests. */
export function gate(): { wait: Promise<void>; open: () => void } {
  let open!: () => void;
  const wait = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { wait, open };
}

/**
 * Runs `fn` against the real routes (HTTP adapter) over a store whose AWS calls go through `plan`:
 * a second service on the same emulators, for fault injection at every AWS call of a request.
 */
export async function withFaultyService<T>(svc: LocalService, plan: FaultPlan, fn: (api: Api) => Promise<T>): Promise<T> {
  const routes = createRoutes({
    store: faultyStore(svc, plan),
    verify: createVerifier(svc.config),
    verifyAdmin: createAdminVerifier(svc.config),
    cursors: cursorCodecFor(svc.config),
    logger: new Logger({ logLevel: 'SILENT' }),
    maxSnapshotBytes: svc.config.maxSnapshotBytes,
  });
  const http = await startAdapter(routeTable(routes));
  try {
    return await fn(new Api(http.url, (c) => svc.mintToken(c)));
  } finally {
    await http.close();
  }
}
