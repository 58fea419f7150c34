//! `redshift-data://` URLs: which cluster or serverless workgroup, which database, and how
//! the Data API gets database credentials.
//!
//! ```text
//! redshift-data://awsuser@cluster/my-cluster/analytics          cluster + db user (temporary credentials)
//! redshift-data://cluster/my-cluster/analytics?secret_arn=arn:..  cluster + credentials secret
//! redshift-data://workgroup/my-workgroup/analytics              serverless workgroup (IAM identity)
//! ```
//! `?region=eu-west-1` overrides the SDK's region; everything else (credentials chain,
//! `AWS_ENDPOINT_URL_REDSHIFT_DATA`) comes from the SDK's standard configuration.

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
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("secret_arn", value)) if !value.is_empty() => {
                    secret_arn = Some(value.to_string())
                }
                Some(("region", value)) if !value.is_empty() => region = Some(value.to_string()),
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
                        "unknown or empty option {name:?} (options: secret_arn, region, large_strings)"
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
        Ok(Self {
            compute,
            database: database.to_string(),
            region,
            large_strings,
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
        ] {
            let error = RedshiftTarget::parse(url).expect_err(url);
            assert!(error.contains(says), "{url}: {error}");
            assert!(!error.contains("hunter2"));
        }
    }
}
