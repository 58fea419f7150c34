import { CfnOutput, Duration, Stack, StackProps } from 'aws-cdk-lib';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subscriptions from 'aws-cdk-lib/aws-sns-subscriptions';
import { NagSuppressions } from 'cdk-nag';
import { Construct } from 'constructs';
import { FunctionMonitoring } from './monitoring';
import { Network } from './network';
import { Settings, SOURCE_NAMES, sourceEnvironment } from './settings';
import { SourceFunction } from './source-function';

export interface HeimdallrStackProps extends StackProps {
  readonly settings: Settings;
}

/** The whole system, deployed together: network, one function per source, alarms, dashboards. */
export class HeimdallrStack extends Stack {
  readonly functions: SourceFunction[] = [];

  constructor(scope: Construct, id: string, props: HeimdallrStackProps) {
    super(scope, id, props);
    const settings = props.settings;
    const network = new Network(this, 'Network', {
      natGateways: settings.natGateways,
      interfaceEndpoints: settings.interfaceEndpoints,
      logRetentionDays: settings.logRetentionDays,
    });

    const topic = new sns.Topic(this, 'Alarms', { displayName: 'Heimdallr alarms', enforceSSL: true });
    if (settings.alarmEmail !== undefined) {
      topic.addSubscription(new subscriptions.EmailSubscription(settings.alarmEmail));
    }
    NagSuppressions.addResourceSuppressions(topic, [
      {
        id: 'AwsSolutions-SNS2',
        reason: 'Alarm notifications carry no data; CloudWatch alarms cannot publish to a topic encrypted with the AWS-managed SNS key',
      },
    ]);

    for (const source of SOURCE_NAMES) {
      const sourceSettings = settings.sources[source];
      if (!sourceSettings.enabled) continue;
      const id = source.charAt(0).toUpperCase() + source.slice(1);
      const fn = new SourceFunction(this, id, {
        source,
        bundleDir: settings.bundleDir,
        vpc: network.vpc,
        architecture: settings.architecture,
        memoryMb: sourceSettings.memoryMb,
        scheduleMinutes: sourceSettings.scheduleMinutes,
        logRetentionDays: settings.logRetentionDays,
        warehouse: settings.warehouse,
        environment: sourceEnvironment(source, settings),
      });
      new FunctionMonitoring(this, `${id}Monitoring`, {
        source: fn,
        topic,
        freshness: Duration.minutes(sourceSettings.freshnessMinutes),
      });
      new CfnOutput(this, `${id}SecretArn`, {
        value: fn.secret.secretArn,
        description: `Put the ${source} credentials here (aws secretsmanager put-secret-value, see the README)`,
      });
      this.functions.push(fn);
    }
    new CfnOutput(this, 'AlarmTopicArn', { value: topic.topicArn });
  }
}
