//! Why a RUN step of another platform cannot run here (see `sandbox::emulation`).

/// Why a step of `platform` cannot run here.
#[derive(Debug, thiserror::Error)]
pub enum EmulationError {
    #[error(
        "{platform}: cairn knows no emulator for this architecture; build on a {platform} \
         machine, or keep RUN steps in a stage pinned with FROM --platform=$BUILDPLATFORM"
    )]
    Unknown { platform: String },
    #[error(
        "RUN for {platform} needs an emulator and binfmt_misc has no {entry} entry{why}: \
         install qemu-user-static and binfmt-support (apt-get install qemu-user-static \
         binfmt-support), then `update-binfmts --enable {entry}` (mount binfmt_misc first \
         if {dir} is empty: mount -t binfmt_misc binfmt_misc {dir})"
    )]
    Missing {
        platform: String,
        entry: String,
        why: &'static str,
        dir: &'static str,
    },
    #[error(
        "RUN for {platform}: binfmt_misc's {entry} entry lacks the F (fix-binary) flag \
         (flags: {flags:?}), so its interpreter {interpreter} would have to be inside the \
         image; register it with F (Debian's qemu-user-static does), as in \
         `update-binfmts --disable {entry}` and registering it again with flags F"
    )]
    NoFixBinary {
        platform: String,
        entry: String,
        flags: String,
        interpreter: String,
    },
}
