//! `ceph.conf`: the text written for a new cluster (the prototype's
//! settings: cephx, bluestore on a sparse file, loopback only, fast paxos),
//! and reading the monitor address and admin keyring back from a
//! configuration file, for clusters that are joined.

use std::path::{Path, PathBuf};

/// Size of the bluestore block file (sparse: it uses what is written).
pub(crate) const OSD_BLOCK_BYTES: u64 = 4096 << 20;

/// The `ceph.conf` of a cluster in `dir` (absolute) with monitor port
/// `port`, as the prototype's setup.sh writes it for cephx and bluestore.
pub(crate) fn render(dir: &Path, fsid: &str, port: u16) -> String {
    let d = dir.display();
    format!(
        "\
[global]
fsid = {fsid}
mon_host = [v2:127.0.0.1:{port}]
public_addr = 127.0.0.1
cluster_addr = 127.0.0.1
public_network = 127.0.0.0/8
ms_bind_msgr1 = false
ms_bind_msgr2 = true
ms_bind_ipv6 = false
auth_cluster_required = cephx
auth_service_required = cephx
auth_client_required = cephx
run_dir = {d}/run
admin_socket = {d}/run/$name.asok
log_file = {d}/log/$name.log
pid_file = {d}/pids/$name.daemonpid
crash_dir = {d}/crash
log_to_stderr = false
err_to_stderr = true
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
osd_crush_chooseleaf_type = 0
mon_allow_pool_size_one = true
mon_allow_pool_delete = true
mon_warn_on_pool_no_redundancy = false
auth_allow_insecure_global_id_reclaim = false
mon_data_avail_warn = 2
mon_data_avail_crit = 1
rbd_default_features = layering,exclusive-lock,object-map,fast-diff,deep-flatten

[client]
keyring = {d}/client.admin.keyring
# one admin socket per client process: two clients at once would clash
admin_socket = {d}/run/$name.$pid.asok

[mon]
mon_data = {d}/mon/$cluster-$id
keyring = {d}/mon/$cluster-$id/keyring
# the mon batches map updates every paxos_propose_interval (1 s by default); self-managed
# snapshot ids (rbd snap create / rm) need an osdmap update, so this dominates their latency
paxos_propose_interval = 0.05
paxos_min_wait = 0.01

[osd]
osd_data = {d}/osd/$cluster-$id
keyring = {d}/osd/$cluster-$id/keyring
osd_objectstore = bluestore
osd_crush_update_on_start = true
osd_memory_target = 536870912
osd_memory_base = 268435456
osd_memory_cache_min = 67108864
bluestore_cache_autotune = false
bluestore_cache_size = 67108864
# outside osd_data: bluestore makes osd_data/block a symbolic link to it
bluestore_block_path = {d}/osd/ceph-0.block
bluestore_block_create = true
bluestore_block_size = {OSD_BLOCK_BYTES}
bluestore_fsck_on_mkfs = false
bluestore_fsck_on_mount = false
osd_op_num_shards = 1
osd_op_num_threads_per_shard = 2
"
    )
}

/// The value of `key` in `section` of an ini-style `ceph.conf` (keys match
/// with spaces, dashes and underscores alike, as Ceph reads them).
pub(crate) fn value(text: &str, section: &str, key: &str) -> Option<String> {
    let norm = |s: &str| s.trim().replace([' ', '-'], "_").to_ascii_lowercase();
    let key = norm(key);
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.trim().to_owned();
            continue;
        }
        if current != section {
            continue;
        }
        if let Some((k, v)) = line.split_once('=')
            && norm(k) == key
        {
            return Some(v.trim().to_owned());
        }
    }
    None
}

/// The first monitor's `HOST:PORT` from a `mon_host` value
/// (`[v2:127.0.0.1:3300,v1:127.0.0.1:6789]`, `127.0.0.1:6789`, ...).
pub(crate) fn first_mon(mon_host: &str) -> Option<String> {
    let first = mon_host
        .split([',', ' ', ';'])
        .map(|part| part.trim_matches(|c| c == '[' || c == ']'))
        .find(|part| !part.is_empty())?;
    let addr = first
        .strip_prefix("v2:")
        .or_else(|| first.strip_prefix("v1:"))
        .unwrap_or(first);
    // Drop a trailing /nonce.
    Some(addr.split('/').next().unwrap_or(addr).to_owned())
}

/// The admin keyring a client of `conf` (text `text`) uses: `keyring` of
/// `[client]`, else of `[global]`, else `client.admin.keyring` beside the
/// file, else Ceph's default.
pub(crate) fn client_keyring(conf: &Path, text: &str) -> PathBuf {
    if let Some(path) = value(text, "client", "keyring")
        .or_else(|| value(text, "client.admin", "keyring"))
        .or_else(|| value(text, "global", "keyring"))
    {
        return PathBuf::from(path);
    }
    let beside = conf.with_file_name("client.admin.keyring");
    if beside.exists() {
        beside
    } else {
        PathBuf::from("/etc/ceph/ceph.client.admin.keyring")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rendered_file_reads_back() {
        let text = render(Path::new("/tmp/c"), "f-s-i-d", 4321);
        let mon_host = value(&text, "global", "mon host").expect("mon_host");
        assert_eq!(first_mon(&mon_host).as_deref(), Some("127.0.0.1:4321"));
        assert_eq!(
            client_keyring(Path::new("/tmp/c/ceph.conf"), &text),
            Path::new("/tmp/c/client.admin.keyring")
        );
        assert_eq!(
            value(&text, "osd", "bluestore_block_path").as_deref(),
            Some("/tmp/c/osd/ceph-0.block")
        );
        assert_eq!(
            value(&text, "mon", "paxos_propose_interval").as_deref(),
            Some("0.05")
        );
        assert_eq!(
            value(&text, "client", "admin_socket").as_deref(),
            Some("/tmp/c/run/$name.$pid.asok")
        );
        assert_eq!(value(&text, "global", "nosuch"), None);
    }

    #[test]
    fn monitor_addresses_in_their_usual_spellings() {
        for (mon_host, first) in [
            ("[v2:127.0.0.1:3300]", "127.0.0.1:3300"),
            ("[v2:10.0.0.1:3300,v1:10.0.0.1:6789]", "10.0.0.1:3300"),
            ("10.0.0.2:6789, 10.0.0.3:6789", "10.0.0.2:6789"),
            ("v1:10.0.0.4:6789/0", "10.0.0.4:6789"),
        ] {
            assert_eq!(first_mon(mon_host).as_deref(), Some(first), "{mon_host}");
        }
        assert_eq!(first_mon(" "), None);
    }

    #[test]
    fn keyring_falls_back_to_global_then_the_default() {
        let conf = Path::new("/nonexistent/ceph.conf");
        assert_eq!(
            client_keyring(conf, "[global]\nkeyring = /k/global\n"),
            Path::new("/k/global")
        );
        assert_eq!(
            client_keyring(conf, "[global]\nfsid = x\n"),
            Path::new("/etc/ceph/ceph.client.admin.keyring")
        );
    }
}
