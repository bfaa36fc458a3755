//! A stage's state while it is built (config, layers, a lazily applied filesystem, a view of its
//! directories, the chain of its steps' cache keys), its result once it is, and the built image.
//!
//! Each stage keeps a flattened copy of its filesystem in a private work directory (the copy
//! snapshotter's view), used to decide COPY destinations, to look up `--chown` names and as
//! the source of `COPY --from`. The work directory goes away when the build ends, whatever way.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cairn_layers::apply::{ApplyOptions, Whiteouts, apply_layer};
use cairn_layers::image::{Descriptor, ImageConfig};
use cairn_layers::listing::{self, DirMeta, Held};
use cairn_layers::rootfs::Found;
use cairn_layers::{IdMap, Store};
use rustix::fs::FileType;

use crate::cache::Cache;
use crate::error::{Error, Result};
use crate::meta::MetaState;
use crate::progress::Event;
use crate::users::{self, LookupError};

/// The built image.
#[derive(Debug)]
pub struct Built {
    pub manifest: Descriptor,
    pub config: ImageConfig,
    /// The platform the image is for.
    pub platform: cairn_layers::platform::Platform,
    /// The target stage's filesystem, until the build value is dropped; see [`Built::rootfs`].
    pub(crate) rootfs: PathBuf,
    /// Layers not yet applied to `rootfs`.
    pub(crate) pending: std::sync::Mutex<Vec<Descriptor>>,
    pub(crate) _work: std::sync::Arc<WorkDir>,
    /// What the build used and did, for its provenance.
    pub trail: crate::trail::BuildTrail,
}

impl Built {
    /// The target stage's complete filesystem (applying its last layers now if needed).
    pub fn rootfs(&self, store: &Store) -> Result<&Path> {
        let mut pending = self.pending.lock().map_err(|_| Error::Instruction {
            instruction: "build".into(),
            message: "the build's state was poisoned by a panic".into(),
        })?;
        if !pending.is_empty() {
            unpack_layers(store, &pending, &self.rootfs)?;
            pending.clear();
        }
        Ok(&self.rootfs)
    }
}

/// A directory removed when dropped.
#[derive(Debug)]
pub(crate) struct WorkDir(pub(crate) PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = make_writable_and_remove(&self.0);
    }
}

pub(crate) fn make_writable_and_remove(path: &Path) -> std::io::Result<()> {
    if std::fs::remove_dir_all(path).is_ok() || !path.exists() {
        return Ok(());
    }
    use std::os::unix::fs::PermissionsExt;
    for e in walkdir::WalkDir::new(path).into_iter().flatten() {
        if e.file_type().is_dir() {
            let _ = std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o700));
        }
    }
    std::fs::remove_dir_all(path)
}

/// One stage's state while it is built.
pub(crate) struct StageState {
    pub(crate) config: ImageConfig,
    layers: Vec<Descriptor>,
    rootfs: PathBuf,
    /// Layers this stage made that are not yet applied to `rootfs`: applying is deferred until
    /// a step reads file contents, so no COPY is written to disk twice for nothing.
    pending: Vec<Descriptor>,
    /// The stage's directories and symlinks, which is all COPY's destination rules need:
    /// nothing is unpacked for them.
    view: StageView,
    pub(crate) args: BTreeMap<String, String>,
    pub(crate) meta: MetaState,
    /// The cache key of the last step, and whether every step so far came from the cache.
    key: crate::cache::Key,
    all_hits: bool,
    /// `--no-cache` or `--no-cache-filter` names this stage.
    no_cache: bool,
    /// Where the current step is (Dockerfile, stage, step), to explain a miss by what changed
    /// since the step last ran.
    position: String,
    /// The stage's index in the Dockerfile.
    index: usize,
    /// The platform the stage builds for: its RUN steps execute as binaries of it.
    pub(crate) platform: cairn_layers::platform::Platform,
    /// The key of the step this stage runs now, which others wait on.
    claim: Option<crate::cache::Claim>,
    /// How many layers and history entries the base gave: `--squash` folds what follows.
    base: (usize, usize),
}

