// The stacks' settings, read from the `heimdallr` object of cdk.json's context (or `-c`).
// Every setting has a default except the warehouse; a missing, malformed or unknown one
// fails synth with a message that names it, suggests the nearest known key for a typo, and
// shows a valid example. Settings at the top of the block apply to every stage; a stage's
// own block (`stages.<name>`) overrides them, object by object.

/** What the stack knows of a source: one entry per function, read everywhere else. */
export interface SourceDefinition {
  /** On when nothing is set (a source with a scope list is on when the list has names). */
  readonly enabledByDefault: boolean;
  /** Minutes between runs (EventBridge rate). */
  readonly scheduleMinutes: number;
  /** Alarm when the newest synced data is older than this. */
  readonly freshnessMinutes: number;
  /** The projects or apps it syncs: their cdk.json key, the function's environment variable
   * (the source crate's setting of the same name), an example, and what "all" looks like. */
  readonly scope?: { readonly key: string; readonly env: string; readonly example: readonly string[]; readonly everything?: string };
  /** Whether it stores personal data, and so reads the PII policy (HEIMDALLR_PII). */
  readonly personalData: boolean;
  /** On/off settings of the source: their cdk.json key and the function's variable. */
  readonly switches?: readonly { readonly key: string; readonly env: string }[];
  /** The secret's CloudFormation logical id, fixed for ever: a changed id would replace the
   * secret and lose the hand-entered token. A new source picks any unused id. */
  readonly secretLogicalId: string;
}

/** Every source the stack can deploy. A new source is one entry here (see the README). */
export const SOURCES = {
  // Rollbar's projects are the tokens in its secret, so it has no scope list.
  rollbar: {
    enabledByDefault: true,
    scheduleMinutes: 1,
    freshnessMinutes: 15,
    personalData: true,
    secretLogicalId: 'RollbarSecret47F3B9E6',
    // Deploy records (rollbar/deploys/<project>): off unless asked.
    switches: [{ key: 'deploys', env: 'ROLLBAR_DEPLOYS' }],
  },
  circleci: {
    enabledByDefault: false,
    scheduleMinutes: 5,
    freshnessMinutes: 60,
    scope: { key: 'projects', env: 'CIRCLECI_PROJECTS', example: ['gh/acme/web', 'circleci/8e4z/api'] },
    personalData: false,
    secretLogicalId: 'CircleciSecret4D957FEC',
  },
  heroku: {
    enabledByDefault: false,
    scheduleMinutes: 5,
    freshnessMinutes: 60,
    scope: { key: 'apps', env: 'HEROKU_APPS', example: ['acme-web', 'acme-api'], everything: '["*"] for every app the key sees' },
    personalData: true,
    secretLogicalId: 'HerokuSecretC53AF69B',
  },
} as const satisfies Record<string, SourceDefinition>;

export type SourceName = keyof typeof SOURCES;
export const SOURCE_NAMES = Object.keys(SOURCES) as SourceName[];

function definition(name: SourceName): SourceDefinition {
  return SOURCES[name];
}

export interface SourceSettings {
  readonly enabled: boolean;
  /** Enabled, or named in the settings: its secret exists, so that disabling a source
   * keeps the token and re-enabling it finds the same secret. */
  readonly declared: boolean;
  /** Minutes between runs (EventBridge rate). */
  readonly scheduleMinutes: number;
  /** Alarm when the source has not been caught up for this long. */
  readonly freshnessMinutes: number;
  /** CircleCI project slugs / Heroku apps (Rollbar projects are the tokens in its secret). */
  readonly scopes: string[];
  /** The source's on/off settings that are set (by cdk.json key). */
  readonly switches: Record<string, boolean>;
  readonly memoryMb: number;
}

/** Bulk loading through S3 (docs/deploy.md), for either target. */
export interface BulkLoadSettings {
  /** An existing role Redshift assumes for COPY; unset, the stack makes one. */
  copyRoleArn?: string;
  /** The batch size from which the functions load through S3 (their default when unset). */
  bulkRows?: number;
}

