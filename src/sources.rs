//! The sources the command knows: the one place a source is registered with it, one line
//! in `sources!` (its settings become `sync`'s flags, its name a `sync` argument).

use async_trait::async_trait;
use heimdallr_circleci::CircleCi;
use heimdallr_core::engine::{RunOutcome, SyncOptions};
use heimdallr_core::pii::PiiPolicy;
use heimdallr_core::source::{sync_source, Common, ConfigError, Source};
use heimdallr_core::warehouse::Warehouse;
use heimdallr_heroku::Heroku;
use heimdallr_rollbar::Rollbar;
use std::sync::Arc;

/// Declares the registered sources, one line each: `field: Type` where the type implements
/// [`Source`]. Makes [`SourceSettings`] (every source's settings, flattened into
/// `heimdallr sync`), [`registered`] (in the order `sync all` runs them) and [`NAMES`].
macro_rules! sources {
    ($($field:ident: $source:ty),+ $(,)?) => {
        /// Every source's settings, flattened into `heimdallr sync`.
        #[derive(Debug, clap::Args)]
        pub struct SourceSettings {
            $(
                #[command(flatten)]
                pub $field: <$source as Source>::Settings,
            )+
        }

        /// The registered sources, in the order `sync all` runs them.
        pub fn registered(settings: &SourceSettings) -> Vec<Box<dyn Registered + '_>> {
            vec![$(Box::new(Entry::<$source>(&settings.$field))),+]
        }

        /// The names `heimdallr sync` takes: every source, and `all`.
        pub const NAMES: &[&str] = &[$(<$source as Source>::NAME,)+ "all"];
    };
}

sources! {
    rollbar: Rollbar,
    heroku: Heroku,
    circleci: CircleCi,
}

/// A registered source, whatever its types.
pub trait Registered {
    fn name(&self) -> &'static str;
    /// The environment variable that holds its credential.
    fn credential_env(&self) -> &'static str;
    /// The source with its credential (from its environment variable), ready to sync.
    fn prepare(&self, common: &Common, pii: &PiiPolicy) -> Result<Box<dyn Prepared>, ConfigError>;
}

/// A source ready for passes.
#[async_trait]
pub trait Prepared: Send + Sync {
    async fn sync(&self, warehouse: &Arc<dyn Warehouse>, options: &SyncOptions) -> Vec<RunOutcome>;
}

struct Entry<'a, S: Source>(&'a S::Settings);

impl<S: Source> Registered for Entry<'_, S> {
    fn name(&self) -> &'static str {
        S::NAME
    }

    fn credential_env(&self) -> &'static str {
        S::CREDENTIAL_ENV
    }

    fn prepare(&self, common: &Common, pii: &PiiPolicy) -> Result<Box<dyn Prepared>, ConfigError> {
        let text = std::env::var(S::CREDENTIAL_ENV).unwrap_or_default();
        let credential = S::credential_from_env(&text)?;
        Ok(Box::new(Ready::<S> {
            source: S::new(self.0, common)?,
            credential,
            pii: pii.clone(),
        }))
    }
}

struct Ready<S: Source> {
    source: S,
    credential: S::Credential,
    pii: PiiPolicy,
}

#[async_trait]
impl<S: Source> Prepared for Ready<S> {
    async fn sync(&self, warehouse: &Arc<dyn Warehouse>, options: &SyncOptions) -> Vec<RunOutcome> {
        sync_source(
            &self.source,
            &self.credential,
            &self.pii,
            warehouse,
            options,
        )
        .await
    }
}
