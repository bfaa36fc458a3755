//! A build step's seccomp filter: the sync calls succeed without flushing anything.
//!
//! What a RUN step writes lives in its snapshot only until cairn reads it into a layer, whose
//! blob the store makes durable itself; a flush inside the step protects nothing. Yet package
//! managers flush every file they unpack (dpkg fsyncs each one: a fifth of an `apt-get
//! install` of python3, git and curl here). systemd-nspawn's `--suppress-sync` does the same
//! for build systems. Every other call passes untouched, and so does another architecture's
//! (a 32-bit process on a 64-bit kernel).

use super::sys::HelperError;

/// The calls that flush (`msync` is left alone: it also validates and invalidates mappings).
const SYNC_CALLS: [libc::c_long; 5] = [
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_sync,
    libc::SYS_syncfs,
    libc::SYS_sync_file_range,
];

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

// Classic BPF opcodes (linux/bpf_common.h: BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_JEQ|BPF_K,
// BPF_RET|BPF_K) and seccomp's return actions (linux/seccomp.h).
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
const BPF_RET_K: u16 = 0x06;
const RET_ALLOW: u32 = 0x7fff_0000;
/// SECCOMP_RET_ERRNO with errno 0: the call returns 0 without running.
const RET_SUCCEED: u32 = 0x0005_0000;
/// `struct seccomp_data`: `int nr` then `__u32 arch`.
const NR_OFFSET: u32 = 0;
const ARCH_OFFSET: u32 = 4;

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: BPF_JEQ_K,
        jt,
        jf,
        k,
    }
}

/// The filter: another architecture's calls are allowed; a sync call jumps to "succeed".
fn program() -> Vec<libc::sock_filter> {
    let n = SYNC_CALLS.len() as u8;
    let mut p = vec![
        stmt(BPF_LD_W_ABS, ARCH_OFFSET),
        // Not ours: skip the checks to "allow".
        jump(AUDIT_ARCH, 0, n + 1),
        stmt(BPF_LD_W_ABS, NR_OFFSET),
    ];
    for (i, nr) in SYNC_CALLS.iter().enumerate() {
        // From check i, "succeed" lies past the checks left and "allow".
        p.push(jump(*nr as u32, n - i as u8, 0));
    }
    p.push(stmt(BPF_RET_K, RET_ALLOW));
    p.push(stmt(BPF_RET_K, RET_SUCCEED));
    p
}

/// Installs the filter on this thread, inherited across exec by the step's processes. Needs
/// CAP_SYS_ADMIN in the current user namespace (pid 1 has it until it drops its
/// capabilities), since the step keeps the right to gain privileges (setuid binaries work in
/// RUN, as in Docker), so no_new_privs is not set.
pub fn suppress_sync() -> Result<(), HelperError> {
    let filter = program();
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: `prog` points at `filter`, which outlives the call; the kernel copies the
    // program. rustix has no seccomp.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0u32,
            &prog as *const libc::sock_fprog,
        )
    };
    if r != 0 {
        let e = rustix::io::Errno::from_io_error(&std::io::Error::last_os_error())
            .unwrap_or(rustix::io::Errno::INVAL);
        return Err(HelperError::call("seccomp (suppress sync)")(e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the filter as the kernel would on (arch, nr).
    fn verdict(arch: u32, nr: u32) -> u32 {
        let p = program();
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let i = &p[pc];
            match i.code {
                BPF_LD_W_ABS => acc = if i.k == ARCH_OFFSET { arch } else { nr },
                BPF_JEQ_K => {
                    pc += usize::from(if acc == i.k { i.jt } else { i.jf });
                }
                BPF_RET_K => return i.k,
                other => panic!("opcode {other:#x}"),
            }
            pc += 1;
        }
    }

    #[test]
    fn sync_calls_succeed_and_the_rest_pass() {
        for nr in SYNC_CALLS {
            assert_eq!(verdict(AUDIT_ARCH, nr as u32), RET_SUCCEED, "{nr}");
        }
        for nr in [
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_openat,
            libc::SYS_msync,
            libc::SYS_execve,
        ] {
            assert_eq!(verdict(AUDIT_ARCH, nr as u32), RET_ALLOW, "{nr}");
        }
        // Another architecture's numbers mean other calls.
        assert_eq!(verdict(0x4000_0003, libc::SYS_fsync as u32), RET_ALLOW);
    }
}
