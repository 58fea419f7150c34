//! The PostgreSQL that scripts/test.sh starts for the suite.

/// The server's URL, or `None` when running outside scripts/test.sh. When
/// `HEIMDALLR_REQUIRE_POSTGRES` is set (as the script does) a missing server fails the
/// test instead of skipping it.
pub fn test_postgres_url() -> Option<String> {
    match std::env::var("HEIMDALLR_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("HEIMDALLR_REQUIRE_POSTGRES").is_err(),
                "HEIMDALLR_TEST_POSTGRES_URL is not set but PostgreSQL is required"
            );
            eprintln!("skipping: HEIMDALLR_TEST_POSTGRES_URL not set (run scripts/test.sh)");
            None
        }
    }
}

/// A schema name no other test uses.
pub fn unique_schema(prefix: &str) -> String {
    format!("{prefix}_{}_{}", std::process::id(), rand::random::<u32>())
}

/// A client of the test PostgreSQL, its connection driven in the background.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test PostgreSQL");
    tokio::spawn(connection);
    client
}