export type WarehouseSettings = (
  | { kind: 'cluster'; cluster: string; database: string; schema: string; dbUser?: string; secretArn?: string }
  | { kind: 'serverless'; workgroupName: string; workgroupArn: string; database: string; schema: string; secretArn?: string }
) &
  BulkLoadSettings;

export interface Settings {
  readonly sources: Record<SourceName, SourceSettings>;
  readonly warehouse: WarehouseSettings;
  readonly alarmEmail?: string;
  readonly natGateways: number;
  readonly interfaceEndpoints: boolean;
  readonly architecture: 'x86_64' | 'arm64';
  readonly logRetentionDays: number;
  readonly pii: 'drop' | 'hash' | 'keep';
  /** Where scripts/build-functions.sh leaves the bundles, relative to the project root. */
  readonly bundleDir: string;
  /** Reserve one concurrent execution per function (needs the account's unreserved
   * concurrency to stay at 100 or more: see docs/deploy.md). */
  readonly reservedConcurrency: boolean;
  /** Which Rollbar environment runs on which Heroku app and comes from which CircleCI
   * project (docs/analysts.md): given to every function as HEIMDALLR_ENVIRONMENTS. */
  readonly environments?: readonly unknown[];
  /** The company's activity table (`schema.table`: user_id, active_on) the release health
   * and retention views read: HEIMDALLR_ACTIVITY_TABLE. */
  readonly activityTable?: string;
}

/** One stage: its stack and where it goes, and its settings. */
export interface StageSettings {
  readonly stage: string;
  readonly stackName: string;
  /** Pinned account and region; both unset leaves the stack environment-agnostic. */
  readonly account?: string;
  readonly region?: string;
  readonly terminationProtection: boolean;
  /** Tags on every resource besides project, stage and source. */
  readonly tags: Record<string, string>;
  readonly settings: Settings;
}

export class SettingsError extends Error {
  constructor(setting: string, problem: string, example: string) {
    super(`cdk.json context heimdallr${setting === '' ? '' : '.' + setting}: ${problem}. Example: ${example}`);
    this.name = 'SettingsError';
  }
}

/** Keys of a stage's settings block (also allowed at the top, as every stage's defaults). */
const STAGE_KEYS = [
  'warehouse',
  'sources',
  'alarmEmail',
  'natGateways',
  'interfaceEndpoints',
  'architecture',
  'memoryMb',
  'logRetentionDays',
  'pii',
  'bundleDir',
  'reservedConcurrency',
  'environments',
  'activityTable',
  'stackName',
  'account',
  'region',
  'terminationProtection',
  'tags',
];
const WAREHOUSE_KEYS = ['cluster', 'dbUser', 'database', 'schema', 'secretArn', 'workgroupName', 'workgroupArn', 'copyRoleArn', 'bulkRows'];

/** Edit distance, for "did you mean" on a mistyped key. */
function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diagonal = row[0];
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const above = row[j];
      row[j] = Math.min(row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1].toLowerCase() === b[j - 1].toLowerCase() ? 0 : 1));
      diagonal = above;
    }
  }
  return row[b.length];
}

/** The known key nearest to a mistyped one, if any is close enough to be meant. */
export function nearestKey(key: string, known: readonly string[]): string | undefined {
  const ranked = known.map((k) => ({ k, d: distance(key, k) })).sort((x, y) => x.d - y.d);
  const best = ranked[0];
  return best !== undefined && best.d <= Math.max(2, Math.floor(key.length / 3)) ? best.k : undefined;
}

/** Rejects any key that is not a setting: a typo must not silently mean "the default". */
function rejectUnknownKeys(value: Json, known: readonly string[], where: string, example: string): void {
  for (const key of Object.keys(value)) {
    if (known.includes(key)) continue;
    const near = nearestKey(key, known);
    const hint = near === undefined ? `known keys: ${known.join(', ')}` : `did you mean "${near}"?`;
    throw new SettingsError(where === '' ? key : `${where}.${key}`, `is not a setting (${hint})`, example);
  }
}

const LOG_RETENTION_DAYS = [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653];

