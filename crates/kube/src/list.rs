//! Reading once, without watching: what `meshguard check --kubernetes` and
//! `meshguard validate --kubernetes` read.
//!
//! Owns listing a kind in a namespace (or every namespace) page by page, and filling a
//! [`Store`] as a watch's first list would. Does not own what the commands do with it.

use kube::Client;
use kube::api::{Api, DynamicObject, ListParams};
use kube::runtime::watcher::Event;

use crate::kinds::{WatchId, WatchKind, pod_resource};
use crate::store::Store;

/// Objects per page (the watcher's default).
const PAGE: u32 = 500;

/// Every object `watch` would list, read once; the error names the watch and the API
/// server's answer.
pub async fn list_objects(client: &Client, watch: &WatchId) -> Result<Vec<DynamicObject>, String> {
    let ar = match &watch.kind {
        WatchKind::Security(k) => k.api_resource(),
        WatchKind::Pod(_) | WatchKind::Pods => pod_resource(),
    };
    let api: Api<DynamicObject> = match &watch.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    let mut params = ListParams::default().limit(PAGE);
    if let WatchKind::Pod(name) = &watch.kind {
        params = params.fields(&format!("metadata.name={name}"));
    }
    let mut out = Vec::new();
    loop {
        let page = api.list(&params).await.map_err(|e| match e {
            kube::Error::Api(s) => format!(
                "cannot list {watch}: {} ({}): {}",
                s.reason, s.code, s.message
            ),
            other => format!("cannot list {watch}: {other}"),
        })?;
        out.extend(page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params.continue_token = Some(token),
            None => return Ok(out),
        }
    }
}

/// `watches` listed once into a store, as each watch's first list fills it (objects refused
/// and objects of another revision included, with the reason).
pub async fn list_into_store(
    client: &Client,
    watches: &[WatchId],
    revision: Option<String>,
) -> Result<Store, String> {
    let mut store = Store::new(watches, revision);
    for w in watches {
        let objects = list_objects(client, w).await?;
        store.apply(w, Event::Init);
        for o in objects {
            store.apply(w, Event::InitApply(o));
        }
        store.apply(w, Event::InitDone);
    }
    Ok(store)
}
