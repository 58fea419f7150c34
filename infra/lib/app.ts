import { App, Tags } from 'aws-cdk-lib';
import * as path from 'path';
import { HeimdallrStack } from './heimdallr-stack';
import { parseStages } from './settings';

/**
 * Adds one stack per stage of the `heimdallr` context to `app` (only the stage named by
 * `-c stage=` when given). Bundle directories are relative to `root` (where cdk.json is);
 * `bundleDirOverride` replaces them all (scripts/cdk-diff.sh compares two templates built
 * from the same stand-in bundles).
 */
export function addStages(app: App, root: string, bundleDirOverride?: string): HeimdallrStack[] {
  const stages = parseStages(app.node.tryGetContext('heimdallr'), app.node.tryGetContext('stage'), app.node.tryGetContext('stackName'));
  return stages.map((stage) => {
    const stack = new HeimdallrStack(app, stage.stackName, {
      description: `Heimdallr (${stage.stage}): copies Rollbar, CircleCI and Heroku data into Redshift every minute`,
      env: stage.account === undefined && stage.region === undefined ? undefined : { account: stage.account, region: stage.region },
      terminationProtection: stage.terminationProtection,
      stage: stage.stage,
      projectRoot: root,
      settings: { ...stage.settings, bundleDir: bundleDirOverride ?? path.resolve(root, stage.settings.bundleDir) },
    });
    for (const [key, value] of Object.entries(stage.tags)) Tags.of(stack).add(key, value);
    return stack;
  });
}
