//! Browser storage, in the engine's worker: IndexedDB for the edit ledger and the covariance
//! statistics (the Cache API, for the downloaded model bytes, is in `loader`).
//!
//! IndexedDB writes are transactional: [`Db::put`] resolves only when its transaction has
//! committed, and a failed or aborted transaction leaves the stored value as it was. The page
//! writes a ledger only after an edit has fully succeeded, so an interrupted edit (a closed tab,
//! an error) never leaves a half-written ledger behind.

use js_sys::{Array, Object, Promise, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Event, IdbDatabase, IdbKeyRange, IdbOpenDbRequest, IdbRequest, IdbTransactionMode};

use crate::{Error, Result};

/// The page's database.
pub const DB_NAME: &str = "nse";
/// Its schema version (bump when adding stores).
const DB_VERSION: u32 = 1;
/// Ledgers by model sha256: `{patch: Uint8Array, meta: string, method: string, saved: number}`.
pub const LEDGERS: &str = "ledgers";
/// Covariance statistics by [`cov_key`]: `{tokens, source, layers: [l…], m{l}: Uint8Array}`.
pub const COVARIANCE: &str = "covariance";
const STORES: [&str; 2] = [LEDGERS, COVARIANCE];

/// An open IndexedDB database with the page's object stores.
pub struct Db {
    db: IdbDatabase,
}

impl Db {
    /// Opens (creating or upgrading) the database `name`.
    ///
    /// # Errors
    /// No IndexedDB (a private window of some browsers, or storage switched off), or the
    /// browser refused to open it.
    pub async fn open(name: &str) -> Result<Db> {
        // `indexedDB` of the global scope: the engine's worker in the page (the page's main
        // thread never opens it), a window in the browser tests.
        let factory = Reflect::get(&js_sys::global(), &JsValue::from_str("indexedDB"))
            .ok()
            .and_then(|f| f.dyn_into::<web_sys::IdbFactory>().ok())
            .ok_or_else(|| {
                Error::input("this browser offers no IndexedDB, so nothing can be saved")
            })?;
        let req: IdbOpenDbRequest = factory
            .open_with_u32(name, DB_VERSION)
            .map_err(|e| js_err("cannot open IndexedDB", e))?;
        let upgrade = Closure::<dyn FnMut(Event)>::new(move |e: Event| {
            let Some(db) = e
                .target()
                .and_then(|t| t.dyn_into::<IdbRequest>().ok())
                .and_then(|r| r.result().ok())
                .and_then(|r| r.dyn_into::<IdbDatabase>().ok())
            else {
                return;
            };
            let names = db.object_store_names();
            for s in STORES {
                if !names.contains(s) {
                    let _ = db.create_object_store(s);
                }
            }
        });
        req.set_onupgradeneeded(Some(upgrade.as_ref().unchecked_ref()));
        let result = wait_request(&req).await;
        req.set_onupgradeneeded(None);
        drop(upgrade);
        let db = result
            .map_err(|e| js_err("cannot open IndexedDB", e))?
            .dyn_into::<IdbDatabase>()
            .map_err(|e| js_err("IndexedDB returned no database", e))?;
        Ok(Db { db })
    }

    /// The value under `key` in `store`, `None` when absent.
    ///
    /// # Errors
    /// The browser failed the read.
    pub async fn get(&self, store: &str, key: &str) -> Result<Option<JsValue>> {
        let tx = self
            .db
            .transaction_with_str(store)
            .map_err(|e| js_err("cannot read IndexedDB", e))?;
        let req = tx
            .object_store(store)
            .and_then(|s| s.get(&JsValue::from_str(key)))
            .map_err(|e| js_err("cannot read IndexedDB", e))?;
        let v = wait_request(&req)
            .await
            .map_err(|e| js_err(&format!("reading {store}/{key} failed"), e))?;
        Ok((!v.is_undefined()).then_some(v))
    }

