import { App, Aspects, Stack, Token } from 'aws-cdk-lib';
import { Annotations, Match, Template } from 'aws-cdk-lib/assertions';
import { AwsSolutionsChecks } from 'cdk-nag';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { addStages } from '../lib/app';
import { HeimdallrStack } from '../lib/heimdallr-stack';
import { heartbeatAlarm, parseSettings, parseStages, Settings, SettingsError, SOURCE_NAMES, SOURCES } from '../lib/settings';
import { BundleError, MissingBundleError } from '../lib/source-function';

/** An ELF header for a 64-bit little-endian executable of `machine` (62 x86_64, 183 arm64):
 * what synth reads of a bundle. */
function elfStub(machine: number, tag: string): Buffer {
  const header = Buffer.alloc(64);
  header.writeUInt32BE(0x7f454c46, 0);
  header[4] = 2; // 64-bit
  header[5] = 1; // little-endian
  header[6] = 1;
  header.writeUInt16LE(2, 16); // ET_EXEC
  header.writeUInt16LE(machine, 18);
  return Buffer.concat([header, Buffer.from(tag)]);
}

/** Stand-in bundles: synth reads their header and packages the directories, never runs them. */
function bundleDir(sources: string[] = SOURCE_NAMES.flatMap((name) => [name, `${name}-arm64`]), machineOf = (dir: string) => (dir.endsWith('-arm64') ? 183 : 62)): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'heimdallr-bundles-'));
  for (const source of sources) {
    fs.mkdirSync(path.join(dir, source));
    fs.writeFileSync(path.join(dir, source, 'bootstrap'), elfStub(machineOf(source), source), { mode: 0o755 });
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

function synth(s: Settings = settings(), stage = 'default'): { stack: Stack; template: Template } {
  const app = new App();
  const stack = new HeimdallrStack(app, 'Heimdallr', { settings: s, stage });
  Aspects.of(stack).add(new AwsSolutionsChecks());
  return { stack, template: Template.fromStack(stack) };
}

const { stack: fullStack, template } = synth();

function resourcesOf(type: string): Record<string, any> {
  return template.findResources(type);
}

/** A value that may be an Fn::Join, as text: references written <Id> and <Id.Attribute>. */
function joined(value: any): string {
  if (typeof value === 'string') return value;
  if (value['Fn::Join'] !== undefined) return value['Fn::Join'][1].map(joined).join(value['Fn::Join'][0]);
  if (value.Ref !== undefined) return `<${value.Ref}>`;
  if (value['Fn::GetAtt'] !== undefined) return `<${value['Fn::GetAtt'].join('.')}>`;
  throw new Error(`unexpected value ${JSON.stringify(value)}`);
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
    // By default only the S3 gateway endpoint (free): staged uploads skip the NAT.
    const defaults = Object.values(template.findResources('AWS::EC2::VPCEndpoint')).map((e) => e.Properties);
    expect(defaults).toHaveLength(1);
    expect(defaults[0].VpcEndpointType).toBe('Gateway');
    expect(JSON.stringify(defaults[0].ServiceName)).toContain('.s3');
    expect(defaults[0].RouteTableIds).toHaveLength(2);
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
      LoggingConfig: Match.objectLike({ LogFormat: 'JSON' }),
      VpcConfig: Match.objectLike({ SubnetIds: Match.anyValue() }),
    });
    template.allResourcesProperties('AWS::Lambda::EventInvokeConfig', { MaximumRetryAttempts: 0, MaximumEventAgeInSeconds: 60 });
    template.resourceCountIs('AWS::Lambda::EventInvokeConfig', 3);
  });

  test('reserved concurrency is off by default (a new account has no room for it) and a setting', () => {
    for (const fn of Object.values(resourcesOf('AWS::Lambda::Function'))) {
      expect(fn.Properties.ReservedConcurrentExecutions).toBeUndefined();
    }
    const { template: reserved } = synth(settings({ reservedConcurrency: true }));
    reserved.allResourcesProperties('AWS::Lambda::Function', { ReservedConcurrentExecutions: 1 });
  });

  test('functions, log groups, rules, alarms and dashboards are named after the stack', () => {
    const names = (type: string, property: string) => Object.values(resourcesOf(type)).map((r) => r.Properties[property]).sort();
    expect(names('AWS::Lambda::Function', 'FunctionName')).toEqual(['Heimdallr-circleci', 'Heimdallr-heroku', 'Heimdallr-rollbar']);
    expect(names('AWS::Logs::LogGroup', 'LogGroupName').filter((n) => n !== undefined)).toEqual([
      '/aws/lambda/Heimdallr-circleci',
      '/aws/lambda/Heimdallr-heroku',
      '/aws/lambda/Heimdallr-rollbar',
    ]);
    expect(names('AWS::Events::Rule', 'Name')).toEqual(['Heimdallr-circleci-schedule', 'Heimdallr-heroku-schedule', 'Heimdallr-rollbar-schedule']);
    expect(names('AWS::CloudWatch::Dashboard', 'DashboardName')).toEqual(['Heimdallr-circleci', 'Heimdallr-heroku', 'Heimdallr-rollbar']);
    for (const alarm of names('AWS::CloudWatch::Alarm', 'AlarmName')) expect(alarm).toMatch(/^Heimdallr-(rollbar|circleci|heroku)-[a-z-]+$/);
    // The topic keeps its generated name: renaming it would replace it and drop the
    // confirmed subscriptions.
    expect(names('AWS::SNS::Topic', 'TopicName')).toEqual([undefined]);
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
    expect(joined(env.HEIMDALLR_WAREHOUSE)).toMatch(/^redshift-data:\/\/heimdallr@cluster\/analytics\/analytics\?staging=/);
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

  test('the environments setting reaches every function as HEIMDALLR_ENVIRONMENTS', () => {
    const environments = [
      { name: 'production', rollbar: { project_id: 901, environment: 'production' }, heroku: { app: 'acme-web' } },
      { name: 'staging', rollbar: { project_id: 901, environment: 'staging' }, circleci: { project: 'gh/acme/web', branch: 'staging', deploys: true } },
    ];
    const { template: withEnvironments } = synth(settings({ environments }));
    for (const fn of Object.values(withEnvironments.findResources('AWS::Lambda::Function'))) {
      expect(JSON.parse(fn.Properties.Environment.Variables.HEIMDALLR_ENVIRONMENTS)).toEqual(environments);
    }
    for (const fn of Object.values(resourcesOf('AWS::Lambda::Function'))) {
      expect(fn.Properties.Environment.Variables.HEIMDALLR_ENVIRONMENTS).toBeUndefined();
    }
    expect(() => settings({ environments: [{ name: 'p', rollbar: { environment: 'p' } }] })).toThrow(/environments\[0\]\.rollbar\.project_id: must be a whole number/);
    const { template: withActivity } = synth(settings({ activityTable: 'app.user_activity' }));
    withActivity.allResourcesProperties('AWS::Lambda::Function', {
      Environment: { Variables: Match.objectLike({ HEIMDALLR_ACTIVITY_TABLE: 'app.user_activity' }) },
    });
    expect(() => settings({ activityTable: 'user_activity' })).toThrow(/heimdallr\.activityTable: is missing or malformed/);
    const twice = { name: 'production', rollbar: { project_id: 901, environment: 'production' }, heroku: { app: 'acme-web' } };
    expect(() => settings({ environments: [twice, { ...twice, name: 'other' }] })).toThrow(/environments\[1\]\.rollbar: this Rollbar project and environment is in two environments/);
  });

  test("Rollbar's deploy records are a switch of the source: ROLLBAR_DEPLOYS", () => {
    const { template: withDeploys } = synth(settings({ sources: { rollbar: { deploys: true } } }));
    const fn = Object.values(withDeploys.findResources('AWS::Lambda::Function'))[0];
    expect(fn.Properties.Environment.Variables.ROLLBAR_DEPLOYS).toBe('true');
    expect(resourcesOf('AWS::Lambda::Function')[functionIdFor('rollbar')].Properties.Environment.Variables.ROLLBAR_DEPLOYS).toBeUndefined();
    expect(() => settings({ sources: { rollbar: { deploys: 'yes' } } })).toThrow(/sources\.rollbar\.deploys: must be true or false/);
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

  test('a disabled source has no function, schedule or alarms, and keeps its secret', () => {
    const { template: only } = synth(settings({ sources: { rollbar: {}, circleci: { enabled: false, projects: ['gh/acme/web'] } } }));
    only.resourceCountIs('AWS::Lambda::Function', 1);
    only.resourceCountIs('AWS::Events::Rule', 1);
    only.resourceCountIs('AWS::CloudWatch::Dashboard', 1);
    expect(Object.keys(only.findResources('AWS::SecretsManager::Secret')).sort()).toEqual(['CircleciSecret4D957FEC', 'RollbarSecret47F3B9E6']);
    // Heroku was never turned on: no secret to keep.
  });
});

describe('monitoring', () => {
  test('seven alarms per function, each notifying the topic on alarm and recovery', () => {
    const alarms = Object.values(resourcesOf('AWS::CloudWatch::Alarm'));
    expect(alarms).toHaveLength(21);
    const topicId = Object.keys(resourcesOf('AWS::SNS::Topic'))[0];
    for (const alarm of alarms) {
      expect(alarm.Properties.AlarmActions).toEqual([{ Ref: topicId }]);
      expect(alarm.Properties.OKActions).toEqual([{ Ref: topicId }]);
    }
    const metrics = alarms.map((a) => a.Properties.MetricName).sort();
    expect(metrics).toEqual(
      ['Duration', 'Errors', 'FailedInvocations', 'SecondsSinceCaughtUp', 'Throttles', 'UnfinishedRuns', 'ViewsFailed'].flatMap((m) => Array(3).fill(m)),
    );
    // The age of the newest record is on the dashboard only: a quiet source is not late.
    expect(metrics).not.toContain('FreshnessLagSeconds');
  });

  const freshnessAlarm = (t: Template, source: string) => {
    const [alarm] = Object.values(t.findResources('AWS::CloudWatch::Alarm')).filter((a) => a.Properties.AlarmName === `Heimdallr-${source}-behind`);
    return alarm.Properties;
  };

  test('the freshness alarm watches the worst stream heartbeat, and silence breaches', () => {
    const rollbar = freshnessAlarm(template, 'rollbar');
    expect(rollbar).toMatchObject({
      Namespace: 'Heimdallr',
      MetricName: 'SecondsSinceCaughtUp',
      Statistic: 'Maximum',
      Dimensions: [{ Name: 'Function', Value: { Ref: expect.stringMatching(/^RollbarFunction/) } }],
      TreatMissingData: 'breaching',
      ComparisonOperator: 'GreaterThanThreshold',
    });
  });

  test('its window follows the schedule: every period of the window breaching means the freshness budget is spent', () => {
    // Rollbar: every minute, 15 minutes of budget; CircleCI and Heroku: every 5, 60.
    expect(freshnessAlarm(template, 'rollbar')).toMatchObject({ Period: 60, EvaluationPeriods: 8, DatapointsToAlarm: 8, Threshold: 8 * 60 });
    expect(freshnessAlarm(template, 'circleci')).toMatchObject({ Period: 300, EvaluationPeriods: 6, DatapointsToAlarm: 6, Threshold: 35 * 60 });
    for (const [schedule, freshness] of [
      [1, 2],
      [1, 15],
      [5, 60],
      [15, 45],
      [60, 120],
      [1440, 2880],
      [1, 2880],
    ]) {
      const w = heartbeatAlarm(schedule, freshness);
      expect(w.periodMinutes).toBe(schedule);
      // At least two runs in the window, so that one late run never alarms...
      expect(w.evaluationPeriods).toBeGreaterThanOrEqual(2);
      // ...a stream stuck since a catch-up alarms once the budget is spent: its heartbeat
      // crosses the threshold, then stays above it for the rest of the window...
      expect(w.thresholdMinutes + (w.evaluationPeriods - 1) * w.periodMinutes).toBe(freshness);
      expect(w.thresholdMinutes).toBeGreaterThanOrEqual(schedule);
      // ...and CloudWatch accepts the window (a day under hourly periods, a week otherwise).
      expect(w.evaluationPeriods * w.periodMinutes).toBeLessThanOrEqual(schedule < 60 ? 1440 : 10080);
    }
    const { template: slow } = synth(settings({ sources: { rollbar: { scheduleMinutes: 15, freshnessMinutes: 45 } } }));
    expect(freshnessAlarm(slow, 'rollbar')).toMatchObject({ Period: 900, EvaluationPeriods: 2, Threshold: 30 * 60 });
  });

  /**
   * What CloudWatch does with the freshness alarm, minute by minute: each period's datapoint
   * is the maximum heartbeat reported in it (none: missing, which breaches); the alarm fires
   * when every one of the last N periods breaches. `report(minute)` is what the function
   * emits at a run starting then: the seconds since the stream last caught up, or nothing.
   */
  function firstAlarmMinute(alarm: any, minutes: number, report: (minute: number) => number | undefined): number | undefined {
    const period = alarm.Period / 60;
    const datapoint = (start: number): number | undefined => {
      const values = Array.from({ length: period }, (_, i) => report(start + i)).filter((v): v is number => v !== undefined);
      return values.length === 0 ? undefined : Math.max(...values);
    };
    for (let now = period * alarm.EvaluationPeriods; now <= minutes; now += 1) {
      const lastStart = Math.floor(now / period) * period - period;
      const breaching = Array.from({ length: alarm.EvaluationPeriods }, (_, i) => datapoint(lastStart - i * period)).filter(
        (v) => v === undefined || v > alarm.Threshold,
      ).length;
      if (breaching >= alarm.DatapointsToAlarm) return now;
    }
    return undefined;
  }

  type Run = 'caught up' | 'partial' | 'failed' | 'no run';
  /** The heartbeat a stream reports at each run, as the engine keeps it (engine.rs): a run
   * that reaches the head resets it; a partial run commits, so a stream's first one starts
   * it; a failed run reports the one on record, if any; no run reports nothing. */
  function heartbeats(schedule: number, run: (minute: number) => Run) {
    let since: number | undefined;
    return (minute: number): number | undefined => {
      if (minute % schedule !== 0) return undefined;
      const outcome = run(minute);
      if (outcome === 'no run') return undefined;
      if (outcome === 'caught up') since = minute;
      if (outcome === 'partial') since = since ?? minute;
      return since === undefined ? undefined : (minute - since) * 60;
    };
  }

  describe.each([
    ['rollbar', 1, 15],
    ['circleci', 5, 60],
  ])('the %s freshness alarm (every %i min, %i min budget)', (source, schedule, budget) => {
    const day = 24 * 60;
    test('stays quiet for a quiet project, a night without builds and a brand-new project', () => {
      const alarm = freshnessAlarm(template, source);
      // Nothing new for hours: every run still reaches the head (also a new project's first).
      expect(firstAlarmMinute(alarm, day, heartbeats(schedule, () => 'caught up'))).toBeUndefined();
      // A new project whose backfill takes less than the budget.
      const backfill = budget - 2 * schedule;
      expect(firstAlarmMinute(alarm, day, heartbeats(schedule, (m) => (m < backfill ? 'partial' : 'caught up')))).toBeUndefined();
      // One run lost, or one failing (EventBridge is at-least-once, APIs have bad minutes).
      for (const bad of ['no run', 'failed'] as Run[]) {
        expect(firstAlarmMinute(alarm, day, heartbeats(schedule, (m) => (m === 600 ? bad : 'caught up')))).toBeUndefined();
      }
    });

    test('fires for a stopped schedule, a failing token and a stuck stream, within the budget', () => {
      const alarm = freshnessAlarm(template, source);
      const stop = 600;
      const until = (outcome: Run) => (m: number): Run => (m < stop ? 'caught up' : outcome);
      // The schedule stops (or the function crashes before reporting): silence.
      const stopped = firstAlarmMinute(alarm, day, heartbeats(schedule, until('no run')));
      expect(stopped).toBeGreaterThan(stop + schedule);
      expect(stopped).toBeLessThanOrEqual(stop + budget + schedule);
      // A revoked token from minute 600: runs fail and report the age of the last catch-up;
      // a stream stuck behind (partial every run) the same.
      for (const outcome of ['failed', 'partial'] as Run[]) {
        const late = firstAlarmMinute(alarm, day, heartbeats(schedule, until(outcome)));
        expect(late).toBeGreaterThanOrEqual(stop + budget - schedule);
        expect(late).toBeLessThanOrEqual(stop + budget + 2 * schedule);
      }
      // A token that never worked: nothing on record, silence from the start.
      expect(firstAlarmMinute(alarm, day, heartbeats(schedule, () => 'failed'))).toBeLessThanOrEqual(budget + 2 * schedule);
    });
  });

  test('EventBridge failing to invoke a function alarms', () => {
    const rules = resourcesOf('AWS::Events::Rule');
    const alarms = Object.values(resourcesOf('AWS::CloudWatch::Alarm')).filter((a) => a.Properties.MetricName === 'FailedInvocations');
    expect(alarms).toHaveLength(3);
    for (const alarm of alarms) {
      expect(alarm.Properties.Namespace).toBe('AWS/Events');
      const rule = alarm.Properties.Dimensions[0];
      expect(rule.Name).toBe('RuleName');
      expect(Object.keys(rules)).toContain(rule.Value.Ref);
    }
  });

  test('duration alarm at 90% of the timeout', () => {
    template.hasResourceProperties('AWS::CloudWatch::Alarm', { MetricName: 'Duration', Threshold: 45000 });
  });

  /** A dashboard's body as JSON, references to other resources written as REF. */
  const dashboardBody = (dashboard: any): any => {
    const body = dashboard.Properties.DashboardBody;
    const text = typeof body === 'string' ? body : body['Fn::Join'][1].map((part: unknown) => (typeof part === 'string' ? part : 'REF')).join('');
    return JSON.parse(text);
  };

  test('one dashboard per function: alarm states, its metrics, a line per stream, failed runs from the logs', () => {
    const dashboards = Object.values(resourcesOf('AWS::CloudWatch::Dashboard'));
    expect(dashboards).toHaveLength(3);
    for (const dashboard of dashboards) {
      const widgets: any[] = dashboardBody(dashboard).widgets;
      const text = JSON.stringify(widgets);
      for (const metric of ['Invocations', 'Errors', 'Duration', 'Throttles']) {
        expect(text).toContain(metric);
      }
      const searches = widgets.flatMap((w) => (w.properties.metrics ?? []).map((m: any[]) => m[0]?.expression).filter((e: unknown) => e !== undefined));
      for (const metric of ['RowsWritten', 'PagesFetched', 'ApiRetries', 'Rejects', 'FreshnessLagSeconds', 'SecondsSinceCaughtUp']) {
        // The engine's metrics carry the Stream dimension: searched, one line per stream.
        expect(searches).toContainEqual(expect.stringContaining(`SEARCH('{Heimdallr,Function,Stream} MetricName="${metric}" Function="REF"'`));
      }
      expect(widgets.some((w) => w.type === 'alarm')).toBe(true);
      const logs = widgets.find((w) => w.type === 'log');
      expect(logs.properties.query).toContain('filter message = "stream done" and status = "failed"');
      // The function's own log group (a reference, resolved at deploy).
      expect(logs.properties.query).toMatch(/^SOURCE 'REF' \| fields/);
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
    expect(joined(fn.Properties.Environment.Variables.HEIMDALLR_WAREHOUSE)).toMatch(/^redshift-data:\/\/workgroup\/analytics\/dev\?staging=/);
  });
});

describe('bulk loading through S3', () => {
  const COPY_ROLE = 'arn:aws:iam::123456789012:role/service-role/redshift-copy';
  const statementsOf = (policy: any): any[] => policy.Properties.PolicyDocument.Statement;
  const actionsOf = (statement: any): string[] => [statement.Action].flat();
  const bucketIdOf = (t: Template) => {
    const ids = Object.keys(t.findResources('AWS::S3::Bucket'));
    expect(ids).toHaveLength(1);
    return ids[0];
  };
  const copyRolesOf = (t: Template) => Object.entries(t.findResources('AWS::IAM::Role')).filter(([, r]) => r.Properties.RoleName === 'Heimdallr-redshift-copy');
  const bucketArn = (id: string) => ({ 'Fn::GetAtt': [id, 'Arn'] });
  const objectsArn = (id: string, prefix: string) => ({ 'Fn::Join': ['', [bucketArn(id), `/${prefix}*`]] });
  const warehouseOf = (t: Template, source: string) =>
    Object.values(t.findResources('AWS::Lambda::Function')).find((f) => f.Properties.FunctionName === `Heimdallr-${source}`)!.Properties.Environment.Variables
      .HEIMDALLR_WAREHOUSE;

  test('one private, encrypted, TLS-only bucket whose objects expire after a day', () => {
    const id = bucketIdOf(template);
    const bucket = resourcesOf('AWS::S3::Bucket')[id];
    expect(bucket.Properties).toMatchObject({
      PublicAccessBlockConfiguration: { BlockPublicAcls: true, BlockPublicPolicy: true, IgnorePublicAcls: true, RestrictPublicBuckets: true },
      BucketEncryption: { ServerSideEncryptionConfiguration: [{ ServerSideEncryptionByDefault: { SSEAlgorithm: 'AES256' } }] },
      OwnershipControls: { Rules: [{ ObjectOwnership: 'BucketOwnerEnforced' }] },
      LifecycleConfiguration: { Rules: [expect.objectContaining({ Status: 'Enabled', ExpirationInDays: 1, AbortIncompleteMultipartUpload: { DaysAfterInitiation: 1 } })] },
    });
    // A generated name; deleted with the stack once empty, without an auto-delete Lambda.
    expect(bucket.Properties.BucketName).toBeUndefined();
    expect(bucket).toMatchObject({ DeletionPolicy: 'Delete', UpdateReplacePolicy: 'Delete' });
    template.resourceCountIs('Custom::S3AutoDeleteObjects', 0);
    const [policy] = Object.values(resourcesOf('AWS::S3::BucketPolicy'));
    expect(policy.Properties.Bucket).toEqual({ Ref: id });
    expect(statementsOf(policy)).toContainEqual({
      Effect: 'Deny',
      Principal: { AWS: '*' },
      Action: 's3:*',
      Condition: { Bool: { 'aws:SecureTransport': 'false' } },
      Resource: [bucketArn(id), objectsArn(id, '')],
    });
    // Nothing else in the bucket's policy while the stack makes the COPY role.
    expect(statementsOf(policy)).toHaveLength(1);
  });

  test('each function may write and delete under its own prefix, and nothing else in S3', () => {
    const id = bucketIdOf(template);
    const s3Statements = (policy: any) => statementsOf(policy).filter((s) => actionsOf(s).some((a) => a.startsWith('s3:')) || JSON.stringify(s.Resource).includes(id));
    for (const source of ['rollbar', 'circleci', 'heroku']) {
      const [, policy] = Object.entries(resourcesOf('AWS::IAM::Policy')).find(([policyId]) => policyId.toLowerCase().startsWith(`${source}function`))!;
      expect(s3Statements(policy)).toEqual([
        expect.objectContaining({ Effect: 'Allow', Action: ['s3:PutObject', 's3:DeleteObject'], Resource: objectsArn(id, `${source}/`) }),
      ]);
    }
    // No other policy of the stack names the bucket (the COPY role's is inline, below).
    const others = Object.entries(resourcesOf('AWS::IAM::Policy')).filter(([policyId]) => !/^(Rollbar|Circleci|Heroku)Function/.test(policyId));
    for (const [, policy] of others) expect(JSON.stringify(policy)).not.toContain(id);
  });

  test('the COPY role: assumed by Redshift, named after the stack, reads the staging bucket only', () => {
    const id = bucketIdOf(template);
    const roles = copyRolesOf(template);
    expect(roles).toHaveLength(1);
    const [roleId, role] = roles[0];
    expect(role.Properties.AssumeRolePolicyDocument.Statement).toEqual([
      { Effect: 'Allow', Action: 'sts:AssumeRole', Principal: { Service: 'redshift.amazonaws.com' } },
    ]);
    expect(role.Properties.ManagedPolicyArns).toBeUndefined();
    const statements = role.Properties.Policies.flatMap((p: any) => p.PolicyDocument.Statement);
    expect(statements.map((s: any) => [s.Effect, s.Action, s.Resource, s.Condition])).toEqual([
      ['Allow', 's3:GetObject', objectsArn(id, ''), undefined],
      ['Allow', 's3:ListBucket', bucketArn(id), undefined],
    ]);
    // No policy elsewhere is attached to it.
    for (const policy of Object.values(resourcesOf('AWS::IAM::Policy'))) {
      expect(policy.Properties.Roles).not.toContainEqual({ Ref: roleId });
    }
    expect(template.findOutputs('CopyRoleArn').CopyRoleArn.Value).toEqual({ 'Fn::GetAtt': [roleId, 'Arn'] });
    expect(template.findOutputs('StagingBucketName').StagingBucketName.Value).toEqual({ Ref: id });
  });

  test('on serverless the role also trusts redshift-serverless.amazonaws.com (AWS asks for both)', () => {
    const workgroupArn = 'arn:aws:redshift-serverless:eu-west-1:123456789012:workgroup/0b1c2d3e-aaaa-bbbb-cccc-123456789012';
    const { template: serverless } = synth(settings({ warehouse: { workgroupName: 'analytics', workgroupArn, database: 'dev' } }));
    const [[, role]] = copyRolesOf(serverless);
    const services = role.Properties.AssumeRolePolicyDocument.Statement.flatMap((s: any) => [s.Principal.Service].flat());
    expect(services.sort()).toEqual(['redshift-serverless.amazonaws.com', 'redshift.amazonaws.com']);
  });

  test("each function's warehouse URL names its own staging prefix and the COPY role (an Fn::Join)", () => {
    const id = bucketIdOf(template);
    const [[roleId]] = copyRolesOf(template);
    for (const source of ['rollbar', 'circleci', 'heroku']) {
      const url = warehouseOf(template, source);
      expect(url['Fn::Join']).toBeDefined();
      const parts = JSON.stringify(url);
      expect(parts).toContain('staging=s3://');
      expect(url['Fn::Join'][1]).toContainEqual({ Ref: id });
      expect(parts).toContain(`/${source}/`);
      expect(parts).toContain('copy_role=');
      expect(joined(url)).toBe(`redshift-data://heimdallr@cluster/analytics/analytics?staging=s3://<${id}>/${source}/&copy_role=<${roleId}.Arn>`);
    }
  });

  test('options follow a secret_arn with &', () => {
    const secretArn = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:redshift-heimdallr-AbCdEf';
    const { template: withSecret } = synth(settings({ warehouse: { cluster: 'analytics', secretArn, database: 'analytics' } }));
    const id = bucketIdOf(withSecret);
    const [[roleId]] = copyRolesOf(withSecret);
    expect(joined(warehouseOf(withSecret, 'rollbar'))).toBe(
      `redshift-data://cluster/analytics/analytics?secret_arn=${secretArn}&staging=s3://<${id}>/rollbar/&copy_role=<${roleId}.Arn>`,
    );
  });

  test('an existing COPY role: no role made, the bucket policy lets it read, the URL names it', () => {
    const { stack, template: existing } = synth(settings({ warehouse: { ...CLUSTER, copyRoleArn: COPY_ROLE } }));
    const id = bucketIdOf(existing);
    expect(copyRolesOf(existing)).toEqual([]);
    // Only the functions' roles (and CDK's flow-log role) remain.
    for (const role of Object.values(existing.findResources('AWS::IAM::Role'))) {
      expect(JSON.stringify(role.Properties.AssumeRolePolicyDocument)).not.toContain('redshift');
    }
    const [policy] = Object.values(existing.findResources('AWS::S3::BucketPolicy'));
    const grants = statementsOf(policy).filter((s) => s.Effect === 'Allow');
    expect(grants.map((s) => [s.Principal, s.Action, s.Resource])).toEqual([
      [{ AWS: COPY_ROLE }, 's3:GetObject', objectsArn(id, '')],
      [{ AWS: COPY_ROLE }, 's3:ListBucket', bucketArn(id)],
    ]);
    expect(joined(warehouseOf(existing, 'rollbar'))).toBe(`redshift-data://heimdallr@cluster/analytics/analytics?staging=s3://<${id}>/rollbar/&copy_role=${COPY_ROLE}`);
    expect(existing.findOutputs('CopyRoleArn').CopyRoleArn.Value).toBe(COPY_ROLE);
    const findings = Annotations.fromStack(stack).findError('*', Match.stringLikeRegexp('AwsSolutions-.*'));
    expect(findings.map((e) => e.entry.data)).toEqual([]);
  });

  test('bulkRows goes into the URL as bulk_rows when set', () => {
    const { template: bulk } = synth(settings({ warehouse: { ...CLUSTER, bulkRows: 5000 } }));
    for (const source of ['rollbar', 'circleci', 'heroku']) {
      expect(joined(warehouseOf(bulk, source))).toMatch(new RegExp(`/${source}/&copy_role=<[A-Za-z0-9]+\\.Arn>&bulk_rows=5000$`));
    }
    expect(JSON.stringify(warehouseOf(template, 'rollbar'))).not.toContain('bulk_rows');
  });

  test('malformed bulk loading settings name themselves', () => {
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ bulkRows: 0 }, /heimdallr\.warehouse\.bulkRows: must be a whole number from 1 to 1000000, got 0/],
      [{ bulkRows: 2.5 }, /heimdallr\.warehouse\.bulkRows: must be a whole number/],
      [{ bulkRows: '500' }, /heimdallr\.warehouse\.bulkRows: must be a whole number/],
      [{ bulkRows: 1_000_001 }, /heimdallr\.warehouse\.bulkRows: must be a whole number/],
      [{ copyRoleArn: 'redshift-copy' }, /heimdallr\.warehouse\.copyRoleArn: is missing or malformed.*Example: "copyRoleArn": "arn:aws:iam::/],
      [{ copyRoleArn: 'arn:aws:iam::123456789012:user/copy' }, /heimdallr\.warehouse\.copyRoleArn: is missing or malformed/],
      // It goes verbatim into the URL's options, which `&` separates.
      [{ copyRoleArn: 'arn:aws:iam::123456789012:role/a&b' }, /heimdallr\.warehouse\.copyRoleArn: is missing or malformed/],
      [{ bulkrows: 500 }, /heimdallr\.warehouse\.bulkrows: is not a setting \(did you mean "bulkRows"\?\)/],
      [{ copyRolArn: COPY_ROLE }, /heimdallr\.warehouse\.copyRolArn: is not a setting \(did you mean "copyRoleArn"\?\)/],
    ];
    for (const [warehouse, message] of cases) {
      expect(() => parseSettings({ warehouse: { ...CLUSTER, ...warehouse } })).toThrow(SettingsError);
      expect(() => parseSettings({ warehouse: { ...CLUSTER, ...warehouse } })).toThrow(message);
    }
    expect(parseSettings({ warehouse: { ...CLUSTER, bulkRows: 1, copyRoleArn: COPY_ROLE } }).warehouse).toMatchObject({ bulkRows: 1, copyRoleArn: COPY_ROLE });
    expect(parseSettings({ warehouse: { ...CLUSTER, bulkRows: 1_000_000 } }).warehouse.bulkRows).toBe(1_000_000);
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

  test('the staging bucket suppresses only server access logs, and the serverless variant is clean too', () => {
    const [bucket] = Object.values(resourcesOf('AWS::S3::Bucket'));
    expect(bucket.Metadata.cdk_nag.rules_to_suppress).toEqual([
      { id: 'AwsSolutions-S1', reason: expect.stringMatching(/transient staging copies.*CloudTrail data events/) },
    ]);
    const workgroupArn = 'arn:aws:redshift-serverless:eu-west-1:123456789012:workgroup/0b1c2d3e-aaaa-bbbb-cccc-123456789012';
    const { stack } = synth(settings({ warehouse: { workgroupName: 'analytics', workgroupArn, database: 'dev', bulkRows: 100 } }));
    const findings = [
      ...Annotations.fromStack(stack).findError('*', Match.stringLikeRegexp('AwsSolutions-.*')),
      ...Annotations.fromStack(stack).findWarning('*', Match.stringLikeRegexp('AwsSolutions-.*')),
    ];
    expect(findings.map((e) => e.entry.data)).toEqual([]);
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

describe('strict settings', () => {
  const typos: [string, Record<string, unknown>, RegExp][] = [
    ['top level', { warehouse: CLUSTER, alarmEmial: 'oncall@example.com' }, /heimdallr\.alarmEmial: is not a setting \(did you mean "alarmEmail"\?\)/],
    ['top level', { warehouse: CLUSTER, natGateway: 2 }, /heimdallr\.natGateway: is not a setting \(did you mean "natGateways"\?\)/],
    ['warehouse', { warehouse: { ...CLUSTER, dbuser: 'x' } }, /heimdallr\.warehouse\.dbuser: is not a setting \(did you mean "dbUser"\?\)/],
    ['sources', { warehouse: CLUSTER, sources: { rollbr: {} } }, /heimdallr\.sources\.rollbr: is not a source \(did you mean "rollbar"\?/],
    ['a source', { warehouse: CLUSTER, sources: { rollbar: { schedulMinutes: 5 } } }, /heimdallr\.sources\.rollbar\.schedulMinutes: is not a setting \(did you mean "scheduleMinutes"\?\)/],
    ['a source', { warehouse: CLUSTER, sources: { heroku: { app: ['acme'] } } }, /heimdallr\.sources\.heroku\.app: is not a setting \(did you mean "apps"\?\)/],
    ['a stage', { warehouse: CLUSTER, stages: { production: { terminationProtecton: true } } }, /heimdallr\.stages\.production\.terminationProtecton: is not a setting \(did you mean "terminationProtection"\?\)/],
    ['a stage\'s source', { warehouse: CLUSTER, stages: { staging: { sources: { rollbar: { enabeld: false } } } } }, /\(stage staging\) heimdallr\.sources\.rollbar\.enabeld: is not a setting \(did you mean "enabled"\?\)/],
    [
      'an environment',
      { warehouse: CLUSTER, environments: [{ name: 'production', rollbar: { project_id: 901, enviroment: 'production' } }] },
      /heimdallr\.environments\[0\]\.rollbar\.enviroment: is not a setting \(did you mean "environment"\?\)/,
    ],
  ];
  test.each(typos)('a typo in %s is an error naming the nearest key', (_, context, message) => {
    expect(() => parseStages(context)).toThrow(SettingsError);
    expect(() => parseStages(context)).toThrow(message);
  });

  test('an unknown key far from every setting lists the known ones', () => {
    expect(() => parseStages({ warehouse: CLUSTER, colour: 'blue' })).toThrow(/heimdallr\.colour: is not a setting \(known keys: warehouse, sources,/);
  });

  test("what makes a stack itself belongs in a stage's block", () => {
    expect(() => parseStages({ warehouse: CLUSTER, stackName: 'Heimdallr', stages: { staging: {}, production: {} } })).toThrow(
      /heimdallr\.stackName: belongs in a stage's block when there are stages/,
    );
    expect(() => parseStages({ warehouse: CLUSTER, stages: { production: { tags: { 'aws:team': 'x' } } } })).toThrow(/not starting with aws:/);
  });

  test('an unknown stage is named, with the stages there are', () => {
    const context = { warehouse: CLUSTER, stages: { staging: {}, production: {} } };
    expect(() => parseStages(context, 'prod')).toThrow(/has no stage "prod".*stages: staging, production/);
  });
});

describe('secrets outlive changes', () => {
  test('retained when the stack or the source goes, under logical ids that never change', () => {
    const secrets = resourcesOf('AWS::SecretsManager::Secret');
    expect(Object.keys(secrets).sort()).toEqual(['CircleciSecret4D957FEC', 'HerokuSecretC53AF69B', 'RollbarSecret47F3B9E6']);
    for (const name of SOURCE_NAMES) {
      expect(secrets[SOURCES[name].secretLogicalId]).toMatchObject({ DeletionPolicy: 'Retain', UpdateReplacePolicy: 'Retain' });
    }
  });

  test('emptying a source list keeps its secret too', () => {
    const emptied = synth(settings({ sources: { rollbar: {}, circleci: { projects: [] }, heroku: { apps: [] } } })).template;
    expect(Object.keys(emptied.findResources('AWS::SecretsManager::Secret')).sort()).toEqual(['CircleciSecret4D957FEC', 'HerokuSecretC53AF69B', 'RollbarSecret47F3B9E6']);
    emptied.resourceCountIs('AWS::Lambda::Function', 1);
  });

  test('disabling a source and enabling it again finds the same secret', () => {
    const on = synth(settings()).template.findResources('AWS::SecretsManager::Secret');
    const off = synth(settings({ sources: { rollbar: {}, circleci: { enabled: false, projects: ['gh/acme/web'] }, heroku: { enabled: false } } })).template;
    expect(Object.keys(off.findResources('AWS::SecretsManager::Secret')).sort()).toEqual(Object.keys(on).sort());
    expect(Object.keys(off.findResources('AWS::Lambda::Function'))).toHaveLength(1);
    off.resourceCountIs('AWS::Events::Rule', 1);
  });

  test('another stack or stage name keeps the same ids', () => {
    const app = new App();
    const other = new HeimdallrStack(app, 'Heimdallr-staging', { settings: settings(), stage: 'staging' });
    expect(Object.keys(Template.fromStack(other).findResources('AWS::SecretsManager::Secret')).sort()).toEqual(
      ['CircleciSecret4D957FEC', 'HerokuSecretC53AF69B', 'RollbarSecret47F3B9E6'],
    );
  });
});

describe('stages', () => {
  const stagesContext = (extra: Record<string, unknown> = {}) => ({
    warehouse: CLUSTER,
    bundleDir: bundleDir(),
    stages: {
      staging: { warehouse: { schema: 'heimdallr_staging' }, alarmEmail: 'dev@example.com' },
      production: { account: '123456789012', region: 'eu-west-1', alarmEmail: 'oncall@example.com', tags: { team: 'data' } },
    },
    ...extra,
  });
  const appWith = (context: Record<string, unknown>, stage?: string) => {
    const app = new App({ context: { heimdallr: context, ...(stage === undefined ? {} : { stage }) } });
    return addStages(app, path.resolve(__dirname, '../..'));
  };

  test('one stack per stage, named after it; -c stage= picks one', () => {
    const stacks = appWith(stagesContext());
    expect(stacks.map((s) => s.stackName)).toEqual(['Heimdallr-staging', 'Heimdallr-production']);
    expect(appWith(stagesContext(), 'production').map((s) => s.stackName)).toEqual(['Heimdallr-production']);
  });

  test('a stage overrides the shared settings object by object', () => {
    const [staging, production] = appWith(stagesContext());
    const env = (stack: Stack) => Object.values(Template.fromStack(stack).findResources('AWS::Lambda::Function'))[0].Properties.Environment.Variables;
    expect(env(staging).HEIMDALLR_SCHEMA).toBe('heimdallr_staging');
    expect(joined(env(staging).HEIMDALLR_WAREHOUSE)).toMatch(/^redshift-data:\/\/heimdallr@cluster\/analytics\/analytics\?staging=/);
    expect(env(production).HEIMDALLR_SCHEMA).toBe('heimdallr');
    Template.fromStack(staging).hasResourceProperties('AWS::SNS::Subscription', { Endpoint: 'dev@example.com' });
    Template.fromStack(production).hasResourceProperties('AWS::SNS::Subscription', { Endpoint: 'oncall@example.com' });
  });

  test('production is protected from deletion and pinned where its settings say', () => {
    const [staging, production] = appWith(stagesContext());
    expect(production.terminationProtection).toBe(true);
    expect(staging.terminationProtection).toBe(false);
    expect(production.account).toBe('123456789012');
    expect(production.region).toBe('eu-west-1');
    expect(Token.isUnresolved(staging.account)).toBe(true);
  });

  test('every resource that takes tags carries project, stage and, for a source, source', () => {
    const [, production] = appWith(stagesContext());
    const t = Template.fromStack(production);
    const tagsOf = (resource: any): Record<string, string> => Object.fromEntries((resource.Properties?.Tags ?? []).map((tag: { Key: string; Value: string }) => [tag.Key, tag.Value]));
    for (const type of ['AWS::Lambda::Function', 'AWS::SecretsManager::Secret', 'AWS::EC2::VPC', 'AWS::SNS::Topic', 'AWS::Logs::LogGroup', 'AWS::IAM::Role']) {
      for (const resource of Object.values(t.findResources(type))) {
        expect({ type, tags: tagsOf(resource) }).toEqual({ type, tags: expect.objectContaining({ project: 'heimdallr', stage: 'production', team: 'data' }) });
      }
    }
    const rollbarFunction = Object.values(t.findResources('AWS::Lambda::Function')).find((f) => f.Properties.FunctionName === 'Heimdallr-production-rollbar');
    expect(tagsOf(rollbarFunction).source).toBe('rollbar');
    expect(tagsOf(t.findResources('AWS::SecretsManager::Secret').RollbarSecret47F3B9E6).source).toBe('rollbar');
  });

  test('outputs name each dashboard URL, role ARN and secret ARN, the staging bucket and the COPY role', () => {
    const [, production] = appWith(stagesContext());
    const outputs = Template.fromStack(production).findOutputs('*');
    expect(Object.keys(outputs).sort()).toEqual([
      'AlarmTopicArn',
      'CopyRoleArn',
      'NetworkNatPublicIp1',
      'RollbarDashboardUrl',
      'RollbarRoleArn',
      'RollbarSecretArn',
      'StagingBucketName',
    ]);
    expect(JSON.stringify(outputs.RollbarDashboardUrl.Value)).toContain('#dashboards/dashboard/Heimdallr-production-rollbar');
    expect(outputs.RollbarRoleArn.Value).toEqual({ 'Fn::GetAtt': [expect.stringMatching(/^RollbarFunctionServiceRole/), 'Arn'] });
    // Named, for the Redshift Serverless grants to IAMR:<role name>.
    expect(Object.values(Template.fromStack(production).findResources('AWS::IAM::Role')).map((r) => r.Properties.RoleName)).toContain('Heimdallr-production-rollbar');
  });

  test('settings without stages are one stack that keeps the name earlier releases deployed', () => {
    const stacks = appWith({ warehouse: CLUSTER, bundleDir: bundleDir() });
    expect(stacks.map((s) => [s.stackName, s.terminationProtection])).toEqual([['Heimdallr', false]]);
  });

  test('cdk-nag finds nothing in a second stage', () => {
    const [staging] = appWith(stagesContext());
    Aspects.of(staging).add(new AwsSolutionsChecks());
    Template.fromStack(staging);
    const findings = Annotations.fromStack(staging).findError('*', Match.stringLikeRegexp('AwsSolutions-.*'));
    expect(findings.map((e) => e.entry.data)).toEqual([]);
  });
});

describe('bundles are checked at synth', () => {
  test('a bundle built for another architecture fails synth, naming both', () => {
    const armInX86 = settings({ bundleDir: bundleDir(['rollbar', 'circleci', 'heroku'], () => 183) });
    expect(() => new HeimdallrStack(new App(), 'WrongArch', { settings: armInX86 })).toThrow(BundleError);
    expect(() => new HeimdallrStack(new App(), 'WrongArch2', { settings: armInX86 })).toThrow(/built for arm64, but the functions run on x86_64/);
  });

  test('a file that is not a Linux executable fails synth', () => {
    const dir = bundleDir();
    fs.writeFileSync(path.join(dir, 'rollbar', 'bootstrap'), '#!/bin/sh\necho hi\n');
    expect(() => new HeimdallrStack(new App(), 'Script', { settings: settings({ bundleDir: dir }) })).toThrow(/not a Linux executable/);
  });

  test('a bundle older than its Rust sources is reported', () => {
    const dir = bundleDir();
    const old = new Date('2020-01-01T00:00:00Z');
    fs.utimesSync(path.join(dir, 'rollbar', 'bootstrap'), old, old);
    const stack = new HeimdallrStack(new App(), 'Stale', { settings: settings({ bundleDir: dir }), projectRoot: path.resolve(__dirname, '../..') });
    const warnings = Annotations.fromStack(stack).findWarning('*', Match.stringLikeRegexp('older than'));
    // The newest of its inputs: a source file, or Cargo.lock after a dependency change.
    expect(warnings.map((w) => w.entry.data)).toEqual([
      expect.stringMatching(/The rollbar bundle .* is older than (functions\/(rollbar|core)\/.*|Cargo\.lock): run scripts\/build-functions\.sh/),
    ]);
  });
});

test('template snapshot (asset hashes normalised)', () => {
  const stable = synth(parseSettings({ warehouse: CLUSTER, bundleDir: bundleDir(), sources: { circleci: { enabled: true, projects: ['gh/acme/web'] } } }));
  const text = JSON.stringify(stable.template.toJSON(), null, 2).replace(/[0-9a-f]{64}(\.zip)?/g, 'ASSET_HASH$1');
  expect(JSON.parse(text)).toMatchSnapshot();
});
