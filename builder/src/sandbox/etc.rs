//! The step's /etc/hosts and /etc/resolv.conf, made by cairn and bind-mounted over the
//! container's.

use std::path::{Path, PathBuf};

use super::{Network, net};
use crate::error::{Result, io_err};

/// BuildKit's hosts file for a step (its `initHostsFile`): loopback names only, so no entry
/// of the host's own file reaches the step or its layer.
pub fn hosts_file(hostname: &str) -> String {
    format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n")
}

/// The container's /etc/hosts (BuildKit's minimal file) and a copy of the host's
/// /etc/resolv.conf under `dir`, to be bind-mounted over the container's: a process can neither
/// change the host's files nor leave them in its layer. With a network of its own, the
/// nameserver is the DNS forwarder of its user-mode networking.
/// `extra_hosts` (`--add-host`, as (host, ip)) follow the loopback lines, as BuildKit appends
/// them.
pub fn etc_files(
    dir: &Path,
    hostname: &str,
    network: Network,
    extra_hosts: &[(String, String)],
) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for name in ["hosts", "resolv.conf"] {
        let text = if name == "hosts" {
            let mut text = hosts_file(hostname);
            for (host, ip) in extra_hosts {
                text.push_str(&format!("{ip}\t{host}\n"));
            }
            text
        } else {
            let text = std::fs::read_to_string(Path::new("/etc").join(name)).unwrap_or_default();
            if network == Network::Private {
                net::resolv_conf(&text)
            } else {
                text
            }
        };
        let copy = dir.join(name);
        std::fs::write(&copy, text).map_err(io_err("write", &copy))?;
        out.push((format!("/etc/{name}"), copy));
    }
    Ok(out)
}
