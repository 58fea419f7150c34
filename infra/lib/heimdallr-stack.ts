import { Aws, CfnOutput, RemovalPolicy, Stack, StackProps, Tags } from 'aws-cdk-lib';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subscriptions from 'aws-cdk-lib/aws-sns-subscriptions';
import { NagSuppressions } from 'cdk-nag';
import { Construct } from 'constructs';
import { FunctionMonitoring } from './monitoring';
import { Network } from './network';
import { Settings, SOURCE_NAMES, SOURCES, SourceName, sourceEnvironment } from './settings';
import { SourceFunction } from './source-function';
import { Staging } from './staging';

export interface HeimdallrStackProps extends StackProps {
  readonly settings: Settings;
  /** The stage this stack is (tagged on every resource); "default" without stages. */
  readonly stage?: string;
  /** The project root, to report bundles older than their sources. */
  readonly projectRoot?: string;
}

/** Tags every resource carries, besides the stage's own. */
export const PROJECT_TAG = { key: 'project', value: 'heimdallr' };

/** The whole system for one stage, deployed together: network, one function per source,
 * their secrets, alarms and dashboards, and the staging bucket for bulk loads. */
export class HeimdallrStack extends Stack {
  readonly functions: SourceFunction[] = [];
  readonly secrets: Partial<Record<SourceName, secretsmanager.Secret>> = {};
  readonly staging?: Staging;

  constructor(scope: Construct, id: string, props: HeimdallrStackProps) {
    super(scope, id, props);
    const settings = props.settings;
    const stage = props.stage ?? 'default';
    Tags.of(this).add(PROJECT_TAG.key, PROJECT_TAG.value);
    Tags.of(this).add('stage', stage);
    const prefix = this.stackName;

    const network = new Network(this, 'Network', {
      natGateways: settings.natGateways,
      interfaceEndpoints: settings.interfaceEndpoints,
      logRetentionDays: settings.logRetentionDays,
    });

    // Not named: a new name would replace the topic, and its subscriptions would have to be
    // confirmed again (the display name and the stage tag tell stages apart).
    const topic = new sns.Topic(this, 'Alarms', { displayName: `Heimdallr ${stage} alarms`, enforceSSL: true });
    if (settings.alarmEmail !== undefined) {
      topic.addSubscription(new subscriptions.EmailSubscription(settings.alarmEmail));
    }
    NagSuppressions.addResourceSuppressions(topic, [
      {
        id: 'AwsSolutions-SNS2',
        reason: 'Alarm notifications carry no data; CloudWatch alarms cannot publish to a topic encrypted with the AWS-managed SNS key',
      },
    ]);

    // One bucket for every function (each writes under its own prefix), and one role for
    // Redshift to associate, whatever the number of sources.
    if (SOURCE_NAMES.some((source) => settings.sources[source].enabled)) {
      this.staging = new Staging(this, 'Staging', {
        namePrefix: prefix,
        copyRoleArn: settings.warehouse.copyRoleArn,
        serverless: settings.warehouse.kind === 'serverless',
      });
      new CfnOutput(this, 'StagingBucketName', {
        value: this.staging.bucket.bucketName,
        description: 'Where the functions stage bulk loads for COPY (empty it before deleting the stack: docs/deploy.md)',
      });
      new CfnOutput(this, 'CopyRoleArn', {
        value: this.staging.copyRoleArn,
        description: 'The role Redshift assumes for COPY: associate it with the cluster or namespace (docs/deploy.md)',
      });
    }
    const staging = this.staging && { bucket: this.staging.bucket, copyRoleArn: this.staging.copyRoleArn };

    for (const source of SOURCE_NAMES) {
      const sourceSettings = settings.sources[source];
      if (!sourceSettings.declared) continue;
      const id = source.charAt(0).toUpperCase() + source.slice(1);
      const secret = this.sourceSecret(source, id, stage);
      if (!sourceSettings.enabled) continue;
      const fn = new SourceFunction(this, id, {
        source,
        secret,
        namePrefix: prefix,
        reservedConcurrency: settings.reservedConcurrency,
        projectRoot: props.projectRoot,
        bundleDir: settings.bundleDir,
        vpc: network.vpc,
        architecture: settings.architecture,
        memoryMb: sourceSettings.memoryMb,
        scheduleMinutes: sourceSettings.scheduleMinutes,
        logRetentionDays: settings.logRetentionDays,
        warehouse: settings.warehouse,
        staging,
        environment: sourceEnvironment(source, settings),
      });
      Tags.of(fn).add('source', source);
      const monitoring = new FunctionMonitoring(this, `${id}Monitoring`, {
        source: fn,
        topic,
        namePrefix: prefix,
        scheduleMinutes: sourceSettings.scheduleMinutes,
        freshnessMinutes: sourceSettings.freshnessMinutes,
      });
      Tags.of(monitoring).add('source', source);
      new CfnOutput(this, `${id}DashboardUrl`, {
        value: `https://${Aws.REGION}.console.aws.amazon.com/cloudwatch/home?region=${Aws.REGION}#dashboards/dashboard/${prefix}-${source}`,
        description: `The ${source} function's dashboard`,
      });
      new CfnOutput(this, `${id}RoleArn`, {
        value: fn.function.role!.roleArn,
        description: `The ${source} function's role (for Redshift grants: docs/deploy.md)`,
      });
      this.functions.push(fn);
    }
    new CfnOutput(this, 'AlarmTopicArn', { value: topic.topicArn });
  }

  /** A source's secret: kept when the stack or the source goes (retained, and made for a
   * disabled source too), under a logical id that never changes. */
  private sourceSecret(source: SourceName, id: string, stage: string): secretsmanager.Secret {
    const secret = new secretsmanager.Secret(this, `${id}Secret`, {
      description: `Heimdallr ${source} API credentials for stage ${stage} (JSON; see docs/deploy.md). Put the value after deploying.`,
      removalPolicy: RemovalPolicy.RETAIN,
    });
    (secret.node.defaultChild as secretsmanager.CfnSecret).overrideLogicalId(SOURCES[source].secretLogicalId);
    Tags.of(secret).add('source', source);
    NagSuppressions.addResourceSuppressions(secret, [
      {
        id: 'AwsSolutions-SMG4',
        reason: 'The secret holds third-party API tokens (Rollbar, CircleCI, Heroku) that only their owners can rotate',
      },
    ]);
    new CfnOutput(this, `${id}SecretArn`, {
      value: secret.secretArn,
      description: `Put the ${source} credentials here (aws secretsmanager put-secret-value, see docs/deploy.md)`,
    });
    this.secrets[source] = secret;
    return secret;
  }
}
