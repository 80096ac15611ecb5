//! The snapshot tree of one owner (a domain or a volume): which snapshot
//! is whose parent, which one is current, and libvirt's listing filters.
//!
//! An arena of nodes with parent links and child lists, a name index and
//! the current snapshot. Lookups by name are O(1); creating, reverting and
//! deleting touch only the nodes concerned (deleting the middle of a long
//! chain re-links its children, not all its descendants). The tree holds
//! only what listing needs ([`SnapshotInfo`]); the full definitions live in
//! the metadata store.
//!
//! ```text
//!        s1            create: parent = current, becomes current
//!       /  \           revert: target becomes current
//!     s3    s7         delete s3 (Rebase): s2, s6 move under s1
//!    /  \     \        delete s3 (Children): s3, s2, s6... go
//!  s2    s6    s8      delete s3 (ChildrenOnly): s2, s6... go, s3 stays
//! ```

use std::collections::{HashMap, HashSet, VecDeque};

/// What a snapshot captured, for the INACTIVE / ACTIVE / DISK_ONLY filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StateKind {
    /// Taken while shut off (state `shutoff`).
    Inactive,
    /// Taken while active, with memory (any other state).
    Active,
    /// Disk-only snapshot of an active owner (state `disk-snapshot`).
    DiskOnly,
}

/// Where a snapshot lives, for the INTERNAL / EXTERNAL filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Location {
    /// Inside the images (no external memory or disk).
    Internal,
    /// Memory or a disk in a new file.
    External,
}

/// What the tree knows of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SnapshotInfo {
    /// Its name, unique in the tree.
    pub name: String,
    /// What it captured.
    pub state: StateKind,
    /// Internal or external.
    pub location: Location,
    /// Whether virtsnap keeps metadata for it (snapshots discovered in a
    /// qcow2 image have none until imported).
    pub has_metadata: bool,
    /// Creation time, seconds since the epoch.
    pub creation_time: i64,
}

/// What happens to the children of a deleted snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ChildPolicy {
    /// Children move to the deleted snapshot's parent (libvirt's default).
    #[default]
    Rebase,
    /// The snapshot and all its descendants go.
    Children,
    /// Only the descendants go; the snapshot stays.
    ChildrenOnly,
}

/// Why a tree operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TreeError {
    /// No snapshot of that name.
    #[error("no snapshot named '{name}'; list them with `virtsnap snapshot-list`")]
    NotFound {
        /// The name asked for.
        name: String,
    },
    /// The name is taken.
    #[error("snapshot '{name}' already exists; choose another name or delete it first")]
    Exists {
        /// The name.
        name: String,
    },
    /// A redefined snapshot names itself as parent.
    #[error("cannot set snapshot '{name}' as its own parent; give another <parent>")]
    OwnParent {
        /// The name.
        name: String,
    },
    /// A redefined snapshot's parent is not defined yet.
    #[error(
        "parent {parent} for snapshot {name} not found; redefine parents before their children"
    )]
    ParentNotFound {
        /// The missing parent.
        parent: String,
        /// The snapshot being redefined.
        name: String,
    },
    /// Redefining would make a loop.
    #[error("parent {parent} would create cycle to {name}; a snapshot cannot descend from itself")]
    Cycle {
        /// The requested parent.
        parent: String,
        /// The snapshot being redefined.
        name: String,
    },
}

/// Index of a node in the arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct NodeId(usize);

#[derive(Debug, Clone)]
struct Node {
    info: SnapshotInfo,
    parent: Option<NodeId>,
    children: Vec<NodeId>,
}

