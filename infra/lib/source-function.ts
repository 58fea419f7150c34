import { Annotations, Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import { NagSuppressions } from 'cdk-nag';
import { Construct } from 'constructs';
import * as fs from 'fs';
import * as path from 'path';
import { SourceName, WarehouseSettings, warehouseUrl } from './settings';

export interface SourceFunctionProps {
  readonly source: SourceName;
  /** The source's credentials: made by the stack, kept when the function is not. */
  readonly secret: secretsmanager.ISecret;
  /** Prefix of every name (the stack's name, which carries the stage). */
  readonly namePrefix: string;
  /** Reserve one concurrent execution (no overlapping runs). Off, overlapping runs are
   * still safe: each batch commits with its cursor and rows merge on their keys. */
  readonly reservedConcurrency: boolean;
  /** The project root, to report a bundle older than its Rust sources (optional). */
  readonly projectRoot?: string;
  /** Directory holding `<source>/bootstrap`, and `<source>-arm64/bootstrap` for arm64
   * (scripts/build-functions.sh writes both into dist/lambda). */
  readonly bundleDir: string;
  readonly vpc: ec2.IVpc;
  readonly architecture: 'x86_64' | 'arm64';
  readonly memoryMb: number;
  readonly scheduleMinutes: number;
  readonly logRetentionDays: number;
  readonly warehouse: WarehouseSettings;
  /** The staging bucket for bulk loads and the role COPY uses: the function writes and
   * deletes objects under `<source>/` in it, and finds both in its warehouse URL. */
  readonly staging?: { readonly bucket: s3.IBucket; readonly copyRoleArn: string };
  /** Settings the handler reads, besides the warehouse and secret. */
  readonly environment: Record<string, string>;
}

/** The error synth raises when a bundle is not a Lambda executable for the architecture. */
export class BundleError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BundleError';
  }
}

/** ELF machine numbers (e_machine): what each Lambda architecture runs. */
const ELF_MACHINE = { x86_64: 62, arm64: 183 } as const;

/** Checks the bundle's ELF header: a 64-bit little-endian executable for `architecture`. */
export function checkBundleArchitecture(bootstrap: string, architecture: 'x86_64' | 'arm64'): void {
  const header = Buffer.alloc(20);
  const fd = fs.openSync(bootstrap, 'r');
  let read: number;
  try {
    read = fs.readSync(fd, header, 0, header.length, 0);
  } finally {
    fs.closeSync(fd);
  }
  if (read < header.length || header.readUInt32BE(0) !== 0x7f454c46) {
    throw new BundleError(`${bootstrap} is not a Linux executable (no ELF header). Build the bundles with scripts/build-functions.sh`);
  }
  const machine = header.readUInt16LE(18);
  if (header[4] !== 2 || header[5] !== 1 || machine !== ELF_MACHINE[architecture]) {
    const found = Object.entries(ELF_MACHINE).find(([, m]) => m === machine)?.[0] ?? `ELF machine ${machine}`;
    throw new BundleError(
      `${bootstrap} is built for ${found}, but the functions run on ${architecture} (heimdallr.architecture). ` +
        (architecture === 'arm64'
          ? 'Build the arm64 bundles (docs/deploy.md, "Building the bundles on another machine")'
          : 'Rebuild with scripts/build-functions.sh'),
    );
  }
}

/** The newest Rust source a function's bundle is built from, when it is newer than the bundle. */
export function newerSource(bootstrap: string, projectRoot: string, source: string): string | undefined {
  const built = fs.statSync(bootstrap).mtimeMs;
  const inputs = [
    path.join(projectRoot, 'Cargo.lock'),
    path.join(projectRoot, 'functions', source),
    path.join(projectRoot, 'functions', 'core'),
  ];
  let newest: { file: string; time: number } | undefined;
  const visit = (file: string) => {
    if (!fs.existsSync(file)) return;
    const stat = fs.statSync(file);
    if (stat.isDirectory()) {
      for (const entry of fs.readdirSync(file)) {
        if (entry !== 'target' && entry !== 'tests' && entry !== 'benches') visit(path.join(file, entry));
      }
    } else if ((file.endsWith('.rs') || file.endsWith('.toml') || file.endsWith('.lock')) && (newest === undefined || stat.mtimeMs > newest.time)) {
      newest = { file, time: stat.mtimeMs };
    }
  };
  inputs.forEach(visit);
  return newest !== undefined && newest.time > built ? path.relative(projectRoot, newest.file) : undefined;
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
 * One source's Lambda: its bundle (checked: built for the architecture, not older than its
 * sources), its schedule (no async retries or stale events; optionally reserved
 * concurrency 1), private subnets behind a security group with no inbound rules, JSON logs
 * with a retention, and IAM for its own secret, exactly the Data API calls and
 * credentials its warehouse target needs, and writes to its own prefix of the staging bucket.
 */