const WAREHOUSE_EXAMPLE =
  '{"cluster": "analytics", "dbUser": "heimdallr", "database": "analytics", "schema": "heimdallr"} ' +
  'or {"workgroupName": "analytics", "workgroupArn": "arn:aws:redshift-serverless:eu-west-1:123456789012:workgroup/0b1c...", "database": "dev"}';

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function integer(value: unknown, setting: string, min: number, max: number, fallback: number, example: string): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new SettingsError(setting, `must be a whole number from ${min} to ${max}, got ${JSON.stringify(value)}`, example);
  }
  return value;
}

function boolean(value: unknown, setting: string, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') {
    throw new SettingsError(setting, `must be true or false, got ${JSON.stringify(value)}`, `"${setting.split('.').pop()}": true`);
  }
  return value;
}

function text(value: unknown, setting: string, pattern: RegExp, example: string): string {
  if (typeof value !== 'string' || !pattern.test(value)) {
    throw new SettingsError(setting, `is missing or malformed (got ${JSON.stringify(value)})`, example);
  }
  return value;
}

function optionalText(value: unknown, setting: string, pattern: RegExp, example: string): string | undefined {
  return value === undefined || value === null ? undefined : text(value, setting, pattern, example);
}

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_$-]{0,126}$/;
const SECRET_ARN = /^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:.+$/;
// No `&` or space: the ARN goes verbatim into the warehouse URL's options, split on `&`
// (an IAM path may hold any other printable character).
const ROLE_ARN = /^arn:aws[a-z-]*:iam::\d{12}:role\/[^&\s]+$/;

function parseWarehouse(value: unknown): WarehouseSettings {
  if (!isObject(value)) {
    throw new SettingsError('warehouse', 'is missing: name the Redshift cluster or serverless workgroup to write to', WAREHOUSE_EXAMPLE);
  }
  rejectUnknownKeys(value, WAREHOUSE_KEYS, 'warehouse', WAREHOUSE_EXAMPLE);
  const database = text(value.database, 'warehouse.database', IDENTIFIER, '"database": "analytics"');
  const schema = value.schema === undefined ? 'heimdallr' : text(value.schema, 'warehouse.schema', /^[A-Za-z_][A-Za-z0-9_]{0,62}$/, '"schema": "heimdallr"');
  const secretArn = optionalText(value.secretArn, 'warehouse.secretArn', SECRET_ARN, '"secretArn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:redshift-heimdallr-AbCdEf"');
  const bulk: BulkLoadSettings = {
    copyRoleArn: optionalText(value.copyRoleArn, 'warehouse.copyRoleArn', ROLE_ARN, '"copyRoleArn": "arn:aws:iam::123456789012:role/redshift-copy"'),
    bulkRows: value.bulkRows === undefined ? undefined : integer(value.bulkRows, 'warehouse.bulkRows', 1, 1_000_000, 0, '"bulkRows": 5000'),
  };
  if (value.cluster !== undefined && value.workgroupName !== undefined) {
    throw new SettingsError('warehouse', 'names both a cluster and a workgroup; keep one', WAREHOUSE_EXAMPLE);
  }
  if (value.cluster !== undefined) {
    const cluster = text(value.cluster, 'warehouse.cluster', /^[a-z][a-z0-9-]{0,62}$/, '"cluster": "analytics"');
    const dbUser = optionalText(value.dbUser, 'warehouse.dbUser', IDENTIFIER, '"dbUser": "heimdallr"');
    if ((dbUser === undefined) === (secretArn === undefined)) {
      throw new SettingsError('warehouse', 'a cluster needs either dbUser (temporary credentials) or secretArn, not both', WAREHOUSE_EXAMPLE);
    }
    return { kind: 'cluster', cluster, database, schema, dbUser, secretArn, ...bulk };
  }
  if (value.workgroupName !== undefined) {
    const workgroupName = text(value.workgroupName, 'warehouse.workgroupName', /^[a-z0-9-]{3,64}$/, '"workgroupName": "analytics"');
    const workgroupArn = text(
      value.workgroupArn,
      'warehouse.workgroupArn',
      /^arn:aws[a-z-]*:redshift-serverless:[a-z0-9-]+:\d{12}:workgroup\/[a-z0-9-]+$/,
      '"workgroupArn": "arn:aws:redshift-serverless:eu-west-1:123456789012:workgroup/0b1c2d3e-..."',
    );
    return { kind: 'serverless', workgroupName, workgroupArn, database, schema, secretArn, ...bulk };
  }
  throw new SettingsError('warehouse', 'names neither a cluster nor a serverless workgroup', WAREHOUSE_EXAMPLE);
}