/// libvirt's listing filters (`VIR_DOMAIN_SNAPSHOT_LIST_*`). Within a group
/// the flags are a union; a group with none or all of its flags set does
/// not filter; groups combine with AND.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// Only snapshots without a parent (not with `from`).
    pub roots: bool,
    /// Only children of this snapshot (all descendants with `descendants`).
    pub from: Option<String>,
    /// With `from`: all descendants, not only direct children.
    pub descendants: bool,
    /// Parents before children.
    pub topological: bool,
    /// Group: only snapshots without children.
    pub leaves: bool,
    /// Group: only snapshots with children.
    pub no_leaves: bool,
    /// Group: only snapshots with metadata.
    pub metadata: bool,
    /// Group: only snapshots without metadata.
    pub no_metadata: bool,
    /// Group: taken while shut off.
    pub inactive: bool,
    /// Group: taken while active, with memory.
    pub active: bool,
    /// Group: disk-only.
    pub disk_only: bool,
    /// Group: internal.
    pub internal: bool,
    /// Group: external.
    pub external: bool,
}

/// Whether `value` passes a group of `(flag set, value it selects)`.
fn group_passes<T: PartialEq>(group: &[(bool, T)], value: &T) -> bool {
    let set = group.iter().filter(|(on, _)| *on).count();
    set == 0 || set == group.len() || group.iter().any(|(on, v)| *on && v == value)
}

/// The snapshots of one owner.
#[derive(Debug, Clone, Default)]
pub struct SnapshotTree {
    /// Slots of deleted nodes stay `None`, so arena order is creation order.
    nodes: Vec<Option<Node>>,
    /// Names are local input, not attacker-chosen: a fast hasher.
    by_name: HashMap<String, NodeId, foldhash::fast::RandomState>,
    current: Option<NodeId>,
}

impl SnapshotTree {
    /// An empty tree.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of snapshots.
    #[must_use]
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    fn node(&self, id: NodeId) -> &Node {
        self.nodes[id.0].as_ref().expect("live node id")
    }

    fn node_mut(&mut self, id: NodeId) -> &mut Node {
        self.nodes[id.0].as_mut().expect("live node id")
    }

    fn id(&self, name: &str) -> Result<NodeId, TreeError> {
        self.by_name
            .get(name)
            .copied()
            .ok_or_else(|| TreeError::NotFound {
                name: name.to_string(),
            })
    }

    fn name_of(&self, id: NodeId) -> &str {
        &self.node(id).info.name
    }

