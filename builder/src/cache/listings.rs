//! Layer listings by blob: kept under `<store>/buildcache/listings/`, shared in memory by a
//! build's stages, and read ahead on a thread of their own while a step works.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use cairn_layers::image::Descriptor;
use cairn_layers::listing::Listing;
use cairn_layers::{Digest, Store};

use crate::error::Result;
use crate::fsutil::write_atomic;

/// One layer's listing once someone has it; `None` when reading it failed (whoever asks then
/// reads it again, for the error).
type Slot = Arc<OnceLock<Option<Arc<Listing>>>>;

#[derive(Debug)]
pub(super) struct Listings {
    dir: PathBuf,
    slots: Mutex<HashMap<Digest, Slot>>,
    /// The threads reading ahead, joined when the cache goes ([`Listings::join_readers`]).
    readers: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Listings {
    pub(super) fn new(dir: PathBuf) -> Arc<Listings> {
        Arc::new(Listings {
            dir,
            slots: Mutex::default(),
            readers: Mutex::default(),
        })
    }

    fn slot(&self, layer: &Digest) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(slots.entry(layer.clone()).or_default())
    }

    fn file(&self, layer: &Digest) -> PathBuf {
        self.dir.join(layer.hex())
    }

    /// The listing of `layer`: from memory, else its file, else its blob (then kept). Two
    /// askers at once read it once: the second waits for the first.
    pub(super) fn get(&self, store: &Store, layer: &Descriptor) -> Result<Arc<Listing>> {
        let slot = self.slot(&layer.digest);
        let mut failed = None;
        let got = slot.get_or_init(|| match self.read(store, layer) {
            Ok(l) => Some(Arc::new(l)),
            Err(e) => {
                failed = Some(e);
                None
            }
        });
        match (got, failed) {
            (Some(l), _) => Ok(Arc::clone(l)),
            (None, Some(e)) => Err(e),
            // Someone else failed: read it here for the error, or the listing after all.
            (None, None) => self.read(store, layer).map(Arc::new),
        }
    }

    fn read(&self, store: &Store, layer: &Descriptor) -> Result<Listing> {
        let file = self.file(&layer.digest);
        if let Some(l) = std::fs::read(&file)
            .ok()
            .and_then(|b| Listing::from_bytes(&b))
        {
            return Ok(l);
        }
        let listing = Listing::read(store.open_layer(layer)?)?;
        // A listing that cannot be kept is read again next time.
        let _ = write_atomic(&file, &listing.to_bytes());
        Ok(listing)
    }

    /// Keeps the listing of a layer just written, as [`Listings::get`] would have read it.
    pub(super) fn put(&self, layer: &Digest, listing: Listing) {
        // A listing that cannot be kept is read from the blob when it is wanted.
        let _ = write_atomic(&self.file(layer), &listing.to_bytes());
        let _ = self.slot(layer).set(Some(Arc::new(listing)));
    }

    /// Reads the listings of `layers` that no file keeps on a thread of its own: a base's,
    /// while the first RUN unpacks it on the other core, so that the first COPY finds it.
    pub(super) fn read_ahead(self: &Arc<Self>, store: &Store, layers: &[Descriptor]) {
        let todo: Vec<Descriptor> = layers
            .iter()
            .filter(|l| self.slot(&l.digest).get().is_none() && !self.file(&l.digest).exists())
            .cloned()
            .collect();
        if todo.is_empty() {
            return;
        }
        let (me, store) = (Arc::clone(self), store.clone());
        let reader = std::thread::Builder::new()
            .name("listings".into())
            .spawn(move || {
                for l in &todo {
                    // An error here is met again, and reported, by whoever asks.
                    let _ = me.get(&store, l);
                }
            });
        // Without a thread, whoever asks reads the listing then.
        if let Ok(r) = reader {
            self.readers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(r);
        }
    }

    /// Waits for the threads reading ahead, so that none is cut off halfway through writing
    /// a listing's file when the build ends.
    pub(super) fn join_readers(&self) {
        let readers = std::mem::take(&mut *self.readers.lock().unwrap_or_else(|p| p.into_inner()));
        for r in readers {
            let _ = r.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_layers::layer_tar::{Meta, Writer};

    /// A store with one gzip layer holding `etc/` and `etc/hostname`.
    fn store_with_layer() -> (tempfile::TempDir, Store, Descriptor) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        let gzip = cairn_layers::compress::Compression::Gzip;
        let layer = cairn_layers::layer::write_layer(&store, gzip, |w| {
            let mut t = Writer::new(w);
            t.dir(b"etc", Meta::default(), &[])?;
            t.file(b"etc/hostname", Meta::default(), &[], 2, &b"h\n"[..])?;
            t.finish().map(drop)
        })
        .unwrap();
        store.wait_blobs().unwrap();
        (dir, store, layer.descriptor)
    }

    #[test]
    fn a_listing_is_read_from_the_blob_once_then_kept() {
        let (dir, store, layer) = store_with_layer();
        let listings = Listings::new(dir.path().join("listings"));
        let first = listings.get(&store, &layer).unwrap();
        assert_eq!(first.0.len(), 2);
        assert!(listings.file(&layer.digest).is_file());
        // Kept in memory: the same listing, even with the blob gone.
        std::fs::remove_file(store.blob_path(&layer.digest)).unwrap();
        assert!(Arc::ptr_eq(&first, &listings.get(&store, &layer).unwrap()));
        // And on disk for the next build.
        let next = Listings::new(dir.path().join("listings"));
        assert_eq!(*next.get(&store, &layer).unwrap(), *first);
    }

    #[test]
    fn read_ahead_leaves_the_listing_for_whoever_asks() {
        let (dir, store, layer) = store_with_layer();
        let listings = Listings::new(dir.path().join("listings"));
        listings.read_ahead(&store, std::slice::from_ref(&layer));
        let got = listings.get(&store, &layer).unwrap();
        listings.join_readers();
        assert_eq!(got.0.len(), 2);
        assert!(listings.file(&layer.digest).is_file());
        // Nothing left to read: no second reader.
        listings.read_ahead(&store, std::slice::from_ref(&layer));
        assert!(listings.readers.lock().unwrap().is_empty());
    }

    #[test]
    fn a_listing_that_cannot_be_read_is_an_error_for_every_asker() {
        let (dir, store, layer) = store_with_layer();
        std::fs::remove_file(store.blob_path(&layer.digest)).unwrap();
        let listings = Listings::new(dir.path().join("listings"));
        listings.read_ahead(&store, std::slice::from_ref(&layer));
        listings.join_readers();
        for _ in 0..2 {
            assert!(listings.get(&store, &layer).is_err());
        }
        // A listing put later (the layer written again) is taken.
        let fresh = Listings::new(dir.path().join("listings"));
        fresh.put(&layer.digest, Listing(Vec::new()));
        assert!(fresh.get(&store, &layer).unwrap().0.is_empty());
    }
}
