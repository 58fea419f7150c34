import { CfnOutput, RemovalPolicy } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as logs from 'aws-cdk-lib/aws-logs';
import { NagSuppressions } from 'cdk-nag';
import { Construct } from 'constructs';

export interface NetworkProps {
  /** 1 (default, cheapest) or 2 (one per availability zone). */
  readonly natGateways: number;
  /** Interface endpoints for Secrets Manager and the Redshift Data API. */
  readonly interfaceEndpoints: boolean;
  readonly logRetentionDays: number;
}

/**
 * Two availability zones with a public and a private subnet each. Private subnets reach the
 * internet (Rollbar, CircleCI, Heroku, AWS APIs) through the NAT gateway(s); public subnets
 * route to the internet gateway. The NAT's elastic IPs are outputs, for allowlists.
 */
export class Network extends Construct {
  readonly vpc: ec2.Vpc;

  constructor(scope: Construct, id: string, props: NetworkProps) {
    super(scope, id);
    this.vpc = new ec2.Vpc(this, 'Vpc', {
      maxAzs: 2,
      natGateways: props.natGateways,
      subnetConfiguration: [
        { name: 'public', subnetType: ec2.SubnetType.PUBLIC, cidrMask: 24 },
        { name: 'private', subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS, cidrMask: 22 },
      ],
    });
    // Rejected traffic only: enough to debug a blocked connection, cheap to keep.
    const flowLogs = new logs.LogGroup(this, 'FlowLogs', {
      retention: props.logRetentionDays as logs.RetentionDays,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    this.vpc.addFlowLog('RejectedTraffic', {
      destination: ec2.FlowLogDestination.toCloudWatchLogs(flowLogs),
      trafficType: ec2.FlowLogTrafficType.REJECT,
    });
    // Free, and it keeps the staged uploads for COPY (S3) off the NAT gateway's per-GB charge.
    this.vpc.addGatewayEndpoint('S3', {
      service: ec2.GatewayVpcEndpointAwsService.S3,
      subnets: [{ subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS }],
    });
    if (props.interfaceEndpoints) {
      const subnets = { subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS };
      this.vpc.addInterfaceEndpoint('SecretsManager', { service: ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER, subnets });
      this.vpc.addInterfaceEndpoint('RedshiftData', { service: ec2.InterfaceVpcEndpointAwsService.REDSHIFT_DATA, subnets });
    }
    this.vpc.publicSubnets.forEach((subnet, index) => {
      const eip = subnet.node.tryFindChild('EIP') as ec2.CfnEIP | undefined;
      if (eip !== undefined) {
        const output = new CfnOutput(this, `NatPublicIp${index + 1}`, {
          value: eip.ref,
          description: 'Outbound address of the functions (allowlist it where the APIs or Redshift need one)',
        });
        // The name the docs give, without the hash a nested construct's id gets.
        output.overrideLogicalId(`NetworkNatPublicIp${index + 1}`);
      }
    });
    NagSuppressions.addResourceSuppressions(
      this,
      [{ id: 'AwsSolutions-IAM5', reason: 'The flow log role CDK creates writes streams of its own log group only (log-stream wildcard)' }],
      true,
    );
  }
}
