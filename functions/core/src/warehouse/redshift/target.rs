//! `redshift-data://` URLs: which cluster or serverless workgroup, which database, and how
//! the Data API gets database credentials.
//!
//! ```text
//! redshift-data://awsuser@cluster/my-cluster/analytics          cluster + db user (temporary credentials)
//! redshift-data://cluster/my-cluster/analytics?secret_arn=arn:..  cluster + credentials secret
//! redshift-data://workgroup/my-workgroup/analytics              serverless workgroup (IAM identity)
//! ```
//! `?region=eu-west-1` overrides the SDK's region; everything else (credentials chain,
//! `AWS_ENDPOINT_URL_REDSHIFT_DATA`, `AWS_ENDPOINT_URL_S3`) comes from the SDK's standard
//! configuration.
//!
//! Bulk loading through S3 (`COPY`) is turned on by naming a staging location and the role
//! Redshift reads it with: `?staging=s3://BUCKET/PREFIX/&copy_role=ARN` (`copy_role=default`
//! uses the cluster's default IAM role); `bulk_rows=N` sets the size from which a table's
//! rows go through S3 rather than inline.

/// Where the Data API runs statements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compute {
    Cluster {
        identifier: String,
        /// Temporary credentials for this database user (redshift:GetClusterCredentials).
        db_user: Option<String>,
        /// Or the ARN of a Secrets Manager secret holding the user and password.
        secret_arn: Option<String>,
    },
    Workgroup {
        name: String,
        secret_arn: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedshiftTarget {
    pub compute: Compute,
    pub database: String,
    pub region: Option<String>,
    /// `?large_strings=true`: the cluster opted in to strings over 65 535 bytes
    /// (`enable_large_strings_opt_in`), so documents up to a statement's size go inline.
    pub large_strings: bool,
    /// Where batches are staged for COPY; `None`: every batch goes inline.
    pub staging: Option<Staging>,
    /// A table's rows in one batch from which they go through S3 (when staging is set).
    pub bulk_rows: usize,
}

/// The S3 location bulk batches are written to, and the role COPY reads them with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staging {
    pub bucket: String,
    /// Key prefix: empty, or ending in `/`.
    pub prefix: String,
    /// COPY's `IAM_ROLE`: a role ARN associated with the cluster or namespace, or `default`.
    pub copy_role: String,
}

/// From this many rows of one table in a batch, they go through S3 (`bulk_rows`). Chosen
/// from scripts/bench-redshift.sh: under its latency model the COPY's fixed cost (a start
/// of about a second, four more statements, three S3 requests) equals the inline statements
/// it replaces at about 560 rows of ~1.5 KB (docs/redshift.md, "Choosing the path").
pub const DEFAULT_BULK_ROWS: usize = 600;

