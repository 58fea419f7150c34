//! The S3 transport of the bulk path: puts a transaction's objects into the staging
//! prefix before it is submitted, and deletes them after (a lifecycle rule on the bucket
//! expires what a crash leaves behind). It knows nothing of tables or SQL.

use super::plan::Upload;
use super::target::Staging;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use std::time::Instant;

/// The longest a clean-up delete may take (S3 answers in milliseconds).
const DELETE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

pub(super) struct StagingStore {
    client: Client,
    pub(super) staging: Staging,
}

impl StagingStore {
    /// The client from the SDK configuration the Data API client uses. With a custom S3
    /// endpoint (`AWS_ENDPOINT_URL_S3`: an S3-compatible store or a stand-in), buckets are
    /// addressed by path, as such endpoints expect.
    pub(super) fn new(config: &aws_config::SdkConfig, staging: Staging) -> Self {
        let custom_endpoint = std::env::var_os("AWS_ENDPOINT_URL_S3").is_some();
        let s3 = aws_sdk_s3::config::Builder::from(config)
            .force_path_style(custom_endpoint)
            .build();
        Self::with_client(Client::from_conf(s3), staging)
    }

    pub(super) fn with_client(client: Client, staging: Staging) -> Self {
        Self { client, staging }
    }

    /// Puts one object (the SDK retries throttling and server errors); stops at `deadline`.
    pub(super) async fn put(
        &self,
        upload: &Upload,
        deadline: Option<Instant>,
    ) -> Result<(), String> {
        let request = self
            .client
            .put_object()
            .bucket(&self.staging.bucket)
            .key(&upload.key)
            .content_type("application/x-ndjson")
            .content_encoding("gzip")
            .body(ByteStream::from(upload.body.clone()))
            .send();
        let outcome = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline.into(), request)
                .await
                .map_err(|_| "the time budget ended during the upload".to_string())?,
            None => request.await,
        };
        outcome.map(|_| ()).map_err(|error| {
            format!(
                "S3 PutObject s3://{}/{} ({} rows of {}): {}{}",
                self.staging.bucket,
                upload.key,
                upload.rows,
                upload.table,
                DisplayErrorContext(&error),
                hint(error.code()),
            )
        })
    }

    /// Deletes one object, waiting [`DELETE_WAIT`] at most; a failure is only logged (the
    /// lifecycle rule expires the object).
    pub(super) async fn delete(&self, key: &str) {
        let request = self
            .client
            .delete_object()
            .bucket(&self.staging.bucket)
            .key(key)
            .send();
        let error = match tokio::time::timeout(DELETE_WAIT, request).await {
            Ok(Ok(_)) => return,
            Ok(Err(error)) => DisplayErrorContext(&error).to_string(),
            Err(_) => format!("no answer within {DELETE_WAIT:?}"),
        };
        tracing::warn!(
            bucket = %self.staging.bucket,
            key,
            error,
            "could not delete a staged object; the bucket's lifecycle rule will expire it"
        );
    }
}

/// What to check for the S3 errors a setup mistake causes.
fn hint(code: Option<&str>) -> &'static str {
    match code {
        Some("AccessDenied") => {
            " (the function's role needs s3:PutObject on the staging prefix: docs/redshift.md)"
        }
        Some("NoSuchBucket") => {
            " (the staging bucket does not exist: check staging= in the warehouse URL)"
        }
        _ => "",
    }
}
