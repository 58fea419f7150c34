import { Duration } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as actions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as sns from 'aws-cdk-lib/aws-sns';
import { Construct } from 'constructs';
import { heartbeatAlarm } from './settings';
import { SourceFunction } from './source-function';

/** The namespace of the metrics the functions emit (EMF lines, see docs/lambdas.md). */
export const METRIC_NAMESPACE = 'Heimdallr';

export interface FunctionMonitoringProps {
  readonly source: SourceFunction;
  readonly topic: sns.ITopic;
  /** Prefix of alarm and dashboard names (the stack's name). */
  readonly namePrefix: string;
  readonly scheduleMinutes: number;
  /** Alarm when a stream has not caught up with its source for this long. */
  readonly freshnessMinutes: number;
}

/**
 * One function's alarms, each notifying the topic on alarm and on recovery:
 * - Freshness: a stream has not reached its source's head for `freshnessMinutes`, or the
 *   function reported nothing (stopped schedule, no heartbeat on record);
 * - Errors, Throttles, DurationNearTimeout, and ScheduleFailures (EventBridge could not
 *   invoke the function);
 * and its dashboard: alarm states, the function's metrics, one line per stream for the
 * engine's metrics, and the failed stream runs from the logs.
 */
export class FunctionMonitoring extends Construct {
  readonly alarms: cloudwatch.Alarm[];
  readonly freshness: cloudwatch.Alarm;
  readonly dashboard: cloudwatch.Dashboard;