impl Staging {
    /// Parses `s3://BUCKET[/PREFIX]`; the prefix gets a trailing `/`.
    pub fn parse(location: &str, copy_role: &str) -> Result<Self, String> {
        let rest = location.strip_prefix("s3://").ok_or_else(|| {
            format!("staging must be an s3://BUCKET/PREFIX/ location, not {location:?}")
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
            && !bucket.starts_with(['-', '.'])
            && !bucket.ends_with(['-', '.']);
        if !valid_bucket {
            return Err(format!(
                "staging names {bucket:?}, which is not an S3 bucket name"
            ));
        }
        let prefix = match prefix.trim_start_matches('/') {
            "" => String::new(),
            p if p.ends_with('/') => p.to_string(),
            p => format!("{p}/"),
        };
        let role_ok = copy_role == "default"
            || (copy_role.starts_with("arn:aws")
                && copy_role.contains(":iam::")
                && copy_role.contains(":role/"));
        if !role_ok {
            return Err(format!(
                "copy_role must be an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME) or default, not {copy_role:?}"
            ));
        }
        Ok(Self {
            bucket: bucket.to_string(),
            prefix,
            copy_role: copy_role.to_string(),
        })
    }

    /// `s3://bucket/prefix/`, for messages.
    pub fn describe(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }
}

const EXAMPLES: &str = "redshift-data://USER@cluster/CLUSTER_ID/DATABASE, \
redshift-data://cluster/CLUSTER_ID/DATABASE?secret_arn=ARN or redshift-data://workgroup/WORKGROUP/DATABASE";

impl RedshiftTarget {
    /// Parses a `redshift-data://` URL; the error says what is wrong and shows the forms.
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("redshift-data://")
            .ok_or_else(|| format!("does not start with redshift-data:// (use {EXAMPLES})"))?;
        let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (user, location) = match location.split_once('@') {
            Some((user, location)) => (Some(user.to_string()), location),
            None => (None, location),
        };
        let parts: Vec<&str> = location.split('/').collect();
        let [kind, name, database] = parts.as_slice() else {
            return Err(format!(
                "expected KIND/NAME/DATABASE after redshift-data:// (use {EXAMPLES})"
            ));
        };
        if name.is_empty() || database.is_empty() {
            return Err(format!(
                "the cluster or workgroup name and the database are required (use {EXAMPLES})"
            ));
        }
        let mut secret_arn = None;
        let mut region = None;
        let mut large_strings = false;
        let mut staging = None;
        let mut copy_role = None;
        let mut bulk_rows = DEFAULT_BULK_ROWS;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("secret_arn", value)) if !value.is_empty() => {
                    secret_arn = Some(value.to_string())
                }
                Some(("region", value)) if !value.is_empty() => region = Some(value.to_string()),
                Some(("staging", value)) if !value.is_empty() => staging = Some(value.to_string()),
                Some(("copy_role", value)) if !value.is_empty() => {
                    copy_role = Some(value.to_string())
                }
                Some(("bulk_rows", value)) => {
                    bulk_rows = value.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                        format!("bulk_rows must be a positive number of rows, not {value:?}")
                    })?
                }
                Some(("large_strings", value)) => {
                    large_strings = match value {
                        "true" | "on" | "1" => true,
                        "false" | "off" | "0" => false,
                        _ => {
                            return Err(format!(
                                "large_strings must be true or false, not {value:?}"
                            ))
                        }
                    }
                }
                _ => {
                    // Only the option's name: its value could be a credential.
                    let name = pair.split('=').next().unwrap_or_default();
                    return Err(format!(
                        "unknown or empty option {name:?} (options: secret_arn, region, large_strings, staging, copy_role, bulk_rows)"
                    ));
                }
            }
        }
        let compute = match *kind {
            "cluster" => {
                if user.is_some() == secret_arn.is_some() {
                    return Err(format!(
                        "a cluster needs either a database user (USER@cluster/..) or ?secret_arn=, not both (use {EXAMPLES})"
                    ));
                }
                Compute::Cluster {
                    identifier: name.to_string(),
                    db_user: user,
                    secret_arn,
                }
            }
            "workgroup" => {
                if user.is_some() {
                    return Err("a serverless workgroup takes no database user: the Data API uses the caller's IAM identity (or ?secret_arn=)".into());
                }
                Compute::Workgroup {
                    name: name.to_string(),
                    secret_arn,
                }
            }
            other => {
                return Err(format!(
                    "{other:?} is neither cluster nor workgroup (use {EXAMPLES})"
                ))
            }
        };
        let staging = match (staging, copy_role) {
            (Some(location), Some(role)) => Some(Staging::parse(&location, &role)?),
            (None, None) => None,
            (Some(_), None) => {
                return Err("staging needs copy_role: the IAM role Redshift reads the staged objects with (an ARN associated with the cluster or namespace, or default)".into())
            }
            (None, Some(_)) => {
                return Err("copy_role is set without staging (an s3://BUCKET/PREFIX/ location)".into())
            }
        };
        Ok(Self {
            compute,
            database: database.to_string(),
            region,
            large_strings,
            staging,
            bulk_rows,
        })
    }

    /// For logs and errors: names only, never a credential.
    pub fn describe(&self) -> String {
        match &self.compute {
            Compute::Cluster {
                identifier,
                db_user,
                ..
            } => match db_user {
                Some(user) => format!(
                    "redshift cluster {identifier} database {} as {user}",
                    self.database
                ),
                None => format!(
                    "redshift cluster {identifier} database {} (credentials secret)",
                    self.database
                ),
            },
            Compute::Workgroup { name, .. } => {
                format!("redshift serverless {name} database {}", self.database)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_documented_forms_parse() {
        let cluster = RedshiftTarget::parse("redshift-data://awsuser@cluster/prod/analytics")
            .expect("cluster + user");
        assert_eq!(
            cluster.compute,
            Compute::Cluster {
                identifier: "prod".into(),
                db_user: Some("awsuser".into()),
                secret_arn: None
            }
        );
        assert_eq!(cluster.database, "analytics");
        let secret = RedshiftTarget::parse(
            "redshift-data://cluster/prod/analytics?secret_arn=arn:aws:secretsmanager:eu-west-1:1:secret:x&region=eu-west-1",
        )
        .expect("cluster + secret");
        assert_eq!(secret.region.as_deref(), Some("eu-west-1"));
        assert!(
            matches!(secret.compute, Compute::Cluster { secret_arn: Some(ref a), .. } if a.ends_with("secret:x"))
        );
        let serverless =
            RedshiftTarget::parse("redshift-data://workgroup/wg/dev").expect("workgroup");
        assert_eq!(
            serverless.compute,
            Compute::Workgroup {
                name: "wg".into(),
                secret_arn: None
            }
        );
    }

    #[test]
    fn staging_and_the_copy_role_turn_on_bulk_loading() {
        let target = RedshiftTarget::parse(
            "redshift-data://u@cluster/prod/db?staging=s3://heimdallr-staging/rollbar&copy_role=arn:aws:iam::123456789012:role/copy&bulk_rows=200",
        )
        .expect("staging");
        assert_eq!(
            target.staging,
            Some(Staging {
                bucket: "heimdallr-staging".into(),
                prefix: "rollbar/".into(),
                copy_role: "arn:aws:iam::123456789012:role/copy".into(),
            })
        );
        assert_eq!(target.bulk_rows, 200);
        let bare = RedshiftTarget::parse("redshift-data://u@cluster/prod/db").expect("inline");
        assert_eq!((bare.staging, bare.bulk_rows), (None, DEFAULT_BULK_ROWS));
        let whole_bucket = RedshiftTarget::parse(
            "redshift-data://u@cluster/prod/db?staging=s3://b-1/&copy_role=default",
        )
        .expect("default role");
        assert_eq!(
            whole_bucket.staging.map(|s| (s.prefix, s.copy_role)),
            Some((String::new(), "default".into()))
        );
    }

    #[test]
    fn the_urls_the_cdk_stack_builds_parse() {
        // infra/lib/settings.ts warehouseUrl(), with its tokens resolved as CloudFormation
        // would (a generated bucket name, the copy role's ARN); pinned in jest's stack tests.
        let bucket = "heimdallr-production-stagingbucket1a2b3c4d-0x9y8z7w6v5u";
        let role = "arn:aws:iam::123456789012:role/Heimdallr-production-redshift-copy";
        for url in [
            format!("redshift-data://heimdallr@cluster/analytics/analytics?staging=s3://{bucket}/rollbar/&copy_role={role}"),
            format!("redshift-data://cluster/analytics/analytics?secret_arn=arn:aws:secretsmanager:eu-west-1:123456789012:secret:rs-AbCdEf&staging=s3://{bucket}/rollbar/&copy_role={role}&bulk_rows=5000"),
            format!("redshift-data://workgroup/analytics/analytics?staging=s3://{bucket}/rollbar/&copy_role={role}"),
        ] {
            let target = RedshiftTarget::parse(&url).expect(&url);
            let staging = target.staging.expect("staging");
            assert_eq!((staging.bucket.as_str(), staging.prefix.as_str()), (bucket, "rollbar/"));
            assert_eq!(staging.copy_role, role);
        }
    }

    #[test]
    fn malformed_urls_say_what_is_wrong() {
        for (url, says) in [
            (
                "redshift-data://cluster/prod/analytics",
                "either a database user",
            ),
            ("redshift-data://u@cluster/prod/db?secret_arn=a", "not both"),
            ("redshift-data://u@workgroup/wg/db", "no database user"),
            (
                "redshift-data://warehouse/x/db",
                "neither cluster nor workgroup",
            ),
            ("redshift-data://cluster/prod", "KIND/NAME/DATABASE"),
            (
                "redshift-data://u@cluster/prod/db?password=hunter2",
                "unknown or empty option",
            ),
            (
                "redshift-data://u@cluster/p/db?staging=s3://bucket/x",
                "needs copy_role",
            ),
            (
                "redshift-data://u@cluster/p/db?copy_role=default",
                "without staging",
            ),
            (
                "redshift-data://u@cluster/p/db?staging=bucket/x&copy_role=default",
                "s3://",
            ),
            (
                "redshift-data://u@cluster/p/db?staging=s3://Bad_Bucket/x&copy_role=default",
                "not an S3 bucket name",
            ),
            (
                "redshift-data://u@cluster/p/db?staging=s3://bucket/x&copy_role=copy",
                "IAM role ARN",
            ),
            ("redshift-data://u@cluster/p/db?bulk_rows=0", "positive"),
        ] {
            let error = RedshiftTarget::parse(url).expect_err(url);
            assert!(error.contains(says), "{url}: {error}");
            assert!(!error.contains("hunter2"));
        }
    }
}
