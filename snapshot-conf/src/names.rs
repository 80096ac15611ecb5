//! Snapshot name rules. A snapshot with metadata is stored as `NAME.xml`,
//! so its name must be usable as a file name (libvirt's qemu driver rules,
//! checked unless the snapshot keeps no metadata).

use crate::error::{ConfError, Result};

/// Checks `name` can name a snapshot with metadata: not empty, no `/`, no
/// leading `.`.
///
/// # Errors
/// [`ConfError::InvalidName`] naming the broken rule.
pub fn check_snapshot_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        "name can't be empty"
    } else if name.contains('/') {
        "name can't contain '/'"
    } else if name.starts_with('.') {
        "name can't start with '.'"
    } else if name.contains('\0') {
        "name can't contain a NUL character"
    } else {
        return Ok(());
    };
    Err(ConfError::InvalidName {
        name: name.to_string(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_name_with_slash_refused() {
        let err = check_snapshot_name("a/b").expect_err("slash");
        assert_eq!(
            err.to_string(),
            "invalid snapshot name 'a/b': name can't contain '/'; choose another name"
        );
    }

    #[test]
    fn test_name_with_leading_dot_refused() {
        assert_eq!(
            check_snapshot_name(".hidden"),
            Err(ConfError::InvalidName {
                name: ".hidden".into(),
                reason: "name can't start with '.'"
            })
        );
    }

    #[test]
    fn test_name_empty_refused_and_ordinary_names_accepted() {
        assert!(check_snapshot_name("").is_err());
        assert_eq!(check_snapshot_name("my snap name"), Ok(()));
        assert_eq!(check_snapshot_name("1386166249"), Ok(()));
    }
}
