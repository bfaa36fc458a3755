//! cairn-builder executes the stage graph: [`build`] runs the stages (planned by `plan`, each
//! instruction a `step` on its `stage`), over the build context and .dockerignore ([`context`],
//! [`ignore`]), COPY/ADD ([`copy`]), metadata instructions ([`meta`]), history lines
//! ([`history`]), RUN in its sandbox ([`sandbox`]), the build cache ([`cache`]) and outputs
//! ([`output`]).

pub mod build;
pub mod cache;
pub mod container;
pub mod context;
mod context_mount;
pub mod copy;
pub mod envindex;
pub mod error;
mod fsutil;
pub mod git;
pub mod history;
pub mod ignore;
pub mod lint;
pub mod meta;
mod options;
pub mod output;
mod plan;
mod progress;
pub mod provenance;
pub mod remote;
pub mod sandbox;
pub mod sbom;
mod squash;
mod ssh_agent;
mod stage;
mod step;
pub mod trail;
pub mod users;

pub use copy::from_meta;
pub use error::{Error, Result};
pub use step::mount::SECRET_LIMIT;