function parseSource(name: SourceName, value: unknown, defaultMemoryMb: number): SourceSettings {
  const defaults = definition(name);
  const objectExample = `"${name}": {"enabled": true, "scheduleMinutes": ${defaults.scheduleMinutes}}`;
  if (value !== undefined && !isObject(value)) {
    throw new SettingsError(`sources.${name}`, 'must be an object', objectExample);
  }
  const source = value ?? {};
  const scope = defaults.scope;
  let scopes: string[] = [];
  if (scope !== undefined && source[scope.key] !== undefined) {
    const list = source[scope.key];
    const example = `"${scope.key}": ${JSON.stringify(scope.example)}`;
    if (!Array.isArray(list) || list.some((s) => typeof s !== 'string' || s.trim() === '' || s.includes(','))) {
      throw new SettingsError(`sources.${name}.${scope.key}`, 'must be a list of non-empty names without commas', example);
    }
    scopes = list as string[];
  }
  const switchKeys = (defaults.switches ?? []).map((s) => s.key);
  const known = ['enabled', 'scheduleMinutes', 'freshnessMinutes', 'memoryMb', ...switchKeys, ...(scope === undefined ? [] : [scope.key])];
  rejectUnknownKeys(source, known, `sources.${name}`, objectExample);
  const scheduleMinutes = integer(source.scheduleMinutes, `sources.${name}.scheduleMinutes`, 1, 1440, defaults.scheduleMinutes, '"scheduleMinutes": 5');
  // A source with a list of projects or apps is on unless disabled; without one it has
  // nothing to sync, so it is off unless enabled (and then the list is required).
  const enabled = boolean(source.enabled, `sources.${name}.enabled`, scope === undefined ? defaults.enabledByDefault : scopes.length > 0);
  if (enabled && scope !== undefined && scopes.length === 0) {
    const example = `"${scope.key}": ${JSON.stringify(scope.example.slice(0, 1))}` + (scope.everything === undefined ? '' : ` (or ${scope.everything})`);
    throw new SettingsError(`sources.${name}.${scope.key}`, `is empty but the source is enabled`, example);
  }
  // At least two runs, so that one late or lost run never alarms; at most two days (the
  // alarm's window, half the budget, stays within CloudWatch's one-day evaluation range
  // for periods under an hour).
  const maxFreshness = Math.max(2880, scheduleMinutes * 2);
  const defaultFreshness = Math.min(Math.max(defaults.freshnessMinutes, scheduleMinutes * 3), maxFreshness);
  const freshnessMinutes = integer(
    source.freshnessMinutes,
    `sources.${name}.freshnessMinutes`,
    scheduleMinutes * 2,
    maxFreshness,
    defaultFreshness,
    `"freshnessMinutes": ${defaultFreshness}`,
  );
  return {
    enabled,
    // Named in the settings at all: the secret stays while the source is off or its list
    // is empty, so turning it back on finds the same secret.
    declared: enabled || value !== undefined,
    scheduleMinutes,
    freshnessMinutes,
    scopes,
    switches: Object.fromEntries(
      switchKeys.filter((key) => source[key] !== undefined).map((key) => [key, boolean(source[key], `sources.${name}.${key}`, false)]),
    ),
    memoryMb: integer(source.memoryMb, `sources.${name}.memoryMb`, 128, 10240, defaultMemoryMb, '"memoryMb": 256'),
  };
}

const ENVIRONMENT_EXAMPLE =
  '[{"name": "production", "rollbar": {"project_id": 901, "environment": "production"}, "heroku": {"app": "acme-web"}, ' +
  '"circleci": {"project": "gh/acme/web", "branch": "main", "deploys": false}}]';

