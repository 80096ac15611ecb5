//! The parts of a libvirt `<domain>` that starting it needs, beyond its
//! disks: memory and its backing, vCPUs, the machine type, how it boots
//! (kernel, initrd and command line, or firmware), the emulator, a
//! guest-agent channel, and libvirt's `<qemu:commandline>` pass-through.
//! What is not modelled here is not started: the launcher refuses
//! nothing it does not know, it simply does not add it.

use roxmltree::Node;

use crate::domain::Domain;
use crate::error::{ConfError, Result};
use crate::xml::reader::{self, Cx, element_children, text_of};

/// libvirt's namespace for `<qemu:commandline>`.
pub const QEMU_NAMESPACE: &str = "http://libvirt.org/schemas/domain/qemu/1.0";

/// The guest agent's virtio-serial port name.
pub const AGENT_PORT: &str = "org.qemu.guest_agent.0";

/// Where guest RAM comes from (`<memoryBacking><source type=...>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MemorySource {
    /// Anonymous memory (the default).
    #[default]
    Anonymous,
    /// A file in the domain's run directory.
    File,
    /// A memfd.
    Memfd,
}

/// How the domain boots.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Boot {
    /// `<os><kernel>`: a kernel loaded directly (`-kernel`).
    pub kernel: Option<String>,
    /// `<os><initrd>`.
    pub initrd: Option<String>,
    /// `<os><cmdline>`.
    pub cmdline: Option<String>,
    /// `<os><loader>`: firmware (`-bios`).
    pub loader: Option<String>,
}

/// What starting a domain needs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct MachineDef {
    /// Guest RAM in bytes (`<memory>`, or `<currentMemory>` when absent).
    pub memory: u64,
    /// `<vcpu>`.
    pub vcpus: u32,
    /// `<os><type arch=...>`.
    pub arch: Option<String>,
    /// `<os><type machine=...>`.
    pub machine: Option<String>,
    /// How it boots.
    pub boot: Boot,
    /// `<devices><emulator>`.
    pub emulator: Option<String>,
    /// `<memoryBacking><source type=...>`.
    pub memory_source: MemorySource,
    /// `<memoryBacking><access mode='shared'/>`.
    pub memory_shared: bool,
    /// A guest-agent channel (`<channel type='unix'>` with target
    /// `org.qemu.guest_agent.0`), with its socket path when given.
    pub agent: Option<Option<String>>,
    /// `<qemu:commandline><qemu:arg value=.../>`, in order.
    pub qemu_args: Vec<String>,
    /// `<qemu:commandline><qemu:env name=... value=.../>`.
    pub qemu_env: Vec<(String, String)>,
}

/// Bytes of `value` in `unit` (libvirt's units; KiB when none).
fn scaled(value: u64, unit: Option<&str>) -> Option<u64> {
    let factor: u64 = match unit.unwrap_or("KiB") {
        "b" | "bytes" => 1,
        "KB" => 1000,
        "k" | "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "M" | "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "G" | "GiB" => 1 << 30,
        "TB" => 1_000_000_000_000,
        "T" | "TiB" => 1 << 40,
        _ => return None,
    };
    value.checked_mul(factor)
}

fn memory_of(cx: &Cx<'_, '_>, node: Node<'_, '_>) -> Result<u64> {
    let text = text_of(node);
    let unit = node.attribute("unit");
    text.trim()
        .parse::<u64>()
        .ok()
        .and_then(|v| scaled(v, unit))
        .filter(|&b| b > 0)
        .ok_or_else(|| {
            cx.bad_text(
                node,
                &format!("{} {}", text.trim(), unit.unwrap_or("KiB")),
                "a positive size such as <memory unit='MiB'>512</memory> (units b, KiB, MiB, GiB, TiB, KB, MB, GB, TB)",
            )
        })
}

impl MachineDef {
    /// Reads the runnable subset of `domain`.
    ///
    /// # Errors
    /// No `<memory>`, or a malformed size or vCPU count.
    pub fn of(domain: &Domain) -> Result<Self> {
        Self::parse(&domain.xml.to_xml(true))
    }

