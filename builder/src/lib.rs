//! cairn-builder executes the stage graph: the build context and .dockerignore ([`context`],
//! [`ignore`]), COPY/ADD ([`copy`]), metadata instructions ([`meta`]), history lines ([`history`]), stages in order
//! ([`build`]), RUN in its sandbox ([`sandbox`]), the build cache ([`cache`]) and outputs
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
pub mod history;
pub mod ignore;
pub mod meta;
pub mod output;
mod progress;
pub mod remote;
mod run;
pub mod sandbox;
pub mod users;

pub use copy::from_meta;
pub use error::{Error, Result};
pub use run::SECRET_LIMIT;