impl StageState {
    /// A stage on its base's config and layers, to be built in `rootfs`; it starts from
    /// `inherited` build args (FROM a stage) and the chain at `key`.
    ///
    /// The base stays in the store: COPY's destination rules need only its directories and
    /// symlinks, read from its tar headers; files are unpacked when a step reads them.
    pub(crate) fn new(
        config: ImageConfig,
        layers: Vec<Descriptor>,
        rootfs: PathBuf,
        inherited: (BTreeMap<String, String>, MetaState),
        key: crate::cache::Key,
        no_cache: bool,
        index: usize,
    ) -> StageState {
        let mut view = StageView::default();
        for l in &layers {
            view.add_layer(l);
        }
        let base = (layers.len(), config.history.len());
        StageState {
            config,
            pending: layers.clone(),
            layers,
            rootfs,
            view,
            args: inherited.0,
            meta: inherited.1,
            key,
            all_hits: true,
            no_cache,
            position: String::new(),
            index,
            // FROM sets it once the stage has one.
            platform: cairn_layers::platform::Platform::host(),
            claim: None,
            base,
        }
    }

    /// A layer joins the stage: its image's layers and diff IDs, the filesystem (when next
    /// settled) and the view, which takes `dirs` as the directories it adds or, without them,
    /// reads the layer's tar headers (a RUN's directories are known only from those).
    pub(crate) fn push_layer(
        &mut self,
        descriptor: Descriptor,
        diff_id: cairn_layers::Digest,
        dirs: Option<Vec<(String, DirMeta)>>,
    ) {
        self.pending.push(descriptor.clone());
        match dirs {
            Some(dirs) => self.view.add_dirs(dirs),
            None => self.view.add_layer(&descriptor),
        }
        self.config.rootfs.diff_ids.push(diff_id);
        self.layers.push(descriptor);
    }

    /// The cache key of the last step: the next step's key is chained on it.
    pub(crate) fn key(&self) -> &crate::cache::Key {
        &self.key
    }

    /// Where the current step is (see the field), for the cache's per-step notes.
    pub(crate) fn position(&self) -> &str {
        &self.position
    }

    /// A step at `position` starts.
    pub(crate) fn start_step(&mut self, position: String) {
        self.position = position;
    }

    /// A step ran: the stage's result is no longer all from the cache.
    pub(crate) fn ran(&mut self) {
        self.all_hits = false;
    }

    /// A hit for `key` (unless the stage runs uncached): the recorded layer and history entry
    /// join the stage, and the chain moves on to `key`.
    pub(crate) fn use_cached(
        &mut self,
        cache: &Cache,
        store: &Store,
        progress: &(dyn Fn(Event) + Sync),
        key: &crate::cache::Key,
        summary: crate::cache::SummaryParts,
        step_id: usize,
    ) -> Result<bool> {
        // One claim at a time, none held while waiting: no two stages wait on each other.
        self.claim = None;
        let found = loop {
            if self.no_cache {
                break None;
            }
            if let Some(rec) = cache.get(store, key) {
                break Some(rec);
            }
            // Another stage (of this platform or another) runs this very step: its record
            // is this one's.
            match cache.claim(key) {
                crate::cache::Claimed::Mine(c) => {
                    self.claim = Some(c);
                    break None;
                }
                crate::cache::Claimed::Waited => {}
            }
        };
        let Some(rec) = found else {
            let summary = summary.build();
            // Say why, when this step ran before with other inputs.
            if !self.no_cache
                && let Some(before) = cache.last_summary(&self.position)
            {
                progress(Event::Miss {
                    id: step_id,
                    reason: summary.explain(&before, &self.args),
                });
            }
            cache.put_summary(&self.position, &summary)?;
            return Ok(false);
        };
        cache.touch(key, &rec, self.index);
        cache.mark_used(key);
        if let Some(l) = rec.layer {
            self.push_layer(l.descriptor, l.diff_id, (!rec.listed).then_some(rec.dirs));
        }
        self.config.history.push(rec.history);
        self.key = *key;
        Ok(true)
    }