    /// Stores `value` under `key` and waits until the transaction has committed.
    ///
    /// # Errors
    /// The value cannot be stored (not structured-cloneable, over the quota) or the transaction
    /// aborted; the previous value under `key` is then untouched.
    pub async fn put(&self, store: &str, key: &str, value: &JsValue) -> Result<()> {
        let what = format!("saving {store}/{key} in IndexedDB failed");
        let tx = self
            .db
            .transaction_with_str_and_mode(store, IdbTransactionMode::Readwrite)
            .map_err(|e| js_err(&what, e))?;
        let done = transaction_done(&tx);
        let put = tx
            .object_store(store)
            .and_then(|s| s.put_with_key(value, &JsValue::from_str(key)));
        if let Err(e) = put {
            let _ = tx.abort();
            let _ = JsFuture::from(done).await;
            return Err(js_err(&what, e));
        }
        JsFuture::from(done)
            .await
            .map(|_| ())
            .map_err(|e| js_err(&what, e))
    }

    /// Deletes `key` from `store` (nothing happens when it is absent).
    ///
    /// # Errors
    /// The browser failed the transaction.
    pub async fn delete(&self, store: &str, key: &str) -> Result<()> {
        let what = format!("deleting {store}/{key} from IndexedDB failed");
        let tx = self
            .db
            .transaction_with_str_and_mode(store, IdbTransactionMode::Readwrite)
            .map_err(|e| js_err(&what, e))?;
        let done = transaction_done(&tx);
        tx.object_store(store)
            .and_then(|s| s.delete(&JsValue::from_str(key)))
            .map_err(|e| js_err(&what, e))?;
        JsFuture::from(done)
            .await
            .map(|_| ())
            .map_err(|e| js_err(&what, e))
    }

    /// The keys of `store` that start with `prefix`, sorted.
    ///
    /// # Errors
    /// The browser failed the read.
    pub async fn keys_with_prefix(&self, store: &str, prefix: &str) -> Result<Vec<String>> {
        let range = IdbKeyRange::bound(
            &JsValue::from_str(prefix),
            &JsValue::from_str(&format!("{prefix}\u{ffff}")),
        )
        .map_err(|e| js_err("bad key range", e))?;
        let tx = self
            .db
            .transaction_with_str(store)
            .map_err(|e| js_err("cannot read IndexedDB", e))?;
        let req = tx
            .object_store(store)
            .and_then(|s| s.get_all_keys_with_key(&range))
            .map_err(|e| js_err("cannot read IndexedDB", e))?;
        let keys = wait_request(&req)
            .await
            .map_err(|e| js_err("listing IndexedDB keys failed", e))?;
        Ok(Array::from(&keys)
            .iter()
            .filter_map(|k| k.as_string())
            .collect())
    }
}

/// Resolves with the request's result on `success`, rejects with its error on `error`.
async fn wait_request(req: &IdbRequest) -> std::result::Result<JsValue, JsValue> {
    let promise = Promise::new(&mut |resolve, reject| {
        let r = req.clone();
        let ok = Closure::once_into_js(move |_: Event| {
            let _ = resolve.call1(&JsValue::NULL, &r.result().unwrap_or(JsValue::UNDEFINED));
        });
        let r = req.clone();
        let fail = Closure::once_into_js(move |_: Event| {
            let err = r
                .error()
                .ok()
                .flatten()
                .map_or(JsValue::from_str("unknown IndexedDB error"), JsValue::from);
            let _ = reject.call1(&JsValue::NULL, &err);
        });
        req.set_onsuccess(Some(ok.unchecked_ref()));
        req.set_onerror(Some(fail.unchecked_ref()));
    });
    JsFuture::from(promise).await
}

/// A promise that resolves when `tx` commits and rejects when it fails or aborts.
fn transaction_done(tx: &web_sys::IdbTransaction) -> Promise {
    Promise::new(&mut |resolve, reject| {
        let ok = Closure::once_into_js(move |_: Event| {
            let _ = resolve.call0(&JsValue::NULL);
        });
        let t = tx.clone();
        let reject_abort = reject.clone();
        let fail = Closure::once_into_js(move |_: Event| {
            let err = t
                .error()
                .map_or(JsValue::from_str("the transaction failed"), JsValue::from);
            let _ = reject.call1(&JsValue::NULL, &err);
        });
        let abort = Closure::once_into_js(move |_: Event| {
            let _ = reject_abort.call1(
                &JsValue::NULL,
                &JsValue::from_str("the transaction was aborted"),
            );
        });
        tx.set_oncomplete(Some(ok.unchecked_ref()));
        tx.set_onerror(Some(fail.unchecked_ref()));
        tx.set_onabort(Some(abort.unchecked_ref()));
    })
}

