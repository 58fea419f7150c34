#!/usr/bin/env node
// The CDK app: one environment-agnostic stack, settings from cdk.json's `heimdallr` context,
// checked by cdk-nag's AwsSolutions rules on every synth.
import { App, Aspects } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import * as path from 'path';
import { HeimdallrStack } from '../lib/heimdallr-stack';
import { parseSettings, SettingsError } from '../lib/settings';
import { MissingBundleError } from '../lib/source-function';

const app = new App();
try {
  const settings = parseSettings(app.node.tryGetContext('heimdallr'));
  // Bundle paths in cdk.json are relative to the project root (where cdk.json is).
  const root = path.resolve(__dirname, '..', '..');
  new HeimdallrStack(app, app.node.tryGetContext('stackName') ?? 'Heimdallr', {
    description: 'Heimdallr: copies Rollbar, CircleCI and Heroku data into Redshift every minute',
    settings: { ...settings, bundleDir: path.resolve(root, settings.bundleDir) },
  });
} catch (error) {
  if (error instanceof SettingsError || error instanceof MissingBundleError) {
    // A setting or a build step is missing: say which, without a stack trace.
    console.error(`\n${error.message}\n`);
    process.exit(1);
  }
  throw error;
}
Aspects.of(app).add(new AwsSolutionsChecks({ verbose: true }));
