import { App, Aspects, Stack } from 'aws-cdk-lib';
import { Annotations, Match, Template } from 'aws-cdk-lib/assertions';
import { AwsSolutionsChecks } from 'cdk-nag';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { HeimdallrStack } from '../lib/heimdallr-stack';
import { parseSettings, Settings, SettingsError, SOURCE_NAMES, SOURCES } from '../lib/settings';
import { MissingBundleError } from '../lib/source-function';

/** Stand-in bundles: synth only packages the directories, it never runs them. */
function bundleDir(sources: string[] = SOURCE_NAMES.flatMap((name) => [name, `${name}-arm64`])): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'heimdallr-bundles-'));
  for (const source of sources) {
    fs.mkdirSync(path.join(dir, source));
    fs.writeFileSync(path.join(dir, source, 'bootstrap'), `#!/bin/sh\necho ${source}\n`, { mode: 0o755 });
  }
  return dir;
}

const CLUSTER = { cluster: 'analytics', dbUser: 'heimdallr', database: 'analytics', schema: 'heimdallr' };

function settings(overrides: Record<string, unknown> = {}): Settings {
  return parseSettings({
    warehouse: CLUSTER,
    bundleDir: bundleDir(),
    sources: { rollbar: {}, circleci: { enabled: true, projects: ['gh/acme/web'] }, heroku: { enabled: true, apps: ['acme-web'] } },
    ...overrides,
  });
}

function synth(s: Settings = settings()): { stack: Stack; template: Template } {
  const app = new App();
  const stack = new HeimdallrStack(app, 'Heimdallr', { settings: s });
  Aspects.of(stack).add(new AwsSolutionsChecks());
  return { stack, template: Template.fromStack(stack) };
}

const { stack: fullStack, template } = synth();

function resourcesOf(type: string): Record<string, any> {
  return template.findResources(type);
}

function functionIdFor(source: string): string {
  const ids = Object.keys(resourcesOf('AWS::Lambda::Function')).filter((id) => id.toLowerCase().startsWith(source));
  expect(ids).toHaveLength(1);
  return ids[0];
}

describe('network', () => {
  test('two zones, public and private subnets, one internet gateway, one NAT by default', () => {
    template.resourceCountIs('AWS::EC2::VPC', 1);
    template.resourceCountIs('AWS::EC2::Subnet', 4);
    template.resourceCountIs('AWS::EC2::InternetGateway', 1);
    template.resourceCountIs('AWS::EC2::NatGateway', 1);
    template.resourceCountIs('AWS::EC2::EIP', 1);
    const natOutputs = Object.keys(template.findOutputs('*')).filter((id) => id.startsWith('NetworkNatPublicIp'));
    expect(natOutputs).toHaveLength(1);
  });

  test('public subnets route to the internet gateway, private ones to the NAT', () => {
    const routes = Object.values(resourcesOf('AWS::EC2::Route')).map((r) => r.Properties);
    const toIgw = routes.filter((r) => r.GatewayId !== undefined && r.DestinationCidrBlock === '0.0.0.0/0');
    const toNat = routes.filter((r) => r.NatGatewayId !== undefined && r.DestinationCidrBlock === '0.0.0.0/0');
    expect(toIgw).toHaveLength(2);
    expect(toNat).toHaveLength(2);
    template.resourceCountIs('AWS::EC2::RouteTable', 4);
  });

  test('natGateways: 2 gives one NAT per zone, and endpoints are optional', () => {
    const { template: two } = synth(settings({ natGateways: 2, interfaceEndpoints: true }));
    two.resourceCountIs('AWS::EC2::NatGateway', 2);
    const endpoints = Object.values(two.findResources('AWS::EC2::VPCEndpoint')).map((e) => JSON.stringify(e.Properties.ServiceName));
    expect(endpoints.some((e) => e.includes('secretsmanager'))).toBe(true);
    expect(endpoints.some((e) => e.includes('redshift-data'))).toBe(true);
    template.resourceCountIs('AWS::EC2::VPCEndpoint', 0);
  });
});

