// The stack's settings, read from the `heimdallr` object of cdk.json's context (or `-c`).
// Every setting has a default except the warehouse; a missing or malformed one fails synth
// with a message that names it and shows a valid example.

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
}

/** Every source the stack can deploy. A new source is one entry here (see the README). */
export const SOURCES = {
  // Rollbar's projects are the tokens in its secret, so it has no scope list.
  rollbar: { enabledByDefault: true, scheduleMinutes: 1, freshnessMinutes: 15, personalData: true },
  circleci: {
    enabledByDefault: false,
    scheduleMinutes: 5,
    freshnessMinutes: 60,
    scope: { key: 'projects', env: 'CIRCLECI_PROJECTS', example: ['gh/acme/web', 'circleci/8e4z/api'] },
    personalData: false,
  },
  heroku: {
    enabledByDefault: false,
    scheduleMinutes: 5,
    freshnessMinutes: 60,
    scope: { key: 'apps', env: 'HEROKU_APPS', example: ['acme-web', 'acme-api'], everything: '["*"] for every app the key sees' },
    personalData: true,
  },
} as const satisfies Record<string, SourceDefinition>;

export type SourceName = keyof typeof SOURCES;
export const SOURCE_NAMES = Object.keys(SOURCES) as SourceName[];

function definition(name: SourceName): SourceDefinition {
  return SOURCES[name];
}

export interface SourceSettings {
  readonly enabled: boolean;
  /** Minutes between runs (EventBridge rate). */
  readonly scheduleMinutes: number;
  /** Alarm when the newest synced data is older than this. */
  readonly freshnessMinutes: number;
  /** CircleCI project slugs / Heroku apps (Rollbar projects are the tokens in its secret). */
  readonly scopes: string[];
  readonly memoryMb: number;
}

export type WarehouseSettings =
  | { kind: 'cluster'; cluster: string; database: string; schema: string; dbUser?: string; secretArn?: string }
  | { kind: 'serverless'; workgroupName: string; workgroupArn: string; database: string; schema: string; secretArn?: string };

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
}