/// A JavaScript exception (a `DOMException` has `name` and `message`) as an [`Error`].
pub(crate) fn js_err(doing: &str, e: JsValue) -> Error {
    let field = |k: &str| {
        Reflect::get(&e, &JsValue::from_str(k))
            .ok()
            .and_then(|v| v.as_string())
    };
    let text = match (field("name"), field("message")) {
        (Some(n), Some(m)) if !m.is_empty() => format!("{n}: {m}"),
        (_, Some(m)) => m,
        _ => e.as_string().unwrap_or_else(|| format!("{e:?}")),
    };
    Error::input(format!("{doing}: {text}"))
}

/// The ledger of one model as the page stores it.
#[derive(Clone, Debug, PartialEq)]
pub struct LedgerRecord {
    /// [`crate::edit::patch::Patch::to_bytes`] of the ledger (it carries the hyperparameters).
    pub patch: Vec<u8>,
    /// The page's records of each entry (JSON): residuals per round, probes, success.
    pub meta: String,
    /// The method selected in the edit panel.
    pub method: String,
}

impl LedgerRecord {
    fn to_js(&self) -> JsValue {
        let o = Object::new();
        set(&o, "patch", &Uint8Array::from(self.patch.as_slice()).into());
        set(&o, "meta", &JsValue::from_str(&self.meta));
        set(&o, "method", &JsValue::from_str(&self.method));
        set(&o, "saved", &JsValue::from_f64(js_sys::Date::now()));
        o.into()
    }

    fn from_js(v: &JsValue) -> Option<Self> {
        let get = |k: &str| Reflect::get(v, &JsValue::from_str(k)).ok();
        Some(LedgerRecord {
            patch: get("patch")?.dyn_into::<Uint8Array>().ok()?.to_vec(),
            meta: get("meta")?.as_string()?,
            method: get("method")?.as_string()?,
        })
    }
}

/// Saves the ledger of the model with this sha256 (one transaction: all or nothing).
///
/// # Errors
/// See [`Db::put`].
pub async fn save_ledger(db: &Db, model_sha256: &str, record: &LedgerRecord) -> Result<()> {
    db.put(LEDGERS, model_sha256, &record.to_js()).await
}

/// The saved ledger of the model with this sha256.
///
/// # Errors
/// The read failed, or the stored value is not a ledger record.
pub async fn load_ledger(db: &Db, model_sha256: &str) -> Result<Option<LedgerRecord>> {
    match db.get(LEDGERS, model_sha256).await? {
        None => Ok(None),
        Some(v) => LedgerRecord::from_js(&v).map(Some).ok_or_else(|| {
            Error::input("the ledger saved in this browser is not readable; it was ignored")
        }),
    }
}

/// Forgets the saved ledger of the model with this sha256.
///
/// # Errors
/// See [`Db::delete`].
pub async fn clear_ledger(db: &Db, model_sha256: &str) -> Result<()> {
    db.delete(LEDGERS, model_sha256).await
}

/// The key of a covariance set: model, layers, corpus, token budget and window. Keys of the same
/// model and layers share the prefix [`cov_prefix`].
pub fn cov_key(
    model_sha256: &str,
    layers: &[usize],
    corpus: &str,
    budget: usize,
    window: usize,
) -> String {
    format!(
        "{}{corpus}|n{budget:010}|w{window}",
        cov_prefix(model_sha256, layers)
    )
}

/// The part of [`cov_key`] that names the model and the layers.
pub fn cov_prefix(model_sha256: &str, layers: &[usize]) -> String {
    let layers: Vec<String> = layers.iter().map(ToString::to_string).collect();
    format!("{model_sha256}|L{}|", layers.join(","))
}

pub(crate) fn set(o: &Object, k: &str, v: &JsValue) {
    Reflect::set(o, &JsValue::from_str(k), v).expect("setting a field of a plain object");
}
