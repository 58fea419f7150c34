import { Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import { NagSuppressions } from 'cdk-nag';
import { Construct } from 'constructs';
import * as fs from 'fs';
import * as path from 'path';
import { SourceName, WarehouseSettings, warehouseUrl } from './settings';

export interface SourceFunctionProps {
  readonly source: SourceName;
  /** Directory holding `<source>/bootstrap`, and `<source>-arm64/bootstrap` for arm64
   * (scripts/build-functions.sh writes both into dist/lambda). */
  readonly bundleDir: string;
  readonly vpc: ec2.IVpc;
  readonly architecture: 'x86_64' | 'arm64';
  readonly memoryMb: number;
  readonly scheduleMinutes: number;
  readonly logRetentionDays: number;
  readonly warehouse: WarehouseSettings;
  /** Settings the handler reads, besides the warehouse and secret. */
  readonly environment: Record<string, string>;
}

/** The error synth raises when a bundle has not been built. */
export class MissingBundleError extends Error {
  constructor(bundle: string, source: string) {
    super(
      `No Lambda bundle for ${source} at ${bundle}. Build the bundles first: scripts/build-functions.sh ` +
        '(or point heimdallr.bundleDir in cdk.json at a directory holding <source>/bootstrap)',
    );
    this.name = 'MissingBundleError';
  }
}

/**
 * One source's Lambda: its bundle, its own secret, a schedule that never overlaps runs
 * (reserved concurrency 1, no async retries or stale events), private subnets behind a
 * security group with no inbound rules, JSON logs with a retention, and IAM for exactly
 * the Data API calls and credentials its warehouse target needs.
 */
export class SourceFunction extends Construct {
  readonly function: lambda.Function;
  readonly secret: secretsmanager.Secret;
  readonly timeout: Duration;
  readonly source: SourceName;

  constructor(scope: Construct, id: string, props: SourceFunctionProps) {
    super(scope, id);
    this.source = props.source;
    const bundle = path.resolve(props.bundleDir, props.architecture === 'arm64' ? `${props.source}-arm64` : props.source);
    if (!fs.existsSync(path.join(bundle, 'bootstrap'))) {
      throw new MissingBundleError(bundle, props.source);
    }
    // Ten seconds under the period (at most Lambda's 15 minutes): a run never meets the next.
    this.timeout = Duration.seconds(Math.min(props.scheduleMinutes * 60 - 10, 900));

    this.secret = new secretsmanager.Secret(this, 'Secret', {
      description: `Heimdallr ${props.source} API credentials (JSON; see the README). Put the value after deploying.`,
    });
    const logGroup = new logs.LogGroup(this, 'Logs', {
      retention: props.logRetentionDays as logs.RetentionDays,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    const securityGroup = new ec2.SecurityGroup(this, 'SecurityGroup', {
      vpc: props.vpc,
      description: `Heimdallr ${props.source}: outbound HTTPS to the APIs and AWS, nothing inbound`,
      allowAllOutbound: true,
    });

    this.function = new lambda.Function(this, 'Function', {
      description: `Heimdallr: copies ${props.source} into Redshift`,
      runtime: lambda.Runtime.PROVIDED_AL2023,
      handler: 'bootstrap',
      code: lambda.Code.fromAsset(bundle),
      architecture: props.architecture === 'arm64' ? lambda.Architecture.ARM_64 : lambda.Architecture.X86_64,
      memorySize: props.memoryMb,
      timeout: this.timeout,
      reservedConcurrentExecutions: 1,
      retryAttempts: 0,
      maxEventAge: Duration.seconds(60),
      vpc: props.vpc,
      vpcSubnets: { subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS },
      securityGroups: [securityGroup],
      loggingFormat: lambda.LoggingFormat.JSON,
      logGroup,
      environment: {
        ...props.environment,
        HEIMDALLR_SECRET_ARN: this.secret.secretArn,
        HEIMDALLR_WAREHOUSE: warehouseUrl(props.warehouse),
        HEIMDALLR_SCHEMA: props.warehouse.schema,
      },
    });
    this.secret.grantRead(this.function);
    this.grantWarehouse(props.warehouse);

    new events.Rule(this, 'Schedule', {
      description: `Runs Heimdallr ${props.source} every ${props.scheduleMinutes} minute(s)`,
      schedule: events.Schedule.rate(Duration.minutes(props.scheduleMinutes)),
      targets: [new targets.LambdaFunction(this.function, { retryAttempts: 0, maxEventAge: Duration.seconds(60) })],
    });

    NagSuppressions.addResourceSuppressions(
      this,
      [
        {
          id: 'AwsSolutions-SMG4',
          reason: 'The secret holds third-party API tokens (Rollbar, CircleCI, Heroku) that only their owners can rotate',
        },
        {
          id: 'AwsSolutions-IAM4',
          reason: 'AWSLambdaBasicExecutionRole (its own logs) and AWSLambdaVPCAccessExecutionRole (ENIs in the VPC) are the minimal AWS-managed policies for a VPC function',
          appliesTo: [
            'Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole',
            'Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole',
          ],
        },
        {
          id: 'AwsSolutions-IAM5',
          reason:
            'DescribeStatement, GetStatementResult and CancelStatement take no resource ARN; they are limited to statements this role submitted by the statement-owner condition',
          appliesTo: ['Resource::*'],
        },
      ],
      true,
    );
  }

  /** The Data API actions and the credential action the target needs, nothing more. */
  private grantWarehouse(warehouse: WarehouseSettings): void {
    const stack = Stack.of(this);
    const compute =
      warehouse.kind === 'cluster'
        ? `arn:${stack.partition}:redshift:${stack.region}:${stack.account}:cluster:${warehouse.cluster}`
        : warehouse.workgroupArn;
    this.function.addToRolePolicy(
      new iam.PolicyStatement({
        sid: 'SubmitStatements',
        actions: ['redshift-data:BatchExecuteStatement', 'redshift-data:ExecuteStatement'],
        resources: [compute],
      }),
    );
    this.function.addToRolePolicy(
      new iam.PolicyStatement({
        sid: 'FollowOwnStatements',
        actions: ['redshift-data:DescribeStatement', 'redshift-data:GetStatementResult', 'redshift-data:CancelStatement'],
        resources: ['*'],
        conditions: { StringEquals: { 'redshift-data:statement-owner-iam-userid': '${aws:userid}' } },
      }),
    );
    if (warehouse.secretArn !== undefined) {
      this.function.addToRolePolicy(
        new iam.PolicyStatement({
          sid: 'ReadDatabaseCredentials',
          actions: ['secretsmanager:GetSecretValue'],
          resources: [warehouse.secretArn],
        }),
      );
    } else if (warehouse.kind === 'cluster' && warehouse.dbUser !== undefined) {
      const base = `arn:${stack.partition}:redshift:${stack.region}:${stack.account}`;
      this.function.addToRolePolicy(
        new iam.PolicyStatement({
          sid: 'TemporaryDatabaseCredentials',
          actions: ['redshift:GetClusterCredentials'],
          resources: [`${base}:dbuser:${warehouse.cluster}/${warehouse.dbUser}`, `${base}:dbname:${warehouse.cluster}/${warehouse.database}`],
        }),
      );
    } else if (warehouse.kind === 'serverless') {
      this.function.addToRolePolicy(
        new iam.PolicyStatement({
          sid: 'ServerlessCredentials',
          actions: ['redshift-serverless:GetCredentials'],
          resources: [warehouse.workgroupArn],
        }),
      );
    }
  }
}
