#!/usr/bin/env node
// The CDK app: one stack per stage (cdk.json's `heimdallr.stages`; `-c stage=<name>` picks
// one), checked by cdk-nag's AwsSolutions rules on every synth. A stage without a pinned
// account and region stays environment-agnostic, so synth works offline.
import { App, Aspects } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import * as path from 'path';
import { addStages } from '../lib/app';
import { SettingsError } from '../lib/settings';
import { BundleError, MissingBundleError } from '../lib/source-function';

const app = new App();
try {
  addStages(app, path.resolve(__dirname, '..', '..'), process.env.HEIMDALLR_BUNDLE_DIR);
} catch (error) {
  if (error instanceof SettingsError || error instanceof MissingBundleError || error instanceof BundleError) {
    // A setting or a build step is missing: say which, without a stack trace.
    console.error(`\n${error.message}\n`);
    process.exit(1);
  }
  throw error;
}
Aspects.of(app).add(new AwsSolutionsChecks({ verbose: true }));
