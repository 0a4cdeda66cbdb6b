//! A control database of its own for each test, dropped when the test ends, even when it
//! fails: the guard's `Drop` runs during unwinding and drops the database on a thread of
//! its own (the test's runtime may be the one unwinding). The test's pool cannot run while
//! `Drop` blocks its runtime, so connections still on the database are killed first: one
//! left inside a transaction would hold a metadata lock that `DROP DATABASE` waits for.

use ferrotrove_store::{Store, StoreConfig};
use mysql_async::prelude::Queryable;

/// The MariaDB the tests run against.
pub const SERVER_URL: &str = "mysql://root@127.0.0.1:3306";

/// A fresh database `ft_test_<random>` and a store connected to it.
pub struct TestDb {
    pub store: Store,
    pub config: StoreConfig,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let config = StoreConfig {
            url: SERVER_URL.to_owned(),
            database: format!("ft_test_{}", uuid::Uuid::new_v4().simple()),
            pool_max: 4,
        };
        let store = Store::connect(&config)
            .await
            .expect("connect to the test MariaDB at 127.0.0.1:3306");
        TestDb { store, config }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let database = self.config.database.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async {
                let opts = mysql_async::Opts::from_url(SERVER_URL)?;
                let mut conn = mysql_async::Conn::new(opts).await?;
                let others: Vec<u64> = conn
                    .exec(
                        "SELECT id FROM information_schema.processlist WHERE db = ? AND id <> CONNECTION_ID()",
                        (database.as_str(),),
                    )
                    .await?;
                for id in others {
                    // Gone already is fine.
                    let _ = conn.query_drop(format!("KILL {id}")).await;
                }
                conn.query_drop(format!("DROP DATABASE IF EXISTS `{database}`")).await?;
                conn.disconnect().await?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}", self.config.database);
        }
    }
}