/** Checks the environments list as the functions will read it (the same keys, strictly). */
function parseEnvironments(value: unknown): readonly unknown[] | undefined {
  if (value === undefined) return undefined;
  if (!Array.isArray(value)) throw new SettingsError('environments', 'must be a list', ENVIRONMENT_EXAMPLE);
  // What the functions refuse at start-up is refused here, before a deploy.
  const seen = new Set<string>();
  const once = (key: string, where: string, what: string) => {
    if (seen.has(key)) throw new SettingsError(where, `${what} is in two environments`, ENVIRONMENT_EXAMPLE);
    seen.add(key);
  };
  value.forEach((entry, index) => {
    const at = `environments[${index}]`;
    if (!isObject(entry)) throw new SettingsError(at, 'must be an object', ENVIRONMENT_EXAMPLE);
    rejectUnknownKeys(entry, ['name', 'rollbar', 'heroku', 'circleci'], at, ENVIRONMENT_EXAMPLE);
    text(entry.name, `${at}.name`, /\S/, '"name": "production"');
    once(`name:${entry.name}`, `${at}.name`, `the name ${JSON.stringify(entry.name)}`);
    if (!isObject(entry.rollbar)) throw new SettingsError(`${at}.rollbar`, 'is required', '"rollbar": {"project_id": 901, "environment": "production"}');
    rejectUnknownKeys(entry.rollbar, ['project_id', 'environment'], `${at}.rollbar`, '"rollbar": {"project_id": 901, "environment": "production"}');
    integer(entry.rollbar.project_id ?? null, `${at}.rollbar.project_id`, 1, Number.MAX_SAFE_INTEGER, 0, '"project_id": 901');
    text(entry.rollbar.environment, `${at}.rollbar.environment`, /\S/, '"environment": "production"');
    once(`rollbar:${entry.rollbar.project_id}/${entry.rollbar.environment}`, `${at}.rollbar`, 'this Rollbar project and environment');
    if (entry.heroku !== undefined) {
      if (!isObject(entry.heroku)) throw new SettingsError(`${at}.heroku`, 'must be an object', '"heroku": {"app": "acme-web"}');
      rejectUnknownKeys(entry.heroku, ['app'], `${at}.heroku`, '"heroku": {"app": "acme-web"}');
      text(entry.heroku.app, `${at}.heroku.app`, /\S/, '"app": "acme-web"');
      once(`heroku:${entry.heroku.app}`, `${at}.heroku.app`, `the Heroku app ${JSON.stringify(entry.heroku.app)}`);
    }
    if (entry.circleci !== undefined) {
      const example = '"circleci": {"project": "gh/acme/web", "branch": "main", "deploys": false}';
      if (!isObject(entry.circleci)) throw new SettingsError(`${at}.circleci`, 'must be an object', example);
      rejectUnknownKeys(entry.circleci, ['project', 'branch', 'deploys'], `${at}.circleci`, example);
      text(entry.circleci.project, `${at}.circleci.project`, /^.+$/, '"project": "gh/acme/web"');
      optionalText(entry.circleci.branch, `${at}.circleci.branch`, /^.+$/, '"branch": "main"');
      boolean(entry.circleci.deploys, `${at}.circleci.deploys`, false);
    }
  });
  // Lambda allows 4 KB of environment variables in all.
  if (JSON.stringify(value).length > 2048) {
    throw new SettingsError('environments', 'is over 2 048 characters as JSON (Lambda keeps 4 KB for every variable)', ENVIRONMENT_EXAMPLE);
  }
  return value;
}

/** What a source's function reads besides its secret and warehouse: its scope list,
 * when it stores personal data the PII policy, and the environments setting. */
export function sourceEnvironment(name: SourceName, settings: Settings): Record<string, string> {
  const defined = definition(name);
  const environment: Record<string, string> = {};
  if (settings.environments !== undefined) environment.HEIMDALLR_ENVIRONMENTS = JSON.stringify(settings.environments);
  if (settings.activityTable !== undefined) environment.HEIMDALLR_ACTIVITY_TABLE = settings.activityTable;
  if (defined.scope !== undefined) environment[defined.scope.env] = settings.sources[name].scopes.join(',');
  if (defined.personalData) environment.HEIMDALLR_PII = settings.pii;
  for (const { key, env } of defined.switches ?? []) {
    const value = settings.sources[name].switches[key];
    if (value !== undefined) environment[env] = String(value);
  }
  return environment;
}