  constructor(scope: Construct, id: string, props: FunctionMonitoringProps) {
    super(scope, id);
    const fn = props.source.function;
    const name = props.source.source;
    const prefix = `${props.namePrefix}-${name}`;
    const period = Duration.minutes(5);
    const custom = (metricName: string, statistic: string, metricPeriod: Duration = period) =>
      new cloudwatch.Metric({
        namespace: METRIC_NAMESPACE,
        metricName,
        dimensionsMap: { Function: fn.functionName },
        statistic,
        period: metricPeriod,
      });

    const window = heartbeatAlarm(props.scheduleMinutes, props.freshnessMinutes);
    this.freshness = new cloudwatch.Alarm(this, 'Freshness', {
      alarmName: `${prefix}-behind`,
      alarmDescription:
        `Heimdallr ${name}: a stream has not caught up with the source for ${props.freshnessMinutes} minutes, ` +
        `or the function reported nothing for ${window.evaluationPeriods * window.periodMinutes} minutes ` +
        '(see the dashboard, _heimdallr_runs and _heimdallr_state.caught_up_at)',
      // The worst stream: each EMF line carries the Function dimension alone too.
      metric: custom('SecondsSinceCaughtUp', 'Maximum', Duration.minutes(window.periodMinutes)),
      threshold: window.thresholdMinutes * 60,
      evaluationPeriods: window.evaluationPeriods,
      datapointsToAlarm: window.evaluationPeriods,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
      // A function that stopped running, or a stream with no heartbeat on record, emits
      // nothing: silence must alarm too.
      treatMissingData: cloudwatch.TreatMissingData.BREACHING,
    });
    const errors = new cloudwatch.Alarm(this, 'Errors', {
      alarmName: `${prefix}-errors`,
      alarmDescription: `Heimdallr ${name}: invocations failed (see _heimdallr_runs and the function's logs)`,
      metric: fn.metricErrors({ period, statistic: 'Sum' }),
      threshold: 1,
      evaluationPeriods: 3,
      datapointsToAlarm: 2,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    // Fires on the first occurrence in a period; silence is fine (nothing happened).
    const onAnyOccurrence = (id: string, alarmName: string, alarmDescription: string, metric: cloudwatch.IMetric) =>
      new cloudwatch.Alarm(this, id, {
        alarmName,
        alarmDescription,
        metric,
        threshold: 1,
        evaluationPeriods: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      });
    const throttles = onAnyOccurrence(
      'Throttles',
      `${prefix}-throttles`,
      `Heimdallr ${name}: a run was throttled (the previous run held the reserved slot, or the account's concurrency is exhausted)`,
      fn.metricThrottles({ period, statistic: 'Sum' }),
    );
    const nearTimeout = new cloudwatch.Alarm(this, 'DurationNearTimeout', {
      alarmName: `${prefix}-near-timeout`,
      alarmDescription: `Heimdallr ${name}: runs take over 90% of the ${props.source.timeout.toSeconds()} s timeout`,
      metric: fn.metricDuration({ period, statistic: 'Maximum' }),
      threshold: props.source.timeout.toMilliseconds() * 0.9,
      evaluationPeriods: 3,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    const scheduleFailures = onAnyOccurrence(
      'ScheduleFailures',
      `${prefix}-schedule-failures`,
      `Heimdallr ${name}: EventBridge could not invoke the function (permissions, throttling or a deleted function)`,
      new cloudwatch.Metric({
        namespace: 'AWS/Events',
        metricName: 'FailedInvocations',
        dimensionsMap: { RuleName: props.source.schedule.ruleName },
        statistic: 'Sum',
        period,
      }),
    );
    const viewsFailed = onAnyOccurrence(
      'ViewsFailed',
      `${prefix}-views-failed`,
      `Heimdallr ${name}: the warehouse refused the analyst views at a start (rows still sync; ` +
        'the error is in the logs, "the analyst views could not be created"; every cold start retries)',
      custom('ViewsFailed', 'Maximum'),
    );
    const killedRuns = onAnyOccurrence(
      'KilledRuns',
      `${prefix}-killed-runs`,
      `Heimdallr ${name}: a run started and never finished (killed for memory or past its timeout); ` +
        'the next run shrinks its pages (see _heimdallr_runs rows without finished_at, and memoryMb)',
      custom('UnfinishedRuns', 'Maximum'),
    );
    this.alarms = [this.freshness, errors, throttles, nearTimeout, scheduleFailures, viewsFailed, killedRuns];
    for (const alarm of this.alarms) {
      alarm.addAlarmAction(new actions.SnsAction(props.topic));
      alarm.addOkAction(new actions.SnsAction(props.topic));
    }

    const graph = (title: string, metrics: cloudwatch.IMetric[], right?: cloudwatch.IMetric[]) =>
      new cloudwatch.GraphWidget({ title, left: metrics, right, width: 8, height: 6 });
    // One line per stream (rollbar occurrences/web, ...): streams come from the secret and
    // the settings at run time, so a search finds them.
    const perStream = (title: string, metricName: string, statistic: string, annotation?: cloudwatch.HorizontalAnnotation) =>
      new cloudwatch.GraphWidget({
        title,
        left: [
          new cloudwatch.MathExpression({
            expression: `SEARCH('{${METRIC_NAMESPACE},Function,Stream} MetricName="${metricName}" Function="${fn.functionName}"', '${statistic}', ${period.toSeconds()})`,
            label: '',
            period,
          }),
        ],
        leftAnnotations: annotation === undefined ? undefined : [annotation],
        width: 12,
        height: 6,
      });
    this.dashboard = new cloudwatch.Dashboard(this, 'Dashboard', {
      dashboardName: prefix,
      defaultInterval: Duration.hours(24),
      widgets: [
        [new cloudwatch.AlarmStatusWidget({ title: `Heimdallr ${name}: alarms`, alarms: this.alarms, width: 24, height: 3 })],
        [
          graph('Invocations and errors', [fn.metricInvocations({ period }), fn.metricErrors({ period })]),
          graph('Duration (ms)', [fn.metricDuration({ period, statistic: 'Average' }), fn.metricDuration({ period, statistic: 'Maximum' })]),
          graph('Throttles', [fn.metricThrottles({ period })]),
        ],
        [
          perStream('Seconds since caught up, per stream (the freshness alarm watches the worst)', 'SecondsSinceCaughtUp', 'Maximum', {
            value: props.freshnessMinutes * 60,
            label: 'behind budget',
          }),
          perStream('Age of the newest source record, per stream (a quiet source is old, not late)', 'FreshnessLagSeconds', 'Maximum'),
        ],
        [
          perStream('Rows written, per stream', 'RowsWritten', 'Sum'),
          perStream('Pages fetched, per stream', 'PagesFetched', 'Sum'),
        ],
        [
          perStream('API retries, per stream', 'ApiRetries', 'Sum'),
          perStream('Rejected rows, per stream', 'Rejects', 'Sum'),
        ],
        [
          perStream('Failures worked around (refused page token, a record retried later), per stream', 'Recovered', 'Sum'),
          perStream('Earlier runs that never finished (killed), per stream', 'UnfinishedRuns', 'Maximum'),
        ],
        [
          new cloudwatch.LogQueryWidget({
            title: 'Failed stream runs',
            logGroupNames: [props.source.logGroup.logGroupName],
            queryLines: [
              'fields @timestamp, stream, kind, error',
              'filter message = "stream done" and status = "failed"',
              'sort @timestamp desc',
              'limit 50',
            ],
            width: 24,
            height: 6,
          }),
        ],
      ],
    });
  }
}
