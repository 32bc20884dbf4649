//! The page's IndexedDB ledger store: a round trip, a failed write that leaves the saved ledger
//! as it was, and deletion.

use js_sys::{Function, Object, Reflect};
use nse::web::storage::{self, Db, LEDGERS, LedgerRecord};
use wasm_bindgen::JsValue;
use wasm_bindgen_test::wasm_bindgen_test;

/// A database of its own per run, so that runs never see each other's values.
async fn fresh_db() -> Db {
    let name = format!("nse-test-{}", js_sys::Math::random());
    Db::open(&name)
        .await
        .expect("IndexedDB opens in headless Chromium")
}

fn record(patch: &[u8], method: &str) -> LedgerRecord {
    LedgerRecord {
        patch: patch.to_vec(),
        meta: r#"[{"seconds":1.5}]"#.into(),
        method: method.into(),
    }
}

#[wasm_bindgen_test]
async fn ledger_store_round_trips() {
    let db = fresh_db().await;
    let sha = "ab".repeat(32);
    assert_eq!(storage::load_ledger(&db, &sha).await.unwrap(), None);
    let first = record(b"NSEPATCH first", "nse");
    storage::save_ledger(&db, &sha, &first).await.unwrap();
    assert_eq!(
        storage::load_ledger(&db, &sha).await.unwrap(),
        Some(first.clone())
    );
    // A newer ledger replaces it; another model's key is independent.
    let second = record(&[7u8; 100_000], "alphaedit");
    storage::save_ledger(&db, &sha, &second).await.unwrap();
    assert_eq!(storage::load_ledger(&db, &sha).await.unwrap(), Some(second));
    assert_eq!(
        storage::load_ledger(&db, &"cd".repeat(32)).await.unwrap(),
        None
    );
    storage::clear_ledger(&db, &sha).await.unwrap();
    assert_eq!(storage::load_ledger(&db, &sha).await.unwrap(), None);
}

#[wasm_bindgen_test]
async fn a_failed_write_leaves_the_saved_ledger_as_it_was() {
    let db = fresh_db().await;
    let sha = "ef".repeat(32);
    let saved = record(b"NSEPATCH saved", "nse");
    storage::save_ledger(&db, &sha, &saved).await.unwrap();
    // A value IndexedDB cannot store (a function is not structured-cloneable): the put throws
    // inside its transaction, which aborts.
    let bad = Object::new();
    Reflect::set(
        &bad,
        &"patch".into(),
        &Function::new_no_args("return 1").into(),
    )
    .unwrap();
    let err = db
        .put(LEDGERS, &sha, &bad.into())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("DataCloneError") || err.contains("could not be cloned"),
        "{err}"
    );
    assert_eq!(storage::load_ledger(&db, &sha).await.unwrap(), Some(saved));
    // A value that is not a ledger record is reported, not misread.
    db.put(LEDGERS, &sha, &JsValue::from_f64(3.0))
        .await
        .unwrap();
    assert!(storage::load_ledger(&db, &sha).await.is_err());
}

#[wasm_bindgen_test]
async fn covariance_keys_sort_by_budget_under_one_prefix() {
    let db = fresh_db().await;
    let sha = "12".repeat(32);
    let layers = [3, 4, 5];
    for budget in [150_000, 10_240] {
        let key = storage::cov_key(&sha, &layers, "wikitext2_raw_test", budget, 1024);
        db.put(storage::COVARIANCE, &key, &JsValue::from_f64(budget as f64))
            .await
            .unwrap();
    }
    db.put(
        storage::COVARIANCE,
        &storage::cov_key(&sha, &[3], "x", 5, 1),
        &JsValue::NULL,
    )
    .await
    .unwrap();
    let keys = db
        .keys_with_prefix(storage::COVARIANCE, &storage::cov_prefix(&sha, &layers))
        .await
        .unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(
        keys[0].contains("n0000010240") && keys[1].contains("n0000150000"),
        "{keys:?}"
    );
}