/** The freshness alarm on a function's worst stream heartbeat (seconds since it last caught
 * up), from its schedule and freshness budget. A stream that has not caught up for the
 * budget alarms: every datapoint of the window is above `freshness - (window - 1 period)`
 * by then. Silence (no run, or no heartbeat on record) breaches too, and alarms after the
 * window: half the budget, at least two periods so that one late run never alarms. */
export function heartbeatAlarm(scheduleMinutes: number, freshnessMinutes: number): { periodMinutes: number; evaluationPeriods: number; thresholdMinutes: number } {
  const periodMinutes = scheduleMinutes;
  // CloudWatch evaluates at most one day of periods under an hour, seven days otherwise.
  const maxWindow = periodMinutes < 60 ? 1440 : 10080;
  const evaluationPeriods = Math.max(2, Math.min(Math.ceil(freshnessMinutes / (2 * periodMinutes)), Math.floor(maxWindow / periodMinutes)));
  return { periodMinutes, evaluationPeriods, thresholdMinutes: freshnessMinutes - (evaluationPeriods - 1) * periodMinutes };
}

function parseJsonContext(context: unknown): unknown {
  if (typeof context !== 'string') return context;
  // `cdk synth -c heimdallr='{...}'` passes the object as JSON text.
  try {
    return JSON.parse(context);
  } catch (e) {
    throw new SettingsError('', `is not valid JSON (${(e as Error).message})`, `-c heimdallr='{"warehouse": ${WAREHOUSE_EXAMPLE.split(' or ')[0]}}'`);
  }
}

/** Objects merge key by key (a stage's `sources.rollbar` overrides only what it names);
 * anything else in the stage's block replaces the shared value. */
function merge(shared: Json, stage: Json): Json {
  const merged: Json = { ...shared };
  for (const [key, value] of Object.entries(stage)) {
    const base = merged[key];
    merged[key] = isObject(base) && isObject(value) ? merge(base, value) : value;
  }
  return merged;
}

const STAGE_NAME = /^[a-z][a-z0-9-]{0,23}$/;

/** Reads every stage (or only `chosen`, the `-c stage=` value). Without a `stages` block the
 * settings are one stage named "default" whose stack keeps the name of the releases that
 * had no stages (`Heimdallr`, or `legacyStackName`), so upgrading never creates a second
 * stack beside the deployed one. */
export function parseStages(context: unknown, chosen?: string, legacyStackName?: string): StageSettings[] {
  const c = parseJsonContext(context);
  if (c !== undefined && !isObject(c)) {
    throw new SettingsError('', 'the heimdallr context must be an object', '"context": {"heimdallr": {"warehouse": {...}}}');
  }
  const root = c ?? {};
  const stagesExample = '"stages": {"staging": {"alarmEmail": "dev@example.com"}, "production": {"alarmEmail": "oncall@example.com"}}';
  rejectUnknownKeys(root, [...STAGE_KEYS, 'stages'], '', stagesExample);
  const { stages: rawStages, ...shared } = root;
  if (rawStages !== undefined) {
    // What makes a stack itself cannot be shared by several.
    for (const key of ['stackName', 'account', 'region', 'terminationProtection']) {
      if (shared[key] !== undefined) {
        throw new SettingsError(key, `belongs in a stage's block when there are stages (each stack has its own)`, `"stages": {"production": {"${key}": ${JSON.stringify(shared[key])}}}`);
      }
    }
  }
  if (rawStages === undefined) {
    if (chosen !== undefined && chosen !== 'default') {
      throw new SettingsError('stages', `has no stage "${chosen}" (there is no stages block)`, stagesExample);
    }
    return [stage('default', shared, '', legacyStackName ?? 'Heimdallr')];
  }
  if (!isObject(rawStages) || Object.keys(rawStages).length === 0) {
    throw new SettingsError('stages', 'must be an object of stage name to settings', stagesExample);
  }
  const names = Object.keys(rawStages);
  for (const name of names) {
    if (!STAGE_NAME.test(name)) {
      throw new SettingsError(`stages.${name}`, 'a stage name is lower-case letters, digits and dashes, starting with a letter', stagesExample);
    }
    if (!isObject(rawStages[name])) throw new SettingsError(`stages.${name}`, 'must be an object', stagesExample);
    rejectUnknownKeys(rawStages[name] as Json, STAGE_KEYS, `stages.${name}`, '"production": {"alarmEmail": "oncall@example.com", "terminationProtection": true}');
  }
  if (chosen !== undefined && !names.includes(chosen)) {
    const near = nearestKey(chosen, names);
    throw new SettingsError('stages', `has no stage "${chosen}"${near === undefined ? '' : ` (did you mean "${near}"?)`}; stages: ${names.join(', ')}`, `-c stage=${names[0]}`);
  }
  return names
    .filter((name) => chosen === undefined || name === chosen)
    .map((name) => stage(name, merge(shared, rawStages[name] as Json), `stages.${name}.`, undefined));
}