    /// What the step that just ran made, recorded under `key`: its layer (if any) and the last
    /// history entry.
    pub(crate) fn record(
        &mut self,
        cache: &Cache,
        key: crate::cache::Key,
        layer: Option<crate::cache::LayerRecord>,
        dirs: Option<Vec<(String, DirMeta)>>,
    ) -> Result<()> {
        let history = self.config.history.last().cloned().unwrap_or_default();
        let rec = crate::cache::Record {
            layer,
            history,
            listed: dirs.is_none(),
            dirs: dirs.unwrap_or_default(),
        };
        cache.put(&key, &rec)?;
        cache.confirm_summary(&self.position)?;
        cache.touch(&key, &rec, self.index);
        self.key = key;
        self.claim = None;
        Ok(())
    }

    /// The stage's layers so far, base first.
    pub(crate) fn layers(&self) -> &[Descriptor] {
        &self.layers
    }

    /// Where the stage's filesystem is applied (up to date only once settled).
    pub(crate) fn rootfs(&self) -> &Path {
        &self.rootfs
    }

    /// The stage's directories and symlinks, with every layer so far in them.
    pub(crate) fn tree(
        &mut self,
        cache: &Cache,
        store: &Store,
    ) -> Result<&cairn_layers::listing::TreeView> {
        self.view.tree(cache, store)
    }

    /// The finished stage, its filesystem complete or, with `partial`, complete at those
    /// paths only.
    pub(crate) fn finish(self, partial: Option<Vec<String>>) -> StageResult {
        StageResult {
            config: self.config,
            layers: self.layers,
            rootfs: self.rootfs,
            pending: self.pending,
            partial,
            key: self.key,
            all_hits: self.all_hits,
            args: self.args,
            meta: self.meta,
            platform: self.platform,
            base: self.base,
        }
    }

    /// One of the stage's files as a process chrooted in its filesystem would read it
    /// (`etc/passwd`, for a name), without unpacking the stage when the layers' listings keep
    /// its bytes (`cairn_layers::listing::KEPT_FILES`): a `--chown=name` on a Debian base
    /// otherwise unpacks the whole base to read one small file. Anything the listings cannot
    /// answer is read from the unpacked filesystem, settled first.
    pub(crate) fn image_file(
        &mut self,
        cache: &Cache,
        store: &Store,
        rel: &str,
    ) -> std::result::Result<Found, LookupError> {
        let image = |e: Error| LookupError::Image(Box::new(e));
        if !self.pending.is_empty() {
            let path = self.view.tree(cache, store).map_err(image)?.resolve(rel);
            if let Some(path) = path {
                let mut listings = Vec::with_capacity(self.pending.len());
                for l in self.pending.iter().rev() {
                    listings.push(cache.layer_listing(store, l).map_err(image)?);
                }
                match listing::held(listings.iter().map(|l| &**l), &path) {
                    Held::Kept(bytes) => return Ok(Found::File(bytes)),
                    Held::Missing => return Ok(Found::Missing),
                    Held::Dir => return Ok(Found::NotAFile(FileType::Directory)),
                    // What was unpacked before these layers decides.
                    Held::NotListed => return users::read_from_root(&self.rootfs, &path),
                    Held::Unknown => {}
                }
            }
            self.settle(store).map_err(image)?;
        }
        users::read_from_root(&self.rootfs, rel)
    }

    /// Brings `rootfs` up to date with every layer of the stage.
    pub(crate) fn settle(&mut self, store: &Store) -> Result<()> {
        if !self.pending.is_empty() {
            unpack_layers(store, &self.pending, &self.rootfs)?;
            self.pending.clear();
        }
        Ok(())
    }

