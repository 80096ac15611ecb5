//! virtsnap's record inside a domain snapshot's `<cookie>` (libvirt's
//! place for hypervisor-private data, kept as written): which storage
//! driver took each disk and how (an internal snapshot, a full copy and
//! its file, an overlay), so a revert or delete uses the same mechanism
//! whatever the disk has become since (a raw disk now under a qcow2
//! overlay still has its copy).
//!
//! ```text
//! <cookie>
//!   <virtsnap>
//!     <disk name='vdc' driver='file' mode='copy' file='/img/vdc.raw.s1'/>
//!   </virtsnap>
//! </cookie>
//! ```

use crate::error::Result;
use crate::xml::reader;
use crate::xml::subtree::XmlSubtree;
use crate::xml::writer::push_escaped_attr;

/// How one disk was taken.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CookieDisk {
    /// The disk's target.
    pub name: String,
    /// The storage driver's kind (`qemu`, `file`, ...), or `hypervisor`.
    pub driver: String,
    /// `internal`, `copy` or `external`.
    pub mode: String,
    /// The copy or the overlay, when there is a file.
    pub file: Option<String>,
}

/// virtsnap's part of a snapshot's cookie.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct VirtsnapCookie {
    /// One entry per disk taken.
    pub disks: Vec<CookieDisk>,
}

fn attr(out: &mut String, name: &str, value: &str) {
    out.push(' ');
    out.push_str(name);
    out.push_str("='");
    push_escaped_attr(out, value);
    out.push('\'');
}

impl VirtsnapCookie {
    /// The `<cookie>` element holding it.
    ///
    /// # Errors
    /// Never for what this type builds (the text is well-formed).
    pub fn to_subtree(&self) -> Result<XmlSubtree> {
        let mut xml = String::from("<cookie><virtsnap>");
        for d in &self.disks {
            xml.push_str("<disk");
            attr(&mut xml, "name", &d.name);
            attr(&mut xml, "driver", &d.driver);
            attr(&mut xml, "mode", &d.mode);
            if let Some(f) = &d.file {
                attr(&mut xml, "file", f);
            }
            xml.push_str("/>");
        }
        xml.push_str("</virtsnap></cookie>");
        XmlSubtree::parse(&xml)
    }

    /// virtsnap's record in `cookie`, if it holds one (another
    /// hypervisor's cookie gives `None`).
    #[must_use]
    pub fn from_subtree(cookie: &XmlSubtree) -> Option<Self> {
        let text = cookie.to_xml(true);
        let doc = reader::load(&text).ok()?;
        let ours = doc
            .root_element()
            .children()
            .find(|n| n.has_tag_name("virtsnap"))?;
        let disks = ours
            .children()
            .filter(|n| n.has_tag_name("disk"))
            .filter_map(|n| {
                Some(CookieDisk {
                    name: n.attribute("name")?.to_string(),
                    driver: n.attribute("driver")?.to_string(),
                    mode: n.attribute("mode")?.to_string(),
                    file: n.attribute("file").map(str::to_string),
                })
            })
            .collect();
        Some(Self { disks })
    }

    /// The record of disk `name`.
    #[must_use]
    pub fn disk(&self, name: &str) -> Option<&CookieDisk> {
        self.disks.iter().find(|d| d.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_cookie_round_trips_and_ignores_foreign_ones() {
        let cookie = VirtsnapCookie {
            disks: vec![
                CookieDisk {
                    name: "vda".into(),
                    driver: "qemu".into(),
                    mode: "internal".into(),
                    file: None,
                },
                CookieDisk {
                    name: "vdc".into(),
                    driver: "file".into(),
                    mode: "copy".into(),
                    file: Some("/img/it's & <c>.raw.s1".into()),
                },
            ],
        };
        let subtree = cookie.to_subtree().expect("well-formed");
        assert_eq!(subtree.name(), "cookie");
        assert_eq!(VirtsnapCookie::from_subtree(&subtree), Some(cookie.clone()));
        assert_eq!(
            cookie.disk("vdc").and_then(|d| d.file.as_deref()),
            Some("/img/it's & <c>.raw.s1")
        );
        let foreign = XmlSubtree::parse("<cookie><cpu mode='custom'/></cookie>").expect("xml");
        assert_eq!(VirtsnapCookie::from_subtree(&foreign), None);
    }
}