export class SettingsError extends Error {
  constructor(setting: string, problem: string, example: string) {
    super(`cdk.json context heimdallr${setting === '' ? '' : '.' + setting}: ${problem}. Example: ${example}`);
    this.name = 'SettingsError';
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

function parseWarehouse(value: unknown): WarehouseSettings {
  if (!isObject(value)) {
    throw new SettingsError('warehouse', 'is missing: name the Redshift cluster or serverless workgroup to write to', WAREHOUSE_EXAMPLE);
  }
  const database = text(value.database, 'warehouse.database', IDENTIFIER, '"database": "analytics"');
  const schema = value.schema === undefined ? 'heimdallr' : text(value.schema, 'warehouse.schema', /^[A-Za-z_][A-Za-z0-9_]{0,62}$/, '"schema": "heimdallr"');
  const secretArn = optionalText(value.secretArn, 'warehouse.secretArn', SECRET_ARN, '"secretArn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:redshift-heimdallr-AbCdEf"');
  if (value.cluster !== undefined && value.workgroupName !== undefined) {
    throw new SettingsError('warehouse', 'names both a cluster and a workgroup; keep one', WAREHOUSE_EXAMPLE);
  }
  if (value.cluster !== undefined) {
    const cluster = text(value.cluster, 'warehouse.cluster', /^[a-z][a-z0-9-]{0,62}$/, '"cluster": "analytics"');
    const dbUser = optionalText(value.dbUser, 'warehouse.dbUser', IDENTIFIER, '"dbUser": "heimdallr"');
    if ((dbUser === undefined) === (secretArn === undefined)) {
      throw new SettingsError('warehouse', 'a cluster needs either dbUser (temporary credentials) or secretArn, not both', WAREHOUSE_EXAMPLE);
    }
    return { kind: 'cluster', cluster, database, schema, dbUser, secretArn };
  }
  if (value.workgroupName !== undefined) {
    const workgroupName = text(value.workgroupName, 'warehouse.workgroupName', /^[a-z0-9-]{3,64}$/, '"workgroupName": "analytics"');
    const workgroupArn = text(
      value.workgroupArn,
      'warehouse.workgroupArn',
      /^arn:aws[a-z-]*:redshift-serverless:[a-z0-9-]+:\d{12}:workgroup\/[a-z0-9-]+$/,
      '"workgroupArn": "arn:aws:redshift-serverless:eu-west-1:123456789012:workgroup/0b1c2d3e-..."',
    );
    return { kind: 'serverless', workgroupName, workgroupArn, database, schema, secretArn };
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
  for (const key of Object.keys(source)) {
    if (!['enabled', 'scheduleMinutes', 'freshnessMinutes', 'memoryMb', scope?.key].includes(key)) {
      throw new SettingsError(`sources.${name}.${key}`, 'is not a setting', objectExample);
    }
  }
  const scheduleMinutes = integer(source.scheduleMinutes, `sources.${name}.scheduleMinutes`, 1, 1440, defaults.scheduleMinutes, '"scheduleMinutes": 5');
  // A source with a list of projects or apps is on unless disabled; without one it has
  // nothing to sync, so it is off unless enabled (and then the list is required).
  const enabled = boolean(source.enabled, `sources.${name}.enabled`, scope === undefined ? defaults.enabledByDefault : scopes.length > 0);
  if (enabled && scope !== undefined && scopes.length === 0) {
    const example = `"${scope.key}": ${JSON.stringify(scope.example.slice(0, 1))}` + (scope.everything === undefined ? '' : ` (or ${scope.everything})`);
    throw new SettingsError(`sources.${name}.${scope.key}`, `is empty but the source is enabled`, example);
  }
  return {
    enabled,
    scheduleMinutes,
    freshnessMinutes: integer(source.freshnessMinutes, `sources.${name}.freshnessMinutes`, scheduleMinutes, 10080, Math.max(defaults.freshnessMinutes, scheduleMinutes * 3), '"freshnessMinutes": 60'),
    scopes,
    memoryMb: integer(source.memoryMb, `sources.${name}.memoryMb`, 128, 10240, defaultMemoryMb, '"memoryMb": 256'),
  };
}

/** What a source's function reads besides its secret and warehouse: its scope list and,
 * when it stores personal data, the PII policy. */
export function sourceEnvironment(name: SourceName, settings: Settings): Record<string, string> {
  const defined = definition(name);
  const environment: Record<string, string> = {};
  if (defined.scope !== undefined) environment[defined.scope.env] = settings.sources[name].scopes.join(',');
  if (defined.personalData) environment.HEIMDALLR_PII = settings.pii;
  return environment;
}

/** Reads and checks the settings; `context` is the `heimdallr` context object. */
export function parseSettings(context: unknown): Settings {
  if (typeof context === 'string') {
    // `cdk synth -c heimdallr='{...}'` passes the object as JSON text.
    try {
      context = JSON.parse(context);
    } catch (e) {
      throw new SettingsError('', `is not valid JSON (${(e as Error).message})`, `-c heimdallr='{"warehouse": ${WAREHOUSE_EXAMPLE.split(' or ')[0]}}'`);
    }
  }
  if (context !== undefined && !isObject(context)) {
    throw new SettingsError('', 'the heimdallr context must be an object', '"context": {"heimdallr": {"warehouse": {...}}}');
  }
  const c = context ?? {};
  const memoryMb = integer(c.memoryMb, 'memoryMb', 128, 10240, 128, '"memoryMb": 128');
  if (c.sources !== undefined && !isObject(c.sources)) {
    throw new SettingsError('sources', 'must be an object keyed by source', '"sources": {"rollbar": {"enabled": true}}');
  }
  const sources = (c.sources ?? {}) as Json;
  for (const key of Object.keys(sources)) {
    if (!(SOURCE_NAMES as readonly string[]).includes(key)) {
      throw new SettingsError(`sources.${key}`, `is not a source (sources: ${SOURCE_NAMES.join(', ')})`, '"sources": {"rollbar": {"enabled": true}}');
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
  };
}

/** The `redshift-data://` URL the functions get for the configured target. */
export function warehouseUrl(warehouse: WarehouseSettings): string {
  if (warehouse.kind === 'cluster') {
    return warehouse.dbUser !== undefined
      ? `redshift-data://${warehouse.dbUser}@cluster/${warehouse.cluster}/${warehouse.database}`
      : `redshift-data://cluster/${warehouse.cluster}/${warehouse.database}?secret_arn=${warehouse.secretArn}`;
  }
  const secret = warehouse.secretArn === undefined ? '' : `?secret_arn=${warehouse.secretArn}`;
  return `redshift-data://workgroup/${warehouse.workgroupName}/${warehouse.database}${secret}`;
}