    /// Reads the runnable subset of a `<domain>` document.
    ///
    /// # Errors
    /// No `<memory>`, or a malformed size or vCPU count.
    pub fn parse(xml: &str) -> Result<Self> {
        let doc = reader::load(xml)?;
        let cx = Cx {
            doc: &doc,
            validate: false,
        };
        let root = cx.expect_root("domain")?;
        let memory_node = match cx.child(root, "memory")? {
            Some(m) => m,
            None => cx
                .child(root, "currentMemory")?
                .ok_or(ConfError::MissingElement {
                    element: "memory",
                    parent: "domain",
                    hint: "give the guest's RAM, e.g. <memory unit='MiB'>512</memory>",
                    pos: cx.pos(root),
                })?,
        };
        let memory = memory_of(&cx, memory_node)?;
        let vcpus = match cx.child(root, "vcpu")? {
            None => 1,
            Some(v) => {
                let t = text_of(v);
                t.trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| cx.bad_text(v, &t, "a positive number of vCPUs"))?
            }
        };
        let mut def = Self {
            memory,
            vcpus,
            ..Self::default()
        };
        if let Some(os) = cx.child(root, "os")? {
            if let Some(t) = cx.child(os, "type")? {
                def.arch = t.attribute("arch").map(str::to_string);
                def.machine = t.attribute("machine").map(str::to_string);
            }
            def.boot = Boot {
                kernel: cx.child_text(os, "kernel")?,
                initrd: cx.child_text(os, "initrd")?,
                cmdline: cx.child_text(os, "cmdline")?,
                loader: cx.child_text(os, "loader")?,
            };
        }
        if let Some(mb) = cx.child(root, "memoryBacking")? {
            if let Some(s) = cx.child(mb, "source")? {
                def.memory_source = match s.attribute("type") {
                    Some("file") => MemorySource::File,
                    Some("memfd") => MemorySource::Memfd,
                    Some("anonymous") | None => MemorySource::Anonymous,
                    Some(other) => {
                        return Err(cx.bad_attr(s, "type", other, "file, memfd or anonymous"));
                    }
                };
            }
            if let Some(a) = cx.child(mb, "access")? {
                def.memory_shared = a.attribute("mode") == Some("shared");
            }
        }
        if let Some(devices) = cx.child(root, "devices")? {
            def.emulator = cx.child_text(devices, "emulator")?;
            for ch in element_children(devices).filter(|c| c.tag_name().name() == "channel") {
                let is_agent = cx
                    .child(ch, "target")?
                    .is_some_and(|t| t.attribute("name") == Some(AGENT_PORT));
                if is_agent {
                    let path = cx
                        .child(ch, "source")?
                        .and_then(|s| s.attribute("path"))
                        .map(str::to_string);
                    def.agent = Some(path);
                }
            }
        }
        for cl in element_children(root).filter(|c| {
            c.tag_name().name() == "commandline" && c.tag_name().namespace() == Some(QEMU_NAMESPACE)
        }) {
            for item in element_children(cl) {
                match item.tag_name().name() {
                    "arg" => {
                        if let Some(v) = item.attribute("value") {
                            def.qemu_args.push(v.to_string());
                        }
                    }
                    "env" => {
                        if let (Some(n), Some(v)) =
                            (item.attribute("name"), item.attribute("value"))
                        {
                            def.qemu_env.push((n.to_string(), v.to_string()));
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(def)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_a_launch_needs() {
        let xml = r"<domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
          <name>g</name>
          <memory unit='MiB'>64</memory>
          <vcpu>2</vcpu>
          <os><type arch='x86_64' machine='pc'>hvm</type><kernel>/k</kernel><cmdline>a b</cmdline></os>
          <memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>
          <devices>
            <emulator>/usr/bin/qemu-system-x86_64</emulator>
            <channel type='unix'><source mode='bind'/><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
          </devices>
          <qemu:commandline><qemu:arg value='-S'/><qemu:env name='A' value='1'/></qemu:commandline>
        </domain>";
        let m = MachineDef::parse(xml).expect("parses");
        assert_eq!(m.memory, 64 << 20);
        assert_eq!(m.vcpus, 2);
        assert_eq!(m.machine.as_deref(), Some("pc"));
        assert_eq!(m.boot.kernel.as_deref(), Some("/k"));
        assert_eq!(m.boot.cmdline.as_deref(), Some("a b"));
        assert_eq!(m.memory_source, MemorySource::Memfd);
        assert!(m.memory_shared);
        assert_eq!(m.agent, Some(None));
        assert_eq!(m.qemu_args, ["-S"]);
        assert_eq!(m.qemu_env, [("A".to_string(), "1".to_string())]);
    }

    #[test]
    fn memory_is_kib_by_default_and_required() {
        let m = MachineDef::parse("<domain><memory>1024</memory></domain>").expect("parses");
        assert_eq!(m.memory, 1 << 20);
        assert_eq!(m.vcpus, 1);
        let e = MachineDef::parse("<domain><name>x</name></domain>").expect_err("no memory");
        assert!(e.to_string().contains("<memory unit='MiB'>"), "{e}");
        let e = MachineDef::parse("<domain><memory unit='parsec'>1</memory></domain>")
            .expect_err("bad unit");
        assert!(e.to_string().contains("units b, KiB"), "{e}");
    }
}