export class SourceFunction extends Construct {
  readonly function: lambda.Function;
  readonly secret: secretsmanager.ISecret;
  readonly schedule: events.Rule;
  readonly logGroup: logs.LogGroup;
  readonly timeout: Duration;
  readonly source: SourceName;

  constructor(scope: Construct, id: string, props: SourceFunctionProps) {
    super(scope, id);
    this.source = props.source;
    const bundle = path.resolve(props.bundleDir, props.architecture === 'arm64' ? `${props.source}-arm64` : props.source);
    const bootstrap = path.join(bundle, 'bootstrap');
    if (!fs.existsSync(bootstrap)) {
      throw new MissingBundleError(bundle, props.source);
    }
    checkBundleArchitecture(bootstrap, props.architecture);
    const newer = props.projectRoot === undefined ? undefined : newerSource(bootstrap, props.projectRoot, props.source);
    if (newer !== undefined) {
      Annotations.of(this).addWarningV2(
        'heimdallr:stale-bundle',
        `The ${props.source} bundle (${bootstrap}) is older than ${newer}: run scripts/build-functions.sh before deploying`,
      );
    }
    // Ten seconds under the period (at most Lambda's 15 minutes): a run never meets the next.
    this.timeout = Duration.seconds(Math.min(props.scheduleMinutes * 60 - 10, 900));

    this.secret = props.secret;
    const functionName = `${props.namePrefix}-${props.source}`;
    const logGroup = (this.logGroup = new logs.LogGroup(this, 'Logs', {
      logGroupName: `/aws/lambda/${functionName}`,
      retention: props.logRetentionDays as logs.RetentionDays,
      removalPolicy: RemovalPolicy.DESTROY,
    }));
    const securityGroup = new ec2.SecurityGroup(this, 'SecurityGroup', {
      vpc: props.vpc,
      description: `Heimdallr ${props.source}: outbound HTTPS to the APIs and AWS, nothing inbound`,
      allowAllOutbound: true,
    });

    this.function = new lambda.Function(this, 'Function', {
      functionName,
      description: `Heimdallr: copies ${props.source} into Redshift`,
      runtime: lambda.Runtime.PROVIDED_AL2023,
      handler: 'bootstrap',
      code: lambda.Code.fromAsset(bundle),
      architecture: props.architecture === 'arm64' ? lambda.Architecture.ARM_64 : lambda.Architecture.X86_64,
      memorySize: props.memoryMb,
      timeout: this.timeout,
      reservedConcurrentExecutions: props.reservedConcurrency ? 1 : undefined,
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
        HEIMDALLR_WAREHOUSE: warehouseUrl(
          props.warehouse,
          props.staging && { bucketName: props.staging.bucket.bucketName, prefix: `${props.source}/`, copyRoleArn: props.staging.copyRoleArn },
        ),
        HEIMDALLR_SCHEMA: props.warehouse.schema,
      },
    });
    // Named, because on Redshift Serverless the role is the database user `IAMR:<role name>`
    // that the grants in docs/deploy.md name.
    (this.function.role!.node.defaultChild as iam.CfnRole).roleName = functionName;
    this.secret.grantRead(this.function);
    this.grantWarehouse(props.warehouse);
    if (props.staging !== undefined) {
      // Its own prefix only, and no read: Redshift reads the objects with the COPY role.
      this.function.addToRolePolicy(
        new iam.PolicyStatement({
          sid: 'StageBulkLoads',
          actions: ['s3:PutObject', 's3:DeleteObject'],
          resources: [props.staging.bucket.arnForObjects(`${props.source}/*`)],
        }),
      );
    }

    this.schedule = new events.Rule(this, 'Schedule', {
      ruleName: `${functionName}-schedule`,
      description: `Runs Heimdallr ${props.source} every ${props.scheduleMinutes} minute(s)`,
      schedule: events.Schedule.rate(Duration.minutes(props.scheduleMinutes)),
      targets: [new targets.LambdaFunction(this.function, { retryAttempts: 0, maxEventAge: Duration.seconds(60) })],
    });

    NagSuppressions.addResourceSuppressions(
      this,
      [
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
        {
          id: 'AwsSolutions-IAM5',
          reason: "Every bulk-load batch is an object of its own with a generated name: write and delete under the function's own prefix of the staging bucket",
          appliesTo: [{ regex: `/^Resource::<[A-Za-z0-9]+\\.Arn>\\/${props.source}\\/\\*$/` }],
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
