#![allow(dead_code)]

//! A control database of its own for each test (the harness's [`ControlDb`], dropped when
//! the test ends, even when it fails).

use ferrotrove_store::{Store, StoreConfig};
use ferrotrove_tests::ControlDb;

/// A fresh database `ft_test_<random>` and a store connected to it.
pub struct TestDb {
    pub store: Store,
    pub config: StoreConfig,
    _db: ControlDb,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let db = ControlDb::new();
        let config = StoreConfig {
            url: db.server_url().to_owned(),
            database: db.name.clone(),
            pool_max: 4,
            ..StoreConfig::default()
        };
        let store = Store::connect(&config)
            .await
            .expect("connect to the test MariaDB at 127.0.0.1:3306");
        TestDb {
            store,
            config,
            _db: db,
        }
    }
}
