//! cairn-builder executes the stage graph: [`build`] runs the stages (planned by `plan`, each
//! instruction a `step` on its `stage`), over the build context and .dockerignore ([`context`],
//! [`ignore`]), COPY/ADD ([`copy`]), metadata instructions ([`meta`]), history lines
//! ([`history`]), RUN in its sandbox ([`sandbox`]), the build cache ([`cache`]) and outputs
//! ([`output`]).

mod add_archive;
pub mod build;
pub mod cache;
pub mod container;
pub mod context;
mod context_mount;
pub mod copy;
pub mod envindex;
pub mod error;
pub mod from_meta;
pub mod history;
pub mod ignore;
pub mod memo;
pub mod meta;
mod options;
pub mod output;
mod plan;
mod progress;
pub mod remote;
pub mod sandbox;
mod stage;
mod step;
pub mod users;

pub use error::{Error, Result};
pub use step::mount::SECRET_LIMIT;
