import { Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { NagSuppressions } from 'cdk-nag';
import { Construct } from 'constructs';

export interface StagingProps {
  /** Prefix of every name (the stack's name, which carries the stage). */
  readonly namePrefix: string;
  /** An existing role Redshift assumes for COPY (`warehouse.copyRoleArn`): the stack then
   * makes no role and grants this one read access by bucket policy. */
  readonly copyRoleArn?: string;
  /** The warehouse is a serverless namespace, whose associated roles must also trust
   * redshift-serverless.amazonaws.com. */
  readonly serverless: boolean;
}

/**
 * Bulk loading through S3: the bucket where each function writes its large batches (gzipped
 * JSON lines under its own prefix, `<source>/`) for Redshift to load with COPY, and the role
 * Redshift assumes to read them. Objects are transient copies: the functions delete each
 * batch after loading it, and a lifecycle rule expires anything left after a day.
 */
export class Staging extends Construct {
  readonly bucket: s3.Bucket;
  /** The role COPY names (IAM_ROLE): made here, or the one the settings name. */
  readonly copyRoleArn: string;
  /** The role made here; none when the settings name an existing one. */
  readonly copyRole?: iam.Role;

  constructor(scope: Construct, id: string, props: StagingProps) {
    super(scope, id);
    // Not named: bucket names are global, and nothing outside the stack types it (the
    // functions get it in HEIMDALLR_WAREHOUSE, people in the StagingBucketName output).
    this.bucket = new s3.Bucket(this, 'Bucket', {
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      // SSE-S3: COPY reads the objects with the role's S3 permissions alone, no KMS grant.
      encryption: s3.BucketEncryption.S3_MANAGED,
      enforceSSL: true,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      lifecycleRules: [
        {
          id: 'expire-staged-batches',
          // A batch lives for one load; what a failed run leaves behind goes the next day.
          expiration: Duration.days(1),
          abortIncompleteMultipartUploadAfter: Duration.days(1),
        },
      ],
      // Deleted with the stack, but only once empty (docs/deploy.md): no auto-delete
      // custom resource (one more Lambda) for objects that expire within a day anyway.
      removalPolicy: RemovalPolicy.DESTROY,
    });
    NagSuppressions.addResourceSuppressions(this.bucket, [
      {
        id: 'AwsSolutions-S1',
        reason:
          'The bucket holds transient staging copies of data that is already in Redshift, deleted after each load and expired after a day; ' +
          'enable CloudTrail data events on it if an audit trail of object access is needed',
      },
    ]);

    const objects = this.bucket.arnForObjects('*');
    if (props.copyRoleArn !== undefined) {
      // The role is the user's: read access comes from the bucket's side, so that the
      // stack changes nothing outside itself (a same-account role needs nothing more).
      const principal = new iam.ArnPrincipal(props.copyRoleArn);
      this.bucket.addToResourcePolicy(
        new iam.PolicyStatement({ sid: 'CopyRoleReadsObjects', principals: [principal], actions: ['s3:GetObject'], resources: [objects] }),
      );
      this.bucket.addToResourcePolicy(
        new iam.PolicyStatement({ sid: 'CopyRoleListsPrefixes', principals: [principal], actions: ['s3:ListBucket'], resources: [this.bucket.bucketArn] }),
      );
      this.copyRoleArn = props.copyRoleArn;
      return;
    }

    // AWS's serverless guide asks for both service principals on a namespace's roles
    // (docs.aws.amazon.com/redshift/latest/mgmt/serverless-security-other-services.html);
    // a provisioned cluster assumes it as redshift.amazonaws.com only.
    const principals = [new iam.ServicePrincipal('redshift.amazonaws.com')];
    if (props.serverless) principals.push(new iam.ServicePrincipal('redshift-serverless.amazonaws.com'));
    this.copyRole = new iam.Role(this, 'CopyRole', {
      roleName: `${props.namePrefix}-redshift-copy`,
      description: 'Heimdallr: Redshift assumes it for COPY from the staging bucket (associate it with the cluster or namespace, docs/deploy.md)',
      assumedBy: new iam.CompositePrincipal(...principals),
      inlinePolicies: {
        ReadStagedBatches: new iam.PolicyDocument({
          statements: [
            new iam.PolicyStatement({ sid: 'ReadObjects', actions: ['s3:GetObject'], resources: [objects] }),
            // COPY lists the FROM prefix to find the objects it loads.
            new iam.PolicyStatement({ sid: 'ListPrefixes', actions: ['s3:ListBucket'], resources: [this.bucket.bucketArn] }),
          ],
        }),
      },
    });
    this.copyRoleArn = this.copyRole.roleArn;
    const bucketId = Stack.of(this).getLogicalId(this.bucket.node.defaultChild as s3.CfnBucket);
    NagSuppressions.addResourceSuppressions(this.copyRole, [
      {
        id: 'AwsSolutions-IAM5',
        reason: "Every batch is an object of its own with a generated name, so COPY reads objects of the staging bucket only, by wildcard (read-only)",
        appliesTo: [`Resource::<${bucketId}.Arn>/*`],
      },
    ]);
  }
}