function stage(name: string, block: Json, where: string, fixedStackName: string | undefined): StageSettings {
  try {
    const stackName =
      block.stackName !== undefined
        ? text(block.stackName, 'stackName', /^[A-Za-z][A-Za-z0-9-]{0,40}$/, '"stackName": "Heimdallr-production"')
        : fixedStackName ?? `Heimdallr-${name}`;
    const account = optionalText(block.account, 'account', /^\d{12}$/, '"account": "123456789012"');
    const region = optionalText(block.region, 'region', /^[a-z]{2}(-gov)?-[a-z]+-\d$/, '"region": "eu-west-1"');
    if (
      block.tags !== undefined &&
      (!isObject(block.tags) ||
        Object.entries(block.tags).some(([k, v]) => typeof v !== 'string' || !/^[\p{L}\p{N}\s_.:/=+\-@]{1,128}$/u.test(k) || k.toLowerCase().startsWith('aws:') || v.length > 256))
    ) {
      throw new SettingsError('tags', 'must be an object of tag name to text (names up to 128 characters, not starting with aws:; values up to 256)', '"tags": {"team": "data", "cost-center": "1234"}');
    }
    return {
      stage: name,
      stackName,
      account,
      region,
      terminationProtection: boolean(block.terminationProtection, 'terminationProtection', name === 'production'),
      tags: (block.tags ?? {}) as Record<string, string>,
      settings: parseSettings(block),
    };
  } catch (error) {
    if (error instanceof SettingsError && where !== '') {
      // Name the stage: the value may come from the shared block or the stage's own.
      error.message = error.message.replace('cdk.json context heimdallr', `cdk.json context (stage ${name}) heimdallr`);
    }
    throw error;
  }
}

