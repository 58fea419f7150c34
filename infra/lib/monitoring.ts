import { Duration } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as actions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as sns from 'aws-cdk-lib/aws-sns';
import { Construct } from 'constructs';
import { SourceFunction } from './source-function';

/** The namespace of the metrics the functions emit (EMF lines, see the README). */
export const METRIC_NAMESPACE = 'Heimdallr';

export interface FunctionMonitoringProps {
  readonly source: SourceFunction;
  readonly topic: sns.ITopic;
  /** Alarm when the newest synced data is older than this. */
  readonly freshness: Duration;
}

/**
 * Alarms for one function (errors, throttles, duration near the timeout, data freshness),
 * each notifying the topic, and its dashboard.
 */
export class FunctionMonitoring extends Construct {
  readonly alarms: cloudwatch.Alarm[];
  readonly dashboard: cloudwatch.Dashboard;

  constructor(scope: Construct, id: string, props: FunctionMonitoringProps) {
    super(scope, id);
    const fn = props.source.function;
    const name = props.source.source;
    const period = Duration.minutes(5);
    const custom = (metricName: string, statistic: string) =>
      new cloudwatch.Metric({
        namespace: METRIC_NAMESPACE,
        metricName,
        dimensionsMap: { Function: fn.functionName },
        statistic,
        period,
      });

    const errors = new cloudwatch.Alarm(this, 'Errors', {
      alarmDescription: `Heimdallr ${name}: invocations failed (see _heimdallr_runs and the function's logs)`,
      metric: fn.metricErrors({ period, statistic: 'Sum' }),
      threshold: 1,
      evaluationPeriods: 3,
      datapointsToAlarm: 2,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    const throttles = new cloudwatch.Alarm(this, 'Throttles', {
      alarmDescription: `Heimdallr ${name}: a run was throttled (the previous run still held the function's one slot)`,
      metric: fn.metricThrottles({ period, statistic: 'Sum' }),
      threshold: 1,
      evaluationPeriods: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    const nearTimeout = new cloudwatch.Alarm(this, 'DurationNearTimeout', {
      alarmDescription: `Heimdallr ${name}: runs take over 90% of the ${props.source.timeout.toSeconds()} s timeout`,
      metric: fn.metricDuration({ period, statistic: 'Maximum' }),
      threshold: props.source.timeout.toMilliseconds() * 0.9,
      evaluationPeriods: 3,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    const freshness = new cloudwatch.Alarm(this, 'Freshness', {
      alarmDescription: `Heimdallr ${name}: no data newer than ${props.freshness.toMinutes()} minutes reached the warehouse (or the function stopped reporting)`,
      metric: custom('FreshnessLagSeconds', 'Maximum'),
      threshold: props.freshness.toSeconds(),
      evaluationPeriods: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
      // A function that stopped running emits nothing: silence must alarm too.
      treatMissingData: cloudwatch.TreatMissingData.BREACHING,
    });
    this.alarms = [errors, throttles, nearTimeout, freshness];
    for (const alarm of this.alarms) {
      alarm.addAlarmAction(new actions.SnsAction(props.topic));
      alarm.addOkAction(new actions.SnsAction(props.topic));
    }

    const graph = (title: string, metrics: cloudwatch.IMetric[], right?: cloudwatch.IMetric[]) =>
      new cloudwatch.GraphWidget({ title, left: metrics, right, width: 8, height: 6 });
    this.dashboard = new cloudwatch.Dashboard(this, 'Dashboard', {
      defaultInterval: Duration.hours(24),
      widgets: [
        [
          new cloudwatch.AlarmStatusWidget({ title: `Heimdallr ${name}: alarms`, alarms: this.alarms, width: 24, height: 3 }),
        ],
        [
          graph('Invocations and errors', [fn.metricInvocations({ period }), fn.metricErrors({ period })]),
          graph('Duration (ms)', [fn.metricDuration({ period, statistic: 'Average' }), fn.metricDuration({ period, statistic: 'Maximum' })]),
          graph('Throttles', [fn.metricThrottles({ period })]),
        ],
        [
          graph('Rows written', [custom('RowsWritten', 'Sum')]),
          graph('Pages fetched and API retries', [custom('PagesFetched', 'Sum')], [custom('ApiRetries', 'Sum')]),
          graph('Rejected rows', [custom('Rejects', 'Sum')]),
        ],
        [
          new cloudwatch.GraphWidget({
            title: 'Freshness lag (s)',
            left: [custom('FreshnessLagSeconds', 'Maximum')],
            leftAnnotations: [{ value: props.freshness.toSeconds(), label: 'alarm' }],
            width: 24,
            height: 6,
          }),
        ],
      ],
    });
  }
}
