import { readFileSync } from 'node:fs';
import { App, CfnOutput, Stack } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as sns from 'aws-cdk-lib/aws-sns';
import { describe, expect, it } from 'vitest';
import { TranscriptStore } from '../../infra/construct.js';
import { RECONCILER, RETENTION, ROUTES } from '../../infra/routes.js';
import {
  AWS_LIMITS,
  CONTEXT_KEYS,
  DEFAULT_SETTINGS,
  NUMERIC_SERVICE_SETTINGS,
  resolveSettings,
  SETTING_KEYS,
  SETTING_VARIABLES,
  settingsFromContext,
  type AppSettings,
  type ContextKey,
  type NumericServiceSetting,
} from '../../infra/settings.js';
import { TranscriptStoreStack } from '../../infra/stack.js';

/**
 * README.md § Configuration against what the CDK app lets a deployer set, in both directions: every
 * context key the app reads is a row, every row's key is one the app reads, and each one demonstrably
 * changes the synthesized template (or the stack) the way the row says; every variable the handlers
 * read is in the table. Then the validation: each wrong value fails synth naming its setting.
 */

const CDK_JSON = JSON.parse(readFileSync(new URL('../../cdk.json', import.meta.url), 'utf8')) as { context: Record<string, unknown> };
const README = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
const CONFIG_SOURCE = readFileSync(new URL('../../functions/lib/config.ts', import.meta.url), 'utf8');

type Json = Record<string, any>;
const MIB = 1024 * 1024;
const GIB = 1024 * MIB;
const SECRET_ARN = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:gateway/jwt-AbCdEf';
const KMS_KEY_ARN = 'arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab';
const TOPIC_ARN = 'arn:aws:sns:eu-west-1:123456789012:ops';

// ---------------------------------------------------------------- README § Configuration

interface Row {
  settings: string[];
  variables: string[];
  defaults: string[];
}