describe('functions', () => {
  test('one per enabled source, provided.al2023, x86_64 and 128 MB by default, JSON logs', () => {
    template.resourceCountIs('AWS::Lambda::Function', 3);
    template.allResourcesProperties('AWS::Lambda::Function', {
      Runtime: 'provided.al2023',
      Handler: 'bootstrap',
      Architectures: ['x86_64'],
      MemorySize: 128,
      ReservedConcurrentExecutions: 1,
      LoggingConfig: Match.objectLike({ LogFormat: 'JSON' }),
      VpcConfig: Match.objectLike({ SubnetIds: Match.anyValue() }),
    });
    template.allResourcesProperties('AWS::Lambda::EventInvokeConfig', { MaximumRetryAttempts: 0, MaximumEventAgeInSeconds: 60 });
    template.resourceCountIs('AWS::Lambda::EventInvokeConfig', 3);
  });

  test('every function runs in the private subnets', () => {
    const privateSubnets = Object.entries(resourcesOf('AWS::EC2::Subnet'))
      .filter(([, s]) => JSON.stringify(s.Properties.Tags).includes('private'))
      .map(([id]) => id)
      .sort();
    expect(privateSubnets).toHaveLength(2);
    for (const fn of Object.values(resourcesOf('AWS::Lambda::Function'))) {
      const subnets = fn.Properties.VpcConfig.SubnetIds.map((s: { Ref: string }) => s.Ref).sort();
      expect(subnets).toEqual(privateSubnets);
    }
  });

  test('security groups allow nothing in', () => {
    for (const group of Object.values(resourcesOf('AWS::EC2::SecurityGroup'))) {
      expect(group.Properties.SecurityGroupIngress ?? []).toEqual([]);
    }
    template.resourceCountIs('AWS::EC2::SecurityGroupIngress', 0);
  });

  test('the handler gets its secret, the redshift-data URL and the schema', () => {
    const rollbar = resourcesOf('AWS::Lambda::Function')[functionIdFor('rollbar')];
    const env = rollbar.Properties.Environment.Variables;
    expect(env.HEIMDALLR_WAREHOUSE).toBe('redshift-data://heimdallr@cluster/analytics/analytics');
    expect(env.HEIMDALLR_SCHEMA).toBe('heimdallr');
    expect(env.HEIMDALLR_PII).toBe('drop');
    expect(env.HEIMDALLR_SECRET_ARN).toEqual({ Ref: expect.stringMatching(/^RollbarSecret/) });
    const circleci = resourcesOf('AWS::Lambda::Function')[functionIdFor('circleci')];
    expect(circleci.Properties.Environment.Variables.CIRCLECI_PROJECTS).toBe('gh/acme/web');
  });

  test("every variable a function is given is one its Rust code reads (the sources table matches the crates)", () => {
    const root = path.resolve(__dirname, '../..');
    const read = (dir: string): string =>
      fs
        .readdirSync(dir, { recursive: true, encoding: 'utf8' })
        .filter((file) => file.endsWith('.rs'))
        .map((file) => fs.readFileSync(path.join(dir, file), 'utf8'))
        .join('\n');
    // The Lambda frame and the engine settings every function reads (core::source).
    const frame = read(path.join(root, 'functions/core/src/lambda')) + fs.readFileSync(path.join(root, 'functions/core/src/source.rs'), 'utf8');
    for (const name of SOURCE_NAMES) {
      const code = read(path.join(root, 'functions', name, 'src')) + frame;
      const env = resourcesOf('AWS::Lambda::Function')[functionIdFor(name)].Properties.Environment.Variables;
      for (const variable of Object.keys(env).filter((v) => v.startsWith('HEIMDALLR_') || v.startsWith(name.toUpperCase()))) {
        expect({ name, variable, read: code.includes(`"${variable}"`) }).toEqual({ name, variable, read: true });
      }
      const scope = (SOURCES[name] as { scope?: { env: string } }).scope;
      if (scope !== undefined) expect(Object.keys(env)).toContain(scope.env);
    }
  });

  test('timeouts stay below the schedule period', () => {
    const timeouts = Object.fromEntries(
      Object.entries(resourcesOf('AWS::Lambda::Function')).map(([id, f]) => [id.replace(/Function.*/, ''), f.Properties.Timeout]),
    );
    expect(timeouts).toEqual({ Rollbar: 50, Circleci: 290, Heroku: 290 });
  });
});