/** Reads and checks one stage's settings; `context` is the stage's merged settings block. */
export function parseSettings(context: unknown): Settings {
  context = parseJsonContext(context);
  if (context !== undefined && !isObject(context)) {
    throw new SettingsError('', 'the heimdallr context must be an object', '"context": {"heimdallr": {"warehouse": {...}}}');
  }
  const c = context ?? {};
  rejectUnknownKeys(c, STAGE_KEYS, '', '"alarmEmail": "oncall@example.com"');
  const memoryMb = integer(c.memoryMb, 'memoryMb', 128, 10240, 128, '"memoryMb": 128');
  if (c.sources !== undefined && !isObject(c.sources)) {
    throw new SettingsError('sources', 'must be an object keyed by source', '"sources": {"rollbar": {"enabled": true}}');
  }
  const sources = (c.sources ?? {}) as Json;
  for (const key of Object.keys(sources)) {
    if (!(SOURCE_NAMES as readonly string[]).includes(key)) {
      const near = nearestKey(key, SOURCE_NAMES);
      throw new SettingsError(
        `sources.${key}`,
        `is not a source (${near === undefined ? '' : `did you mean "${near}"? `}sources: ${SOURCE_NAMES.join(', ')})`,
        '"sources": {"rollbar": {"enabled": true}}',
      );
    }
  }
  const parsedSources = Object.fromEntries(SOURCE_NAMES.map((name) => [name, parseSource(name, sources[name], memoryMb)])) as Record<SourceName, SourceSettings>;
  if (!SOURCE_NAMES.some((name) => parsedSources[name].enabled)) {
    throw new SettingsError('sources', 'every source is disabled; enable at least one', '"sources": {"rollbar": {"enabled": true}}');
  }
  const architecture = c.architecture === undefined ? 'x86_64' : c.architecture;
  if (architecture !== 'x86_64' && architecture !== 'arm64') {
    throw new SettingsError('architecture', `must be x86_64 or arm64, got ${JSON.stringify(architecture)}`, '"architecture": "arm64"');
  }
  const pii = c.pii === undefined ? 'drop' : c.pii;
  if (pii !== 'drop' && pii !== 'hash' && pii !== 'keep') {
    throw new SettingsError('pii', `must be drop, hash or keep, got ${JSON.stringify(pii)}`, '"pii": "hash"');
  }
  const logRetentionDays = integer(c.logRetentionDays, 'logRetentionDays', 1, 3653, 30, '"logRetentionDays": 30');
  if (!LOG_RETENTION_DAYS.includes(logRetentionDays)) {
    throw new SettingsError('logRetentionDays', `CloudWatch keeps logs for one of ${LOG_RETENTION_DAYS.join(', ')} days`, '"logRetentionDays": 30');
  }
  return {
    sources: parsedSources,
    warehouse: parseWarehouse(c.warehouse),
    alarmEmail: optionalText(c.alarmEmail, 'alarmEmail', /^[^@\s]+@[^@\s]+\.[^@\s]+$/, '"alarmEmail": "oncall@example.com"'),
    natGateways: integer(c.natGateways, 'natGateways', 1, 2, 1, '"natGateways": 2 (one per availability zone)'),
    interfaceEndpoints: boolean(c.interfaceEndpoints, 'interfaceEndpoints', false),
    architecture,
    logRetentionDays,
    pii,
    bundleDir: c.bundleDir === undefined ? 'dist/lambda' : text(c.bundleDir, 'bundleDir', /^[^\0]+$/, '"bundleDir": "dist/lambda"'),
    reservedConcurrency: boolean(c.reservedConcurrency, 'reservedConcurrency', false),
    environments: parseEnvironments(c.environments),
    activityTable: optionalText(c.activityTable, 'activityTable', /^[a-z_][a-z0-9_]{0,62}\.[a-z_][a-z0-9_]{0,62}$/, '"activityTable": "app.user_activity" (lower case)'),
  };
}

/** Where a function stages its bulk loads: the bucket, its own prefix in it, and the role
 * COPY names. The bucket name and role ARN are usually tokens. */
export interface StagingTarget {
  readonly bucketName: string;
  /** `<source>/`. */
  readonly prefix: string;
  readonly copyRoleArn: string;
}

/** The `redshift-data://` URL the functions get for the configured target; with `staging`,
 * its options say where to write bulk loads (`staging=s3://BUCKET/PREFIX/`), the role COPY
 * uses (`copy_role=`) and, when set, the threshold (`bulk_rows=`). Values go in verbatim,
 * as the functions read them. */
export function warehouseUrl(warehouse: WarehouseSettings, staging?: StagingTarget): string {
  const options: string[] = [];
  let base: string;
  if (warehouse.kind === 'cluster') {
    base =
      warehouse.dbUser !== undefined
        ? `redshift-data://${warehouse.dbUser}@cluster/${warehouse.cluster}/${warehouse.database}`
        : `redshift-data://cluster/${warehouse.cluster}/${warehouse.database}`;
  } else {
    base = `redshift-data://workgroup/${warehouse.workgroupName}/${warehouse.database}`;
  }
  // A cluster has either a database user or a secret (parseWarehouse), a workgroup may have a secret.
  if (warehouse.secretArn !== undefined) options.push(`secret_arn=${warehouse.secretArn}`);
  if (staging !== undefined) {
    options.push(`staging=s3://${staging.bucketName}/${staging.prefix}`, `copy_role=${staging.copyRoleArn}`);
    if (warehouse.bulkRows !== undefined) options.push(`bulk_rows=${warehouse.bulkRows}`);
  }
  // A template string: with tokens in it, CloudFormation gets an Fn::Join.
  return options.length === 0 ? base : `${base}?${options.join('&')}`;
}
