//! XML plumbing shared by the parsers and formatters: bounded loading and
//! lookup helpers ([`reader`]), the libvirt-style writer ([`writer`]) and
//! subtrees kept as written ([`subtree`]).

pub(crate) mod reader;
pub mod subtree;
pub(crate) mod writer;