describe('schedules', () => {
  test('Rollbar every minute, CircleCI and Heroku every 5 minutes, without retries', () => {
    const rules = Object.values(resourcesOf('AWS::Events::Rule')).map((r) => r.Properties);
    const byTarget = Object.fromEntries(rules.map((r) => [r.Targets[0].Arn['Fn::GetAtt'][0].replace(/Function.*/, ''), r]));
    expect(byTarget.Rollbar.ScheduleExpression).toBe('rate(1 minute)');
    expect(byTarget.Circleci.ScheduleExpression).toBe('rate(5 minutes)');
    expect(byTarget.Heroku.ScheduleExpression).toBe('rate(5 minutes)');
    for (const rule of rules) {
      expect(rule.Targets[0].RetryPolicy).toEqual({ MaximumRetryAttempts: 0, MaximumEventAgeInSeconds: 60 });
    }
  });

  test('a disabled source has no function, schedule or alarms', () => {
    const { template: only } = synth(settings({ sources: { rollbar: {}, circleci: { enabled: false } } }));
    only.resourceCountIs('AWS::Lambda::Function', 1);
    only.resourceCountIs('AWS::Events::Rule', 1);
    only.resourceCountIs('AWS::CloudWatch::Dashboard', 1);
    only.resourceCountIs('AWS::SecretsManager::Secret', 1);
  });
});

describe('monitoring', () => {
  test('four alarms per function, each notifying the topic', () => {
    const alarms = Object.values(resourcesOf('AWS::CloudWatch::Alarm'));
    expect(alarms).toHaveLength(12);
    const topicId = Object.keys(resourcesOf('AWS::SNS::Topic'))[0];
    for (const alarm of alarms) {
      expect(alarm.Properties.AlarmActions).toEqual([{ Ref: topicId }]);
    }
    const metrics = alarms.map((a) => a.Properties.MetricName).sort();
    expect(metrics).toEqual([...Array(3).fill('Duration'), ...Array(3).fill('Errors'), ...Array(3).fill('FreshnessLagSeconds'), ...Array(3).fill('Throttles')]);
  });

  test('a silent function alarms on freshness (missing data breaches)', () => {
    template.hasResourceProperties('AWS::CloudWatch::Alarm', {
      MetricName: 'FreshnessLagSeconds',
      Namespace: 'Heimdallr',
      TreatMissingData: 'breaching',
      Threshold: 900,
    });
  });

  test('duration alarm at 90% of the timeout', () => {
    template.hasResourceProperties('AWS::CloudWatch::Alarm', { MetricName: 'Duration', Threshold: 45000 });
  });

  test('one dashboard per function with the functions metrics and alarm states', () => {
    const dashboards = Object.values(resourcesOf('AWS::CloudWatch::Dashboard'));
    expect(dashboards).toHaveLength(3);
    for (const dashboard of dashboards) {
      const body = JSON.stringify(dashboard.Properties.DashboardBody);
      for (const metric of ['Invocations', 'Errors', 'Duration', 'Throttles', 'RowsWritten', 'PagesFetched', 'ApiRetries', 'Rejects', 'FreshnessLagSeconds']) {
        expect(body).toContain(metric);
      }
      expect(body).toContain('\\"alarms\\"');
    }
  });

  test('an alarm email subscribes to the topic', () => {
    const { template: withEmail } = synth(settings({ alarmEmail: 'oncall@example.com' }));
    withEmail.hasResourceProperties('AWS::SNS::Subscription', { Protocol: 'email', Endpoint: 'oncall@example.com' });
    template.resourceCountIs('AWS::SNS::Subscription', 0);
  });
});