    /// What the tree knows of `name`.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&SnapshotInfo> {
        self.by_name.get(name).map(|&id| &self.node(id).info)
    }

    /// Whether `name` exists.
    #[must_use]
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// The current snapshot.
    #[must_use]
    pub fn current(&self) -> Option<&str> {
        self.current.map(|id| self.name_of(id))
    }

    /// Whether `name` is the current snapshot.
    #[must_use]
    pub fn is_current(&self, name: &str) -> bool {
        self.current() == Some(name)
    }

    /// The parent of `name` (`None` for a root).
    ///
    /// # Errors
    /// [`TreeError::NotFound`].
    pub fn parent(&self, name: &str) -> Result<Option<&str>, TreeError> {
        let id = self.id(name)?;
        Ok(self.node(id).parent.map(|p| self.name_of(p)))
    }

    /// Direct children of `name`, in creation order.
    ///
    /// # Errors
    /// [`TreeError::NotFound`].
    pub fn children(&self, name: &str) -> Result<Vec<&str>, TreeError> {
        let id = self.id(name)?;
        Ok(self
            .node(id)
            .children
            .iter()
            .map(|&c| self.name_of(c))
            .collect())
    }

    /// Number of children of `name`, or of all its descendants.
    ///
    /// # Errors
    /// [`TreeError::NotFound`].
    pub fn child_count(&self, name: &str, descendants: bool) -> Result<usize, TreeError> {
        let id = self.id(name)?;
        Ok(if descendants {
            self.descendants(id).len()
        } else {
            self.node(id).children.len()
        })
    }

    /// All descendants of `id`, breadth first (parents before children).
    fn descendants(&self, id: NodeId) -> Vec<NodeId> {
        let mut out = Vec::new();
        let mut queue: VecDeque<NodeId> = self.node(id).children.iter().copied().collect();
        while let Some(n) = queue.pop_front() {
            out.push(n);
            queue.extend(self.node(n).children.iter().copied());
        }
        out
    }

    fn attach(&mut self, id: NodeId, parent: Option<NodeId>) {
        self.node_mut(id).parent = parent;
        if let Some(p) = parent {
            self.node_mut(p).children.push(id);
        }
    }

    fn detach(&mut self, id: NodeId) {
        if let Some(p) = self.node(id).parent {
            self.node_mut(p).children.retain(|&c| c != id);
        }
        self.node_mut(id).parent = None;
    }

    fn push(&mut self, info: SnapshotInfo) -> NodeId {
        let id = NodeId(self.nodes.len());
        self.by_name.insert(info.name.clone(), id);
        self.nodes.push(Some(Node {
            info,
            parent: None,
            children: Vec::new(),
        }));
        id
    }

    /// Every snapshot in arena order (creation order) as `(slot, info,
    /// parent slot)`; slots index the arena, which has holes where
    /// snapshots were deleted (see [`SnapshotTree::slot_count`]).
    pub(crate) fn slots(&self) -> impl Iterator<Item = (usize, &SnapshotInfo, Option<usize>)> {
        self.nodes.iter().enumerate().filter_map(|(slot, node)| {
            let node = node.as_ref()?;
            Some((slot, &node.info, node.parent.map(|p| p.0)))
        })
    }

    /// One more than the largest slot [`SnapshotTree::slots`] yields.
    pub(crate) fn slot_count(&self) -> usize {
        self.nodes.len()
    }

    /// Room for `additional` more snapshots.
    pub(crate) fn reserve(&mut self, additional: usize) {
        self.nodes.reserve(additional);
        self.by_name.reserve(additional);
    }

    /// Appends `info` as a child of the `parent`-th snapshot appended
    /// before it, for loading a tree stored parents first. Positions are
    /// arena slots, so the tree must have been filled only by this method.
    ///
    /// # Errors
    /// [`TreeError::Exists`], or [`TreeError::ParentNotFound`] for a
    /// position not yet appended.
    pub(crate) fn append_loaded(
        &mut self,
        info: SnapshotInfo,
        parent: Option<usize>,
    ) -> Result<(), TreeError> {
        if self.contains(&info.name) {
            return Err(TreeError::Exists { name: info.name });
        }
        let parent = match parent {
            None => None,
            Some(p) if self.nodes.get(p).is_some_and(Option::is_some) => Some(NodeId(p)),
            Some(p) => {
                return Err(TreeError::ParentNotFound {
                    parent: format!("#{p}"),
                    name: info.name,
                });
            }
        };
        let id = self.push(info);
        self.attach(id, parent);
        Ok(())
    }

    /// Adds a new snapshot as a child of the current one and makes it
    /// current (libvirt's create).
    ///
    /// # Errors
    /// [`TreeError::Exists`].
    pub fn create(&mut self, info: SnapshotInfo) -> Result<(), TreeError> {
        if self.contains(&info.name) {
            return Err(TreeError::Exists { name: info.name });
        }
        let parent = self.current;
        let id = self.push(info);
        self.attach(id, parent);
        self.current = Some(id);
        Ok(())
    }

    /// Adds or replaces a snapshot with a given parent, the way a
    /// management application copies a hierarchy to another host
    /// (libvirt's redefine). A replaced snapshot keeps its children. With
    /// `make_current` it becomes the current snapshot.
    ///
    /// # Errors
    /// [`TreeError::OwnParent`], [`TreeError::ParentNotFound`] (redefine
    /// parents first), [`TreeError::Cycle`].
    pub fn redefine(
        &mut self,
        info: SnapshotInfo,
        parent: Option<&str>,
        make_current: bool,
    ) -> Result<(), TreeError> {
        let name = info.name.clone();
        let parent_id = match parent {
            None => None,
            Some(p) if p == name => return Err(TreeError::OwnParent { name }),
            Some(p) => {
                Some(
                    self.by_name
                        .get(p)
                        .copied()
                        .ok_or_else(|| TreeError::ParentNotFound {
                            parent: p.to_string(),
                            name: name.clone(),
                        })?,
                )
            }
        };
        let id = match self.by_name.get(&name).copied() {
            Some(existing) => {
                // Walking up from the new parent must not reach this node.
                let mut up = parent_id;
                while let Some(a) = up {
                    if a == existing {
                        return Err(TreeError::Cycle {
                            parent: parent.unwrap_or_default().to_string(),
                            name,
                        });
                    }
                    up = self.node(a).parent;
                }
                self.detach(existing);
                self.node_mut(existing).info = info;
                existing
            }
            None => self.push(info),
        };
        self.attach(id, parent_id);
        if make_current {
            self.current = Some(id);
        }
        Ok(())
    }

    /// Renames `old` to `info.name`, replacing its info and moving it under
    /// `parent`; its children follow it, and it stays current if it was.
    ///
    /// # Errors
    /// [`TreeError::NotFound`] for `old`, [`TreeError::Exists`] for the
    /// new name, [`TreeError::OwnParent`], [`TreeError::ParentNotFound`],
    /// or [`TreeError::Cycle`] when `parent` is `old` or below it.
    pub fn rename(
        &mut self,
        old: &str,
        info: SnapshotInfo,
        parent: Option<&str>,
    ) -> Result<(), TreeError> {
        let id = self.id(old)?;
        let new = info.name.clone();
        if new != old && self.contains(&new) {
            return Err(TreeError::Exists { name: new });
        }
        let parent_id = match parent {
            None => None,
            Some(p) if p == new || p == old => return Err(TreeError::OwnParent { name: new }),
            Some(p) => {
                Some(
                    self.by_name
                        .get(p)
                        .copied()
                        .ok_or_else(|| TreeError::ParentNotFound {
                            parent: p.to_string(),
                            name: new.clone(),
                        })?,
                )
            }
        };
        let mut up = parent_id;
        while let Some(a) = up {
            if a == id {
                return Err(TreeError::Cycle {
                    parent: parent.unwrap_or_default().to_string(),
                    name: new,
                });
            }
            up = self.node(a).parent;
        }
        self.detach(id);
        self.by_name.remove(old);
        self.by_name.insert(new, id);
        self.node_mut(id).info = info;
        self.attach(id, parent_id);
        Ok(())
    }

    /// Makes `name` current (revert), or clears the current snapshot.
    ///
    /// # Errors
    /// [`TreeError::NotFound`].
    pub fn set_current(&mut self, name: Option<&str>) -> Result<(), TreeError> {
        self.current = name.map(|n| self.id(n)).transpose()?;
        Ok(())
    }

    /// Deletes `name` according to `policy` and returns the names removed.
    /// When the current snapshot is removed, its nearest surviving
    /// ancestor becomes current (libvirt's behaviour).
    ///
    /// # Errors
    /// [`TreeError::NotFound`].
    pub fn delete(&mut self, name: &str, policy: ChildPolicy) -> Result<Vec<String>, TreeError> {
        let id = self.id(name)?;
        let parent = self.node(id).parent;
        let doomed: Vec<NodeId> = match policy {
            ChildPolicy::Rebase => vec![id],
            ChildPolicy::Children => {
                let mut all = vec![id];
                all.extend(self.descendants(id));
                all
            }
            ChildPolicy::ChildrenOnly => self.descendants(id),
        };
        let survivor = if policy == ChildPolicy::ChildrenOnly {
            Some(id)
        } else {
            parent
        };
        if self.current.is_some_and(|c| doomed.contains(&c)) {
            self.current = survivor;
        }
        match policy {
            ChildPolicy::Rebase => {
                let children = std::mem::take(&mut self.node_mut(id).children);
                self.detach(id);
                for c in children {
                    self.attach(c, parent);
                }
            }
            ChildPolicy::Children => self.detach(id),
            ChildPolicy::ChildrenOnly => self.node_mut(id).children.clear(),
        }
        let mut removed = Vec::with_capacity(doomed.len());
        for d in doomed {
            if let Some(node) = self.nodes[d.0].take() {
                self.by_name.remove(&node.info.name);
                removed.push(node.info.name);
            }
        }
        Ok(removed)
    }

    /// Names matching `filter`, in creation order (or topological order).
    ///
    /// # Errors
    /// [`TreeError::NotFound`] for `filter.from`.
    pub fn list(&self, filter: &ListFilter) -> Result<Vec<&str>, TreeError> {
        let candidates: Vec<NodeId> = match &filter.from {
            Some(from) => {
                let id = self.id(from)?;
                if filter.descendants {
                    let mut d = self.descendants(id);
                    if !filter.topological {
                        d.sort_unstable();
                    }
                    d
                } else {
                    self.node(id).children.clone()
                }
            }
            None if filter.topological => self.topological(),
            None => (0..self.nodes.len())
                .map(NodeId)
                .filter(|&id| self.nodes[id.0].is_some())
                .collect(),
        };
        Ok(candidates
            .into_iter()
            .filter(|&id| self.passes(id, filter))
            .map(|id| self.name_of(id))
            .collect())
    }

    /// Every node, parents before children (roots in creation order,
    /// then breadth first).
    fn topological(&self) -> Vec<NodeId> {
        let mut out = Vec::with_capacity(self.len());
        let mut queue: VecDeque<NodeId> = (0..self.nodes.len())
            .map(NodeId)
            .filter(|&id| {
                self.nodes[id.0]
                    .as_ref()
                    .is_some_and(|n| n.parent.is_none())
            })
            .collect();
        while let Some(n) = queue.pop_front() {
            out.push(n);
            queue.extend(self.node(n).children.iter().copied());
        }
        out
    }

    fn passes(&self, id: NodeId, f: &ListFilter) -> bool {
        let node = self.node(id);
        let info = &node.info;
        let leaf = node.children.is_empty();
        (f.from.is_some() || !f.roots || node.parent.is_none())
            && group_passes(&[(f.leaves, true), (f.no_leaves, false)], &leaf)
            && group_passes(
                &[(f.metadata, true), (f.no_metadata, false)],
                &info.has_metadata,
            )
            && group_passes(
                &[
                    (f.inactive, StateKind::Inactive),
                    (f.active, StateKind::Active),
                    (f.disk_only, StateKind::DiskOnly),
                ],
                &info.state,
            )
            && group_passes(
                &[
                    (f.internal, Location::Internal),
                    (f.external, Location::External),
                ],
                &info.location,
            )
    }

    /// Checks the tree's invariants: every parent link matches a child
    /// link, no cycles, the name index matches the nodes, current exists.
    /// For tests and for the store's consistency check.
    #[must_use]
    pub fn invariants_hold(&self) -> bool {
        let live: Vec<NodeId> = (0..self.nodes.len())
            .map(NodeId)
            .filter(|&id| self.nodes[id.0].is_some())
            .collect();
        if live.len() != self.by_name.len()
            || live
                .iter()
                .any(|&id| self.by_name.get(self.name_of(id)) != Some(&id))
        {
            return false;
        }
        if self
            .current
            .is_some_and(|c| self.nodes.get(c.0).is_none_or(Option::is_none))
        {
            return false;
        }
        for &id in &live {
            let node = self.node(id);
            if let Some(p) = node.parent
                && self.nodes[p.0]
                    .as_ref()
                    .is_none_or(|pn| pn.children.iter().filter(|&&c| c == id).count() != 1)
            {
                return false;
            }
            if node.children.iter().any(|&c| {
                self.nodes[c.0]
                    .as_ref()
                    .is_none_or(|cn| cn.parent != Some(id))
            }) {
                return false;
            }
        }
        // Every node reaches a root without repeating: no cycles.
        self.topological().len() == live.len()
            && live.iter().copied().collect::<HashSet<_>>().len() == live.len()
    }
}

#[cfg(test)]
mod tests;