    /// Brings `rootfs` up to date at `prefixes` only (see `apply_layer_under`); true when
    /// that is what happened, false when it had to apply everything after all.
    pub(crate) fn settle_under(
        &mut self,
        cache: &Cache,
        store: &Store,
        prefixes: &[String],
    ) -> Result<bool> {
        let opts = view_apply_options();
        let mut partial = true;
        for l in &self.pending {
            // A layer with nothing there (a base, an apt install, for a COPY --from=build
            // /src/app) is not read at all.
            if !cache.layer_listing(store, l)?.touches(prefixes) {
                continue;
            }
            let plain = store.open_layer(l)?;
            if cairn_layers::apply::apply_layer_under(plain, &self.rootfs, &opts, prefixes)?
                .is_none()
            {
                partial = false;
                break;
            }
        }
        if !partial {
            unpack_layers(store, &self.pending, &self.rootfs)?;
        }
        self.pending.clear();
        Ok(partial)
    }
}

/// The built form of a finished stage, for FROM and COPY --from.
#[derive(Clone)]
pub(crate) struct StageResult {
    pub(crate) config: ImageConfig,
    pub(crate) layers: Vec<Descriptor>,
    pub(crate) rootfs: PathBuf,
    pub(crate) pending: Vec<Descriptor>,
    /// `rootfs` is complete only at these paths (the ones the build's COPY --from name).
    pub(crate) partial: Option<Vec<String>>,
    pub(crate) key: crate::cache::Key,
    pub(crate) all_hits: bool,
    /// The stage's build args and their state, which `FROM <stage>` starts from.
    pub(crate) args: BTreeMap<String, String>,
    pub(crate) meta: MetaState,
    pub(crate) platform: cairn_layers::platform::Platform,
    /// How many of `layers` and of the config's history entries came from the base.
    pub(crate) base: (usize, usize),
}

pub(crate) fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The directories and symlinks of a stage's image, put together from its layers' tar
/// headers and the directories its COPY layers add, when a step first asks.
#[derive(Debug, Default)]
pub(crate) struct StageView {
    tree: cairn_layers::listing::TreeView,
    todo: Vec<ViewPart>,
}

#[derive(Debug)]
pub(crate) enum ViewPart {
    Dirs(Vec<(String, DirMeta)>),
    Layer(Descriptor),
}

impl StageView {
    /// A layer whose entries the view takes from its tar headers.
    pub(crate) fn add_layer(&mut self, layer: &Descriptor) {
        self.todo.push(ViewPart::Layer(layer.clone()));
    }

    /// The directories a layer adds, known without reading it.
    pub(crate) fn add_dirs(&mut self, dirs: impl IntoIterator<Item = (String, DirMeta)>) {
        self.todo.push(ViewPart::Dirs(dirs.into_iter().collect()));
    }

    /// The view with every layer so far in it.
    pub(crate) fn tree(
        &mut self,
        cache: &Cache,
        store: &Store,
    ) -> Result<&cairn_layers::listing::TreeView> {
        for part in std::mem::take(&mut self.todo) {
            match part {
                ViewPart::Dirs(dirs) => dirs.iter().for_each(|(d, m)| self.tree.add_dir(d, *m)),
                ViewPart::Layer(l) => self.tree.apply(&*cache.layer_listing(store, &l)?),
            }
        }
        Ok(&self.tree)
    }
}

/// Applies an image's layers, in order, onto `dir`.
pub(crate) fn unpack_layers(store: &Store, layers: &[Descriptor], dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        action: "create",
        path: dir.to_path_buf(),
        source,
    })?;
    let opts = view_apply_options();
    for l in layers {
        let plain = store.open_layer(l)?;
        apply_layer(plain, dir, &opts)?;
    }
    Ok(())
}

pub(crate) fn view_apply_options() -> ApplyOptions {
    ApplyOptions {
        whiteouts: Whiteouts::Apply,
        id_map: IdMap::identity(),
        // Owners matter in the layers, which carry them in their headers; this view is only
        // read, so a rootless build keeps its own uid here.
        chown: is_root(),
        skip_devices: false,
    }
}