describe('IAM', () => {
  const policies = () => Object.entries(resourcesOf('AWS::IAM::Policy'));
  const statements = (policy: any): any[] => policy.Properties.PolicyDocument.Statement;
  const actionsOf = (statement: any): string[] => [statement.Action].flat();

  test('no wildcard actions anywhere', () => {
    for (const [, policy] of policies()) {
      for (const statement of statements(policy)) {
        for (const action of actionsOf(statement)) {
          expect(action).not.toContain('*');
        }
      }
    }
  });

  test('each function reads only its own secret', () => {
    for (const source of ['Rollbar', 'Circleci', 'Heroku']) {
      const [, policy] = policies().find(([id]) => id.startsWith(`${source}Function`))!;
      const secretReads = statements(policy).filter((s) => actionsOf(s).includes('secretsmanager:GetSecretValue'));
      expect(secretReads).toHaveLength(1);
      expect(secretReads[0].Resource).toEqual({ Ref: expect.stringMatching(new RegExp(`^${source}Secret`)) });
    }
  });

  test('Data API calls are scoped to the cluster and the function s own statements', () => {
    const [, policy] = policies().find(([id]) => id.startsWith('RollbarFunction'))!;
    const submit = statements(policy).find((s) => actionsOf(s).includes('redshift-data:BatchExecuteStatement'));
    expect(JSON.stringify(submit.Resource)).toContain(':cluster:analytics');
    const follow = statements(policy).find((s) => actionsOf(s).includes('redshift-data:DescribeStatement'));
    expect(follow.Condition).toEqual({ StringEquals: { 'redshift-data:statement-owner-iam-userid': '${aws:userid}' } });
    const credentials = statements(policy).find((s) => actionsOf(s).includes('redshift:GetClusterCredentials'));
    expect(JSON.stringify(credentials.Resource)).toContain('dbuser:analytics/heimdallr');
  });

  test('a serverless target gets redshift-serverless:GetCredentials on its workgroup instead', () => {
    const workgroupArn = 'arn:aws:redshift-serverless:eu-west-1:123456789012:workgroup/0b1c2d3e-aaaa-bbbb-cccc-123456789012';
    const { template: serverless } = synth(settings({ warehouse: { workgroupName: 'analytics', workgroupArn, database: 'dev' } }));
    const text = JSON.stringify(serverless.findResources('AWS::IAM::Policy'));
    expect(text).toContain('redshift-serverless:GetCredentials');
    expect(text).not.toContain('redshift:GetClusterCredentials');
    const fn = Object.values(serverless.findResources('AWS::Lambda::Function'))[0];
    expect(fn.Properties.Environment.Variables.HEIMDALLR_WAREHOUSE).toBe('redshift-data://workgroup/analytics/dev');
  });
});

describe('cdk-nag AwsSolutions', () => {
  test('no unsuppressed finding, and every suppression says why', () => {
    const errors = Annotations.fromStack(fullStack).findError('*', Match.stringLikeRegexp('AwsSolutions-.*'));
    const warnings = Annotations.fromStack(fullStack).findWarning('*', Match.stringLikeRegexp('AwsSolutions-.*'));
    expect(errors.map((e) => e.entry.data)).toEqual([]);
    expect(warnings.map((w) => w.entry.data)).toEqual([]);
    const suppressions = Object.values(template.toJSON().Resources as Record<string, any>).flatMap(
      (r) => r.Metadata?.cdk_nag?.rules_to_suppress ?? [],
    );
    expect(suppressions.length).toBeGreaterThan(0);
    for (const suppression of suppressions) {
      expect(suppression.reason.length).toBeGreaterThan(20);
    }
  });
});

