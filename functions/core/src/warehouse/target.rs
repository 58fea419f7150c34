//! Where to write: the `--warehouse` URL, and the backend it opens.

#[cfg(feature = "duckdb")]
use super::duck;
use super::postgres;
#[cfg(feature = "redshift")]
use super::redshift;
use super::redshift::target::RedshiftTarget;
use super::{dialect, Warehouse, WarehouseError};
use std::sync::Arc;

/// Where to write, parsed from `--warehouse` / `HEIMDALLR_WAREHOUSE`.
#[derive(Clone, PartialEq, Eq)]
pub enum WarehouseTarget {
    DuckDb { path: std::path::PathBuf },
    Postgres { url: String },
    RedshiftData(RedshiftTarget),
}

impl std::fmt::Debug for WarehouseTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// The embedded file used when no warehouse is given.
/// Not `heimdallr.duckdb`: DuckDB names a file's catalog after its stem, and a catalog
/// named like the default schema makes every `heimdallr.<table>` ambiguous.
pub const DEFAULT_DUCKDB_PATH: &str = "warehouse.duckdb";

impl WarehouseTarget {
    pub fn parse(url: &str) -> Result<Self, WarehouseError> {
        let url = url.trim();
        let bad = |reason: &str| WarehouseError::BadUrl {
            url: redact_url(url),
            reason: reason.to_string(),
        };
        if url.is_empty() {
            return Ok(Self::DuckDb {
                path: DEFAULT_DUCKDB_PATH.into(),
            });
        }
        if let Some(rest) = url
            .strip_prefix("duckdb://")
            .or_else(|| url.strip_prefix("duckdb:"))
        {
            if rest.is_empty() {
                return Err(bad(
                    "no file path after duckdb:// (e.g. duckdb://./warehouse.duckdb)",
                ));
            }
            return Ok(Self::DuckDb { path: rest.into() });
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
            if parsed.host_str().unwrap_or_default().is_empty() {
                return Err(bad(
                    "no host (e.g. postgres://user@localhost:5432/analytics)",
                ));
            }
            return Ok(Self::Postgres {
                url: url.to_string(),
            });
        }
        if url.starts_with("redshift-data://") {
            return RedshiftTarget::parse(url)
                .map(Self::RedshiftData)
                .map_err(|reason| bad(&reason));
        }
        if url.contains("://") {
            return Err(bad(
                "unknown scheme: use a DuckDB file path, duckdb://PATH, postgres://... or redshift-data://...",
            ));
        }
        Ok(Self::DuckDb { path: url.into() })
    }

    pub fn describe(&self) -> String {
        match self {
            Self::DuckDb { path } => format!("duckdb file {}", path.display()),
            Self::Postgres { url } => redact_url(url),
            Self::RedshiftData(target) => target.describe(),
        }
    }
}

/// Removes the password from a URL for messages.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => match url.find('@') {
            // Unparseable: keep only what follows the credentials.
            Some(at) => format!("***{}", &url[at..]),
            None => url.to_string(),
        },
    }
}

/// Opens the backend for `target`, writing into `schema`.
pub async fn open(
    target: &WarehouseTarget,
    schema: &str,
) -> Result<Arc<dyn Warehouse>, WarehouseError> {
    dialect::check_identifier(schema).map_err(|reason| WarehouseError::BadUrl {
        url: format!("schema {schema:?}"),
        reason,
    })?;
    match target {
        WarehouseTarget::Postgres { url } => {
            Ok(Arc::new(postgres::PostgresWarehouse::connect(url, schema).await?))
        }
        #[cfg(feature = "duckdb")]
        WarehouseTarget::DuckDb { path } => Ok(Arc::new(duck::DuckDbWarehouse::open(path, schema)?)),
        #[cfg(not(feature = "duckdb"))]
        WarehouseTarget::DuckDb { .. } => Err(WarehouseError::Unsupported(
            "this build has no embedded DuckDB backend; pass --warehouse postgres://... or build with the duckdb feature".into(),
        )),
        #[cfg(feature = "redshift")]
        WarehouseTarget::RedshiftData(target) => Ok(Arc::new(
            redshift::RedshiftWarehouse::connect(target, schema).await,
        )),
        #[cfg(not(feature = "redshift"))]
        WarehouseTarget::RedshiftData(_) => Err(WarehouseError::Unsupported(
            "this build has no Redshift backend; build with the redshift feature".into(),
        )),
    }
}

/// Opens the backend for `target` to read only (`heimdallr status`): never creates a file,
/// a schema or a table, and a DuckDB file is opened read-only, so that it can be read
/// while nothing writes it. `None` when the DuckDB file does not exist yet.
pub async fn open_for_reading(
    target: &WarehouseTarget,
    schema: &str,
) -> Result<Option<Arc<dyn Warehouse>>, WarehouseError> {
    match target {
        #[cfg(feature = "duckdb")]
        WarehouseTarget::DuckDb { path } => {
            if !path.exists() {
                return Ok(None);
            }
            dialect::check_identifier(schema).map_err(|reason| WarehouseError::BadUrl {
                url: format!("schema {schema:?}"),
                reason,
            })?;
            Ok(Some(Arc::new(duck::DuckDbWarehouse::open_read_only(
                path, schema,
            )?)))
        }
        _ => open(target, schema).await.map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warehouse_urls_parse_and_never_show_passwords() {
        assert_eq!(
            WarehouseTarget::parse("").unwrap(),
            WarehouseTarget::DuckDb {
                path: DEFAULT_DUCKDB_PATH.into()
            }
        );
        assert_eq!(
            WarehouseTarget::parse("data/x.duckdb").unwrap(),
            WarehouseTarget::DuckDb {
                path: "data/x.duckdb".into()
            }
        );
        let pg = WarehouseTarget::parse("postgres://ann:hunter2@db:5432/analytics").unwrap();
        assert!(!format!("{pg:?}").contains("hunter2"));
        let err = WarehouseTarget::parse("mysql://x:secretpw@h/db").unwrap_err();
        assert!(err.to_string().contains("unknown scheme"));
        assert!(!err.to_string().contains("secretpw"));
        assert!(WarehouseTarget::parse("postgres:///nohost").is_err());
    }
}
