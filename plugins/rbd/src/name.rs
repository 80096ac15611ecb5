//! RBD volume names as QEMU and libvirt write them:
//! `rbd:POOL/IMAGE` or `rbd:POOL/NAMESPACE/IMAGE`, followed by options
//! `:KEY=VALUE`, where `\` escapes the next character (`:`, `;`, `=`,
//! `\`). `conf` (a ceph.conf), `id` (the client id, `admin` when absent),
//! `mon_host`, `keyring` and `key` say how to reach the cluster; any
//! other option is handed to librados (`rados_conf_set`), as QEMU does.
//! `auth_supported` is accepted and ignored (the cluster's configuration
//! decides). A snapshot suffix (`@SNAP`) is refused: a volume is an
//! image, its snapshots are what virtsnap manages.

use std::fmt;
use std::path::PathBuf;

use crate::librbd::ConnectOptions;

/// A parsed `rbd:` volume name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RbdName {
    /// The pool.
    pub pool: String,
    /// The RBD namespace, if any.
    pub namespace: Option<String>,
    /// The image.
    pub image: String,
    /// How to reach the cluster.
    pub cluster: ConnectOptions,
}

impl RbdName {
    /// `POOL/[NAMESPACE/]IMAGE`, for messages and `rbd` commands.
    #[must_use]
    pub fn spec(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{}/{ns}/{}", self.pool, self.image),
            None => format!("{}/{}", self.pool, self.image),
        }
    }
}

impl fmt::Display for RbdName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rbd:{}", self.spec())
    }
}

/// Why a name is not an RBD volume name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Another protocol, or a path.
    #[error("{0:?} is not an rbd: volume name")]
    NotRbd(String),
    /// An `rbd:` name that does not parse.
    #[error(
        "invalid RBD volume name {name:?}: {reason}; write rbd:POOL/IMAGE or \
         rbd:POOL/NAMESPACE/IMAGE, optionally followed by :conf=FILE:id=USER"
    )]
    Invalid {
        /// The name.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

/// Splits `s` at unescaped `:`, removing the escapes.
fn split_unescaped(s: &str) -> Result<Vec<String>, &'static str> {
    let mut parts = vec![String::new()];
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(next) => parts.last_mut().map_or((), |p| p.push(next)),
                None => return Err("it ends in a lone backslash"),
            },
            ':' => parts.push(String::new()),
            other => parts.last_mut().map_or((), |p| p.push(other)),
        }
    }
    Ok(parts)
}

/// Whether `part` is a valid pool, namespace or image name component.
fn valid_component(part: &str) -> bool {
    !part.is_empty() && !part.contains(['/', '@', '\0']) && part.len() <= 255
}

/// Parses `name` (see the module comment).
///
/// # Errors
/// [`NameError::NotRbd`] for anything not starting with `rbd:`, else
/// [`NameError::Invalid`] naming the problem.
pub fn parse(name: &str) -> Result<RbdName, NameError> {
    let Some(rest) = name.strip_prefix("rbd:") else {
        return Err(NameError::NotRbd(name.to_string()));
    };
    let invalid = |reason: &str| NameError::Invalid {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    let parts = split_unescaped(rest).map_err(invalid)?;
    let (image_part, options) = parts.split_first().ok_or_else(|| invalid("it is empty"))?;
    if image_part.contains('@') {
        return Err(invalid(
            "it names a snapshot (@SNAP); give the image, virtsnap manages its snapshots",
        ));
    }
    let components: Vec<&str> = image_part.split('/').collect();
    let (pool, namespace, image) = match components.as_slice() {
        [pool, image] => (*pool, None, *image),
        [pool, ns, image] => (*pool, Some(*ns), *image),
        _ => return Err(invalid("it needs POOL/IMAGE or POOL/NAMESPACE/IMAGE")),
    };
    if ![pool, image].iter().all(|c| valid_component(c)) || !namespace.is_none_or(valid_component) {
        return Err(invalid(
            "a pool, namespace or image name is empty, too long or holds '/', '@' or NUL",
        ));
    }
    let mut cluster = ConnectOptions::default();
    for option in options {
        let Some((key, value)) = option.split_once('=') else {
            return Err(invalid(&format!("option {option:?} is not KEY=VALUE")));
        };
        if value.is_empty() {
            return Err(invalid(&format!("option {key} has no value")));
        }
        match key {
            "conf" => cluster.conf = Some(PathBuf::from(value)),
            "id" => cluster.id = Some(value.to_string()),
            "mon_host" => cluster.mon_host = Some(value.to_string()),
            "keyring" => cluster.keyring = Some(PathBuf::from(value)),
            "key" => cluster.key = Some(value.to_string()),
            "auth_supported" => {}
            "" => return Err(invalid("an option has no name")),
            other => cluster.options.push((other.to_string(), value.to_string())),
        }
    }
    Ok(RbdName {
        pool: pool.to_string(),
        namespace: namespace.map(str::to_string),
        image: image.to_string(),
        cluster,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_image_and_namespace() {
        let n = parse("rbd:pool/img").expect("valid");
        assert_eq!(
            (n.pool.as_str(), n.namespace, n.image.as_str()),
            ("pool", None, "img")
        );
        assert_eq!(n.cluster, ConnectOptions::default());
        let n = parse("rbd:pool/ns/img").expect("valid");
        assert_eq!(n.namespace.as_deref(), Some("ns"));
        assert_eq!(n.spec(), "pool/ns/img");
        assert_eq!(n.to_string(), "rbd:pool/ns/img");
    }

    #[test]
    fn options_with_escapes() {
        let n = parse(
            "rbd:p/i:mon_host=10.0.0.1\\:3300\\;10.0.0.2:id=virt:conf=/etc/ceph/c\\=1.conf:\
             auth_supported=cephx:rbd_cache=false",
        )
        .expect("valid");
        assert_eq!(
            n.cluster.mon_host.as_deref(),
            Some("10.0.0.1:3300;10.0.0.2")
        );
        assert_eq!(n.cluster.id.as_deref(), Some("virt"));
        assert_eq!(n.cluster.conf, Some(PathBuf::from("/etc/ceph/c=1.conf")));
        assert_eq!(
            n.cluster.options,
            vec![("rbd_cache".to_string(), "false".to_string())]
        );
    }

    #[test]
    fn refusals_name_the_problem() {
        assert_eq!(
            parse("/var/lib/a.img"),
            Err(NameError::NotRbd("/var/lib/a.img".into()))
        );
        for (bad, why) in [
            ("rbd:img", "POOL/IMAGE"),
            ("rbd:a/b/c/d", "POOL/IMAGE"),
            ("rbd:p/i@s", "names a snapshot"),
            ("rbd:p//i", "empty"),
            ("rbd:p/i:conf", "KEY=VALUE"),
            ("rbd:p/i:id=", "no value"),
            ("rbd:p/i\\", "lone backslash"),
        ] {
            let e = parse(bad).expect_err(bad).to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