describe('settings', () => {
  test('a missing warehouse names the setting and shows an example', () => {
    expect(() => parseSettings({})).toThrow(SettingsError);
    expect(() => parseSettings({})).toThrow(/heimdallr\.warehouse: is missing.*Example: \{"cluster"/);
  });

  test('malformed settings name themselves', () => {
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ warehouse: CLUSTER, natGateways: 3 }, /heimdallr\.natGateways: must be a whole number from 1 to 2/],
      [{ warehouse: CLUSTER, architecture: 'sparc' }, /heimdallr\.architecture: .*Example: "architecture": "arm64"/],
      [{ warehouse: CLUSTER, sources: { rollbar: { scheduleMinutes: 0 } } }, /heimdallr\.sources\.rollbar\.scheduleMinutes/],
      [{ warehouse: CLUSTER, sources: { jira: {} } }, /heimdallr\.sources\.jira: is not a source/],
      [{ warehouse: CLUSTER, sources: { heroku: { enabled: true, apps: 'acme' } } }, /heimdallr\.sources\.heroku\.apps: must be a list/],
      [{ warehouse: { ...CLUSTER, secretArn: 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:x' } }, /not both/],
      [{ warehouse: { database: 'dev' } }, /names neither a cluster nor a serverless workgroup/],
      [{ warehouse: CLUSTER, logRetentionDays: 31 }, /heimdallr\.logRetentionDays: CloudWatch keeps logs for one of/],
      [{ warehouse: CLUSTER, sources: { rollbar: { enabled: false } } }, /every source is disabled/],
      [{ warehouse: CLUSTER, sources: { circleci: { enabled: true } } }, /heimdallr\.sources\.circleci\.projects: is empty but the source is enabled/],
    ];
    for (const [context, message] of cases) {
      expect(() => parseSettings(context)).toThrow(message);
    }
    expect(() => parseSettings('{not json')).toThrow(/is not valid JSON/);
  });

  test('CircleCI and Heroku are on once their projects or apps are listed, unless disabled', () => {
    const s = parseSettings({ warehouse: CLUSTER, sources: { circleci: { projects: ['gh/acme/web'] }, heroku: { apps: ['*'], enabled: false } } });
    expect(s.sources.circleci.enabled).toBe(true);
    expect(s.sources.heroku.enabled).toBe(false);
  });

  test('defaults: Rollbar only, one NAT, x86_64, 128 MB, PII dropped', () => {
    const s = parseSettings({ warehouse: CLUSTER });
    expect(s.sources.rollbar).toMatchObject({ enabled: true, scheduleMinutes: 1, memoryMb: 128 });
    expect(s.sources.circleci.enabled).toBe(false);
    expect(s.sources.heroku).toMatchObject({ enabled: false, scheduleMinutes: 5 });
    expect(s).toMatchObject({ natGateways: 1, architecture: 'x86_64', pii: 'drop', interfaceEndpoints: false, bundleDir: 'dist/lambda' });
  });

  test('a missing bundle fails synth naming the build command', () => {
    const empty = settings({ bundleDir: bundleDir([]) });
    expect(() => new HeimdallrStack(new App(), 'NoBundles', { settings: empty })).toThrow(MissingBundleError);
    expect(() => new HeimdallrStack(new App(), 'NoBundles2', { settings: empty })).toThrow(/scripts\/build-functions\.sh/);
  });

  test('arm64 and more memory are settings; arm64 takes the -arm64 bundles', () => {
    const { template: arm } = synth(settings({ architecture: 'arm64', memoryMb: 256 }));
    arm.allResourcesProperties('AWS::Lambda::Function', { Architectures: ['arm64'], MemorySize: 256 });
    const x86Only = settings({ architecture: 'arm64', bundleDir: bundleDir(['rollbar', 'circleci', 'heroku']) });
    expect(() => new HeimdallrStack(new App(), 'NoArm', { settings: x86Only })).toThrow(/rollbar-arm64/);
  });
});

test('template snapshot (asset hashes normalised)', () => {
  const stable = synth(parseSettings({ warehouse: CLUSTER, bundleDir: bundleDir(), sources: { circleci: { enabled: true, projects: ['gh/acme/web'] } } }));
  const text = JSON.stringify(stable.template.toJSON(), null, 2).replace(/[0-9a-f]{64}(\.zip)?/g, 'ASSET_HASH$1');
  expect(JSON.parse(text)).toMatchSnapshot();
});