/** The rows of the table in README § Configuration: the backticked names in the first three cells. */
function readmeRows(): Row[] {
  const start = README.indexOf('\n## Configuration\n');
  expect(start).toBeGreaterThan(0);
  const section = README.slice(start + 1, README.indexOf('\n## ', start + 1));
  const ticks = (cell: string) => [...cell.matchAll(/`([^`]+)`/g)].map((m) => m[1]!);
  return section
    .split('\n')
    .filter((line) => line.startsWith('| ') && !line.startsWith('| setting |'))
    .map((line) => line.split('|').map((c) => c.trim()))
    .map((cells) => ({ settings: ticks(cells[1]!), variables: ticks(cells[2]!), defaults: ticks(cells[3]!) }));
}

/** What functions/lib/config.ts reads: every `(env, 'NAME'` call. */
const configVariables = [...new Set([...CONFIG_SOURCE.matchAll(/\(env, '([A-Z0-9_]+)'/g)].map((m) => m[1]!))];

describe('README § Configuration', () => {
  const rows = readmeRows();

  it('lists exactly the settings the CDK app accepts, each once', () => {
    const listed = rows.flatMap((r) => r.settings);
    expect(new Set(listed).size).toBe(listed.length);
    expect([...listed].sort()).toEqual([...CONTEXT_KEYS].sort());
  });

  it('names, for each setting, the handler variable the stack sets from it (and none for the others)', () => {
    for (const row of rows.filter((r) => r.settings.length > 0)) {
      const expected = row.settings.map((k) => (SETTING_VARIABLES as Record<string, string | undefined>)[k]).filter((v): v is string => v !== undefined);
      expect(row.variables, row.settings.join(', ')).toEqual(expected);
    }
    // A variable in a row without a setting is one no setting sets (the stack, Lambda or npm start does).
    const settingVariables = Object.values(SETTING_VARIABLES).filter(Boolean);
    for (const row of rows.filter((r) => r.settings.length === 0)) for (const v of row.variables) expect(settingVariables, v).not.toContain(v);
  });

  it('lists every variable the handlers read, and every setting variable is one the handlers (or Powertools) read', () => {
    expect(configVariables.length).toBeGreaterThan(20);
    const listed = rows.flatMap((r) => r.variables);
    for (const v of configVariables) expect(listed, v).toContain(v);
    for (const v of Object.values(SETTING_VARIABLES) as (string | undefined)[]) {
      if (v === undefined) continue;
      expect(configVariables.includes(v) || v.startsWith('POWERTOOLS_'), v).toBe(true);
    }
  });

  it('gives each setting the default the app applies', () => {
    const defaults: Record<string, unknown> = { ...DEFAULT_SETTINGS, stackName: settingsFromContext({ tryGetContext: () => undefined }).stackName };
    for (const row of rows.filter((r) => r.settings.length > 0)) {
      row.settings.forEach((key, i) => {
        if (defaults[key] === undefined) return;
        expect(row.defaults[i], key).toBe(String(defaults[key]));
      });
    }
  });

  it('shows the five lines that put the construct into a foreign app, and they work', () => {
    const start = README.indexOf('### Use it in your own CDK app');
    const block = /```ts\n([\s\S]*?)```/.exec(README.slice(start))![1]!;
    const lines = block.split('\n').filter((l) => l.trim() !== '');
    expect(lines).toHaveLength(5);
    expect(lines[0]).toMatch(/^import \{ TranscriptStore \} from '[^']*\/infra\/construct\.js';$/);
    // Run the other four in a platform team's stack, with their topic and role.
    const app = new App({ context: { 'aws:cdk:bundling-stacks': [] } });
    const stack = new Stack(app, 'Platform');
    const opsTopic = new sns.Topic(stack, 'Ops');
    const analyticsRole = new iam.Role(stack, 'Analytics', { assumedBy: new iam.AccountRootPrincipal() });
    new Function('TranscriptStore', 'stack', 'opsTopic', 'analyticsRole', 'CfnOutput', lines.slice(1).join('\n'))(TranscriptStore, stack, opsTopic, analyticsRole, CfnOutput);
    const template = Template.fromStack(stack);
    template.hasOutput('TranscriptStoreUrl', {});
    template.hasResourceProperties('AWS::CloudWatch::Alarm', { MetricName: 'Writes', Namespace: 'TranscriptStore' });
    template.hasResourceProperties('AWS::Lambda::Function', { Environment: { Variables: Match.objectLike({ JWKS_URL: 'https://gw.example.com/.well-known/jwks.json' }) } });
  });
});

// ---------------------------------------------------------------- every setting takes effect

/** This repository's app, as infra/app.ts builds it (bundling skipped). */
function appStack(context: Record<string, unknown>): { settings: AppSettings; stack: TranscriptStoreStack; template: Template } {
  const app = new App({ context: { ...CDK_JSON.context, 'aws:cdk:bundling-stacks': [], ...context } });
  const { stackName, ...settings } = settingsFromContext(app.node);
  const stack = new TranscriptStoreStack(app, 'TranscriptStore', { stackName, settings });
  return { settings: { ...settings, stackName }, stack, template: Template.fromStack(stack) };
}

/** A value other than the default for every setting (as the command line gives them: text), in two compatible sets. */
const SECRET_AND_EMAIL = {
  jwtSecretArn: SECRET_ARN,
  jwtSecretKmsKeyArn: KMS_KEY_ARN,
  jwtIssuer: 'https://gw.example',
  jwtAudience: 'transcript-store',
  jwtAlgorithms: 'HS384,HS512',
  jwtClockToleranceSeconds: '30',
  secretMaxAgeSeconds: '120',
  maxSnapshotBytes: '2097152',
  inlineResponseMaxBytes: '1048576',
  presignTtlSeconds: '900',
  maxUploadBytes: String(2 * GIB),
  multipartThresholdBytes: String(32 * MIB),
  multipartPartBytes: String(8 * MIB),
  chainMaxExtents: '5',
  chainMergeRatio: '8',
  requestDeadlineMs: '20000',
  legacyFenceWindowSeconds: '2',
  orphanGraceSeconds: '7200',
  retainCompletedRuns: '5',
  retainFailedDays: '14',
  conversationTtlDays: '90',
  retentionIntervalMinutes: '15',
  serviceName: 'transcripts-eu',
  bucketEncryption: 'kms',
  removalPolicy: 'destroy',
  s3AccessLogs: 'false',
  logRetentionDays: '14',
  logLevel: 'DEBUG',
  lambdaMemoryMb: '1024',
  throttleRateLimit: '50',
  throttleBurstLimit: '100',
  alarmEmail: 'oncall@example.com',
  api5xxRatePercent: '2.5',
  apiLatencyP99Ms: '1500',
  stackName: 'TranscriptStoreEu',
} as const;
const JWKS_AND_TOPIC = { jwksUrl: 'https://issuer.example/jwks.json', alarmTopicArn: TOPIC_ARN } as const;

const a = appStack(SECRET_AND_EMAIL);
const b = appStack(JWKS_AND_TOPIC);

const fn = (t: Template, id: string): Json => {
  const found = Object.entries(t.findResources('AWS::Lambda::Function')).filter(([logicalId]) => logicalId.startsWith(id));
  expect(found, id).toHaveLength(1);
  return (found[0]![1] as Json).Properties;
};
const env = (t: Template, id: string): Record<string, unknown> => fn(t, id).Environment.Variables;
const routeIds = ROUTES.map((r) => r.id);
const statements = (t: Template): Json[] => Object.values(t.findResources('AWS::IAM::Policy')).flatMap((p) => (p as Json).Properties.PolicyDocument.Statement);
const alarmsOf = (t: Template): Json[] => Object.values(t.findResources('AWS::CloudWatch::Alarm')).map((x) => (x as Json).Properties);

/** The handler variable of `key` carries the example value in these functions. */
const variableIn = (ids: readonly string[], key: keyof typeof SECRET_AND_EMAIL & keyof typeof SETTING_VARIABLES) => () => {
  for (const id of ids) expect(env(a.template, id)[SETTING_VARIABLES[key]!], `${key} in ${id}`).toBe(SECRET_AND_EMAIL[key]);
};

/** How each setting shows in the synthesized stack. One entry per context key (the compiler checks). */
const EFFECTS: Record<ContextKey, () => void> = {
  jwtSecretArn: () => {
    variableIn(routeIds, 'jwtSecretArn')();
    a.template.resourceCountIs('AWS::SecretsManager::Secret', 0);
  },
  jwtSecretKmsKeyArn: () => expect(statements(a.template)).toContainEqual(expect.objectContaining({ Action: 'kms:Decrypt', Resource: KMS_KEY_ARN })),
  jwksUrl: () => {
    for (const id of routeIds) expect(env(b.template, id)['JWKS_URL']).toBe(JWKS_AND_TOPIC.jwksUrl);
  },
  jwtIssuer: variableIn(routeIds, 'jwtIssuer'),
  jwtAudience: variableIn(routeIds, 'jwtAudience'),
  jwtAlgorithms: variableIn(routeIds, 'jwtAlgorithms'),
  jwtClockToleranceSeconds: variableIn(routeIds, 'jwtClockToleranceSeconds'),
  secretMaxAgeSeconds: variableIn(routeIds, 'secretMaxAgeSeconds'),
  maxSnapshotBytes: variableIn(routeIds, 'maxSnapshotBytes'),
  inlineResponseMaxBytes: variableIn(routeIds, 'inlineResponseMaxBytes'),
  presignTtlSeconds: variableIn(routeIds, 'presignTtlSeconds'),
  maxUploadBytes: variableIn(routeIds, 'maxUploadBytes'),
  multipartThresholdBytes: variableIn(routeIds, 'multipartThresholdBytes'),
  multipartPartBytes: variableIn(routeIds, 'multipartPartBytes'),
  chainMaxExtents: variableIn(routeIds, 'chainMaxExtents'),
  chainMergeRatio: variableIn(routeIds, 'chainMergeRatio'),
  requestDeadlineMs: variableIn(routeIds, 'requestDeadlineMs'),
  legacyFenceWindowSeconds: variableIn(routeIds, 'legacyFenceWindowSeconds'),
  orphanGraceSeconds: variableIn([RECONCILER.id, RETENTION.id], 'orphanGraceSeconds'),
  retainCompletedRuns: variableIn([RETENTION.id], 'retainCompletedRuns'),
  retainFailedDays: variableIn([RETENTION.id, ...routeIds], 'retainFailedDays'),
  conversationTtlDays: variableIn([RETENTION.id], 'conversationTtlDays'),
  retentionIntervalMinutes: () => {
    variableIn([RETENTION.id], 'retentionIntervalMinutes')();
    a.template.hasResourceProperties('AWS::Events::Rule', { ScheduleExpression: 'rate(15 minutes)' });
  },
  serviceName: () => {
    variableIn([...routeIds, RECONCILER.id, RETENTION.id], 'serviceName')();
    expect(alarmsOf(a.template).find((p) => p.MetricName === 'IntegrityFailures')!.Dimensions).toEqual([{ Name: 'service', Value: 'transcripts-eu' }]);
  },
  bucketEncryption: () => a.template.resourceCountIs('AWS::KMS::Key', 1),
  removalPolicy: () => a.template.hasResource('AWS::DynamoDB::Table', { DeletionPolicy: 'Delete' }),
  s3AccessLogs: () => a.template.resourceCountIs('AWS::S3::Bucket', 1),
  logRetentionDays: () => a.template.allResourcesProperties('AWS::Logs::LogGroup', { RetentionInDays: 14 }),
  logLevel: variableIn(routeIds, 'logLevel'),
  lambdaMemoryMb: () => a.template.allResourcesProperties('AWS::Lambda::Function', { MemorySize: 1024 }),
  throttleRateLimit: () => a.template.hasResourceProperties('AWS::ApiGatewayV2::Stage', { DefaultRouteSettings: Match.objectLike({ ThrottlingRateLimit: 50 }) }),
  throttleBurstLimit: () => a.template.hasResourceProperties('AWS::ApiGatewayV2::Stage', { DefaultRouteSettings: Match.objectLike({ ThrottlingBurstLimit: 100 }) }),
  alarmEmail: () => a.template.hasResourceProperties('AWS::SNS::Subscription', { Protocol: 'email', Endpoint: 'oncall@example.com' }),
  alarmTopicArn: () => {
    for (const alarm of alarmsOf(b.template)) expect(alarm.AlarmActions).toEqual([TOPIC_ARN]);
  },
  api5xxRatePercent: () => expect(alarmsOf(a.template).map((p) => p.Threshold)).toContain(2.5),
  apiLatencyP99Ms: () => expect(alarmsOf(a.template).filter((p) => JSON.stringify(p).includes('"MetricName":"Latency"')).map((p) => p.Threshold)).toEqual([1500]),
  stackName: () => expect(a.stack.stackName).toBe('TranscriptStoreEu'),
};

describe('every setting', () => {
  it('has an example that is not its default', () => {
    const examples: Record<string, unknown> = { ...SECRET_AND_EMAIL, ...JWKS_AND_TOPIC };
    expect(Object.keys(examples).sort()).toEqual([...CONTEXT_KEYS].sort());
    const resolved: Record<string, unknown> = { ...a.settings, ...Object.fromEntries(Object.keys(JWKS_AND_TOPIC).map((k) => [k, (b.settings as Record<string, unknown>)[k]])) };
    for (const key of CONTEXT_KEYS) expect(resolved[key], key).not.toEqual((DEFAULT_SETTINGS as Record<string, unknown>)[key] ?? 'TranscriptStore');
  });

  for (const key of CONTEXT_KEYS) {
    it(`takes effect: ${key}`, () => EFFECTS[key]());
  }

  it('leaves the route functions’ environment alone for settings at their default', () => {
    const { template } = appStack({});
    for (const id of routeIds) {
      const vars = Object.keys(env(template, id));
      for (const key of Object.keys(NUMERIC_SERVICE_SETTINGS)) expect(vars, `${key} in ${id}`).not.toContain(SETTING_VARIABLES[key as NumericServiceSetting]);
    }
  });
});

// ---------------------------------------------------------------- validation

/** Context with only `context` set, through the app's reader. */
const fromContext = (context: Record<string, unknown>) =>
  settingsFromContext({ tryGetContext: (k) => context[k], getAllContext: () => ({ ...CDK_JSON.context, ...context }) });

describe('validation', () => {
  it('rejects what the handlers would reject, naming the setting and its variable', () => {
    for (const key of Object.keys(NUMERIC_SERVICE_SETTINGS) as NumericServiceSetting[]) {
      const named = new RegExp(`"${key}" \\(${SETTING_VARIABLES[key]}\\)`);
      for (const bad of ['abc', '-1', '1.5', '1e3', true]) expect(() => fromContext({ [key]: bad }), `${key}=${String(bad)}`).toThrow(named);
    }
    // 0 is a value only where the handlers take it (a tolerance, a window, "off").
    const zeroOk = ['jwtClockToleranceSeconds', 'legacyFenceWindowSeconds', 'conversationTtlDays'];
    for (const key of Object.keys(NUMERIC_SERVICE_SETTINGS) as NumericServiceSetting[]) {
      if (zeroOk.includes(key)) expect(fromContext({ [key]: '0' })[key]).toBe(0);
      else expect(() => fromContext({ [key]: '0' }), key).toThrow(new RegExp(`"${key}"`));
    }
    expect(() => fromContext({ multipartPartBytes: 5 * MIB - 1 })).toThrow(/"multipartPartBytes".*5 MiB/);
    expect(() => fromContext({ orphanGraceSeconds: 899 })).toThrow(/"orphanGraceSeconds".*at least 900/);
    expect(() => fromContext({ retentionIntervalMinutes: 1441 })).toThrow(/"retentionIntervalMinutes".*at most 1440/);
    expect(() => fromContext({ jwtAlgorithms: 'RS256' })).toThrow(/"jwtAlgorithms"/);
  });

  it('holds the handler settings to the AWS limits of the deployment, and accepts each limit itself', () => {
    const over: Record<keyof typeof AWS_LIMITS, RegExp> = {
      maxSnapshotBytes: /6 MB request payload/,
      inlineResponseMaxBytes: /base64/,
      presignTtlSeconds: /expire after a day/,
      maxUploadBytes: /CopyObject/,
      multipartThresholdBytes: /single PUT/,
      multipartPartBytes: /largest part/,
      requestDeadlineMs: /30 s/,
      orphanGraceSeconds: /30 days/,
    };
    const room = { orphanGraceSeconds: AWS_LIMITS.orphanGraceSeconds }; // so a long presign TTL passes the grace rule
    for (const [key, why] of Object.entries(over) as [keyof typeof AWS_LIMITS, RegExp][]) {
      const limit = AWS_LIMITS[key];
      expect(fromContext({ ...room, [key]: limit })[key], key).toBe(limit);
      expect(() => fromContext({ ...room, [key]: limit + 1 }), key).toThrow(new RegExp(`"${key}".*at most ${limit}.*${why.source}`));
    }
  });

  it('keeps every presigned URL inside the reconciler’s grace: 2 × presignTtlSeconds + 60 ≤ orphanGraceSeconds', () => {
    expect(fromContext({ presignTtlSeconds: 1770 }).presignTtlSeconds).toBe(1770);
    expect(() => fromContext({ presignTtlSeconds: 1771 })).toThrow(/"presignTtlSeconds".*orphanGraceSeconds \(3600\).*at least 3602/);
    expect(fromContext({ presignTtlSeconds: 3600, orphanGraceSeconds: 7260 }).presignTtlSeconds).toBe(3600);
  });

  it('rejects resource settings out of range', () => {
    const cases: [string, unknown, RegExp][] = [
      ['lambdaMemoryMb', 64, /"lambdaMemoryMb".*\[128, 10240\]/],
      ['logRetentionDays', 10, /"logRetentionDays".*one of 1, 3, 5/],
      ['logLevel', 'TRACE', /"logLevel".*DEBUG, INFO, WARN, ERROR/],
      ['bucketEncryption', 'aes', /"bucketEncryption"/],
      ['removalPolicy', 'snapshot', /"removalPolicy"/],
      ['s3AccessLogs', 'maybe', /"s3AccessLogs".*true or false/],
      ['throttleRateLimit', 0, /"throttleRateLimit"/],
      ['api5xxRatePercent', 0, /"api5xxRatePercent"/],
      ['apiLatencyP99Ms', '1.5', /"apiLatencyP99Ms"/],
      ['serviceName', 'a b', /"serviceName" \(POWERTOOLS_SERVICE_NAME\)/],
      ['alarmEmail', 'not-an-email', /"alarmEmail"/],
      ['alarmTopicArn', 'ops', /"alarmTopicArn"/],
      ['jwksUrl', 'http://issuer.example/jwks.json', /"jwksUrl".*https/],
      ['jwtSecretArn', 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:gateway/jwt', /complete Secrets Manager ARN/],
      ['jwtSecretKmsKeyArn', KMS_KEY_ARN, /only applies together with "jwtSecretArn"/],
      ['stackName', '1st', /"stackName"/],
    ];
    for (const [key, value, message] of cases) expect(() => fromContext({ [key]: value }), key).toThrow(message);
    expect(() => fromContext({ alarmEmail: 'oncall@example.com', alarmTopicArn: TOPIC_ARN })).toThrow(/mutually exclusive/);
    expect(() => fromContext({ jwtSecretArn: SECRET_ARN, jwksUrl: 'https://issuer.example/jwks.json' })).toThrow(/mutually exclusive/);
  });

  it('fails on an unknown camelCase context key, suggesting the nearest one; CDK’s own keys pass', () => {
    expect(() => fromContext({ maxSnapshotByte: 1 })).toThrow(/Unknown CDK context key "maxSnapshotByte": did you mean "maxSnapshotBytes"\?/);
    expect(() => fromContext({ retentionInterval: 5 })).toThrow(/Unknown CDK context key "retentionInterval": did you mean "retentionIntervalMinutes"\?|Unknown CDK context key "retentionInterval"/);
    expect(() => fromContext({ somethingElseEntirely: 1 })).toThrow(/Unknown CDK context key "somethingElseEntirely": the settings are listed/);
    // Feature flags, CDK's own keys, lookups and `cdk acknowledge` are not settings.
    expect(() => fromContext({ 'aws:cdk:enable-path-metadata': true, 'acknowledged-issue-numbers': [1], 'availability-zones:account=1:region=x': ['a'] })).not.toThrow();
  });

  it('reads typed props and context text alike, and resolving resolved settings changes nothing', () => {
    expect(resolveSettings({ maxSnapshotBytes: 2 * MIB, s3AccessLogs: false, api5xxRatePercent: 2.5 })).toEqual(
      resolveSettings({ maxSnapshotBytes: '2097152', s3AccessLogs: 'false', api5xxRatePercent: '2.5' }),
    );
    expect(resolveSettings({ jwtAlgorithms: ['HS256', 'HS384'] }).jwtAlgorithms).toBe('HS256,HS384');
    expect(() => resolveSettings({ jwtAlgorithms: [] })).toThrow(/"jwtAlgorithms".*at least one/);
    expect(() => resolveSettings({ jwtAlgorithms: ['HS256', 'RS256'] })).toThrow(/"jwtAlgorithms"/);
    expect(() => resolveSettings({ maxSnapshotBytes: { bytes: 1 } } as never)).toThrow(/"maxSnapshotBytes".*whole number/);
    for (const settings of [a.settings, b.settings, DEFAULT_SETTINGS]) {
      const { stackName: _, ...store } = settings as AppSettings;
      expect(resolveSettings(store)).toEqual(store);
    }
    expect([...SETTING_KEYS].sort()).toEqual(Object.keys(DEFAULT_SETTINGS).sort());
  });
});
