//! virsh's snapshot verbs: `snapshot-list`, `snapshot-info`,
//! `snapshot-dumpxml`, `snapshot-parent`, `snapshot-current`,
//! `snapshot-delete --metadata` and `snapshot-edit` (its edit loop in
//! [`edit`]) on the metadata store; `snapshot-create` and
//! `snapshot-create-as` (in [`create`], their specs in [`spec`]) take
//! snapshots of a defined, shut-off domain's disks, or redefine
//! metadata; `snapshot-revert` and `snapshot-delete` of the storage (in
//! [`change`]). Output columns and wording follow virsh; `--json` gives
//! the same data as JSON.

mod change;
mod create;
mod edit;
mod spec;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use snapshot_conf::{FormatFlags, FormatOptions};
use snapshot_core::store::{Access, Layout, MetadataStore, Owner, SnapshotRecord, StoreError};
use snapshot_core::{ChildPolicy, ListFilter, Location, SnapshotTree, StateKind};

/// The snapshot verbs.
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// List snapshots of a domain.
    #[command(name = "snapshot-list")]
    List(ListArgs),
    /// Show information about a snapshot.
    #[command(name = "snapshot-info")]
    Info(InfoArgs),
    /// Print a snapshot's XML.
    #[command(name = "snapshot-dumpxml")]
    Dumpxml(DumpArgs),
    /// Print the name of a snapshot's parent.
    #[command(name = "snapshot-parent")]
    Parent(NameArgs),
    /// Print (or set) the current snapshot.
    #[command(name = "snapshot-current")]
    Current(CurrentArgs),
    /// Create a snapshot from XML (or all defaults) of a shut-off domain,
    /// or redefine a snapshot's metadata.
    ///
    /// Each disk is snapshotted by its own mechanism: qcow2 internally,
    /// raw by a full copy beside the image, external disks as a new qcow2
    /// overlay that becomes the disk's source. --dry-run prints the plan
    /// and changes nothing.
    #[command(name = "snapshot-create")]
    Create(create::CreateArgs),
    /// Create a snapshot of a shut-off domain from arguments.
    ///
    /// Builds the <domainsnapshot> from NAME, DESCRIPTION, --memspec and
    /// --diskspec as virsh does (--print-xml shows it), then takes it as
    /// snapshot-create does.
    #[command(name = "snapshot-create-as")]
    CreateAs(create::CreateAsArgs),
    /// Delete a snapshot: its storage (internal snapshots dropped,
    /// external images merged into or rebased under what is built on
    /// them, copies removed) and its metadata; its children move to its
    /// parent. --children and --children-only delete descendants too.
    #[command(name = "snapshot-delete")]
    Delete(DeleteArgs),
    /// Revert a shut-off domain to a snapshot: every disk goes back by
    /// its own mechanism and the domain definition becomes the snapshot's.
    #[command(name = "snapshot-revert")]
    Revert(change::RevertArgs),
    /// Finish (a revert or delete) or roll back (a create) what a crash or
    /// failure interrupted; with --discard, forget it instead.
    #[command(name = "snapshot-recover")]
    Recover(change::RecoverArgs),
    /// Edit a snapshot's XML in $VISUAL or $EDITOR, then redefine it.
    ///
    /// The XML, security-sensitive parts included, is written to a private
    /// temporary file for the editor ($VISUAL, else $EDITOR, else vi). An
    /// unchanged file changes nothing. The edited XML is validated against
    /// the schema and redefines the snapshot; a changed <name> needs
    /// --rename or --clone. When the edit is refused, a terminal is asked
    /// "Failed. Try again? [y,n,i,f,?]" (y: edit again, n: give up, i:
    /// redefine without validation, f: redefine again); without a terminal
    /// the command exits with status 1 and the snapshot stays as it was.
    #[command(name = "snapshot-edit")]
    Edit(edit::EditArgs),
}

/// `snapshot-list`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("start").args(["from", "current"])))]
pub struct ListArgs {
    /// Domain name.
    domain: String,
    /// Add a column with each snapshot's parent.
    #[arg(long, conflicts_with = "tree")]
    parent: bool,
    /// Only snapshots without a parent.
    #[arg(long, conflicts_with_all = ["from", "tree", "current"])]
    roots: bool,
    /// Only snapshots without children.
    #[arg(long, conflicts_with = "tree")]
    leaves: bool,
    /// Only snapshots with children.
    #[arg(long, conflicts_with = "tree")]
    no_leaves: bool,
    /// Only snapshots with metadata.
    #[arg(long)]
    metadata: bool,
    /// Only snapshots without metadata.
    #[arg(long)]
    no_metadata: bool,
    /// Only snapshots taken while shut off.
    #[arg(long, conflicts_with = "tree")]
    inactive: bool,
    /// Only snapshots taken while running, with memory.
    #[arg(long, conflicts_with = "tree")]
    active: bool,
    /// Only disk-only snapshots.
    #[arg(long, conflicts_with = "tree")]
    disk_only: bool,
    /// Only internal snapshots.
    #[arg(long, conflicts_with = "tree")]
    internal: bool,
    /// Only external snapshots.
    #[arg(long, conflicts_with = "tree")]
    external: bool,
    /// Show snapshots as a tree (with --from or --current: that snapshot
    /// and its descendants).
    #[arg(long, conflicts_with = "name")]
    tree: bool,
    /// Only children of this snapshot.
    #[arg(long, value_name = "NAME")]
    from: Option<String>,
    /// With --from or --current: all descendants.
    #[arg(long, requires = "start")]
    descendants: bool,
    /// Only children of the current snapshot (all with --descendants).
    #[arg(long, conflicts_with = "from")]
    current: bool,
    /// Parents before children (otherwise sorted by name, as virsh does).
    #[arg(long)]
    topological: bool,
    /// Names only.
    #[arg(long)]
    name: bool,
    /// JSON output.
    #[arg(long)]
    json: bool,
}

/// A domain and a snapshot name.
#[derive(Debug, Args)]
pub struct NameArgs {
    /// Domain name.
    domain: String,
    /// Snapshot name (or `--snapshotname NAME`).
    #[arg(value_name = "NAME", required_unless_present_any = ["current", "snapshotname_opt"])]
    snapshotname: Option<String>,
    /// Snapshot name, virsh's option form.
    #[arg(long = "snapshotname", value_name = "NAME", id = "snapshotname_opt")]
    snapshotname_opt: Option<String>,
    /// The current snapshot.
    #[arg(long)]
    current: bool,
}

/// `snapshot-info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    #[command(flatten)]
    target: NameArgs,
    /// JSON output.
    #[arg(long)]
    json: bool,
}

/// `snapshot-dumpxml`.
#[derive(Debug, Args)]
pub struct DumpArgs {
    /// Domain name.
    domain: String,
    /// Snapshot name.
    snapshotname: String,
    /// Include security-sensitive information.
    #[arg(long)]
    security_info: bool,
}

/// `snapshot-current`.
#[derive(Debug, Args)]
pub struct CurrentArgs {
    /// Domain name.
    domain: String,
    /// Print only the name.
    #[arg(long)]
    name: bool,
    /// Include security-sensitive information.
    #[arg(long)]
    security_info: bool,
    /// Make this snapshot current (metadata only).
    snapshotname: Option<String>,
}

/// `snapshot-delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Domain name.
    domain: String,
    /// Snapshot name.
    #[arg(required_unless_present = "current")]
    snapshotname: Option<String>,
    /// Delete the current snapshot.
    #[arg(long)]
    current: bool,
    /// Also delete its descendants.
    #[arg(long, conflicts_with = "children_only")]
    children: bool,
    /// Delete only its descendants.
    #[arg(long)]
    children_only: bool,
    /// Delete only virtsnap's metadata; images, internal snapshots and
    /// memory files stay.
    #[arg(long)]
    metadata: bool,
    /// Print the plan (what is merged, rebased, removed or kept) and
    /// change nothing.
    #[arg(long)]
    dry_run: bool,
}

/// Why a snapshot verb failed.
#[derive(Debug, thiserror::Error)]
enum CmdError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Layout(#[from] snapshot_core::store::LayoutError),
    #[error(transparent)]
    Tree(#[from] snapshot_core::TreeError),
    #[error("the domain does not have a current snapshot")]
    NoCurrent,
    #[error("snapshot '{0}' does not have a parent")]
    NoParent(String),
    #[error(transparent)]
    Edit(#[from] edit::EditError),
    #[error(transparent)]
    Create(#[from] create::CreateError),
}

/// Runs a snapshot verb.
pub fn run(cmd: &SnapshotCommand) -> ExitCode {
    match execute(cmd) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("virtsnap: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn layout() -> Result<Layout, CmdError> {
    let dir = snapshot_core::store::layout::state_dir()?;
    tracing::debug!(state_dir = %dir.display(), "state directory");
    Ok(Layout::new(dir))
}

fn open(domain: &str, access: Access) -> Result<MetadataStore, CmdError> {
    Ok(open_in(&layout()?, domain, access)?)
}

/// Opens the snapshot metadata of `domain`, printing what loading found
/// odd as warnings.
fn open_in(layout: &Layout, domain: &str, access: Access) -> Result<MetadataStore, StoreError> {
    let store = MetadataStore::open(layout, Owner::Domain(domain.to_string()), access)?;
    tracing::debug!(
        owner = %store.owner(),
        ?access,
        from = if store.opened_from_index() { "index" } else { "files" },
        snapshots = store.tree().len(),
        current = store.tree().current(),
        warnings = store.warnings().len(),
        "snapshot metadata opened"
    );
    for w in store.warnings() {
        eprintln!("virtsnap: warning: {w}");
    }
    Ok(store)
}

fn execute(cmd: &SnapshotCommand) -> Result<String, CmdError> {
    match cmd {
        SnapshotCommand::List(a) => list(a),
        SnapshotCommand::Info(a) => info(a),
        SnapshotCommand::Dumpxml(a) => {
            let store = open(&a.domain, Access::Read)?;
            dumpxml(&store, &a.snapshotname, a.security_info)
        }
        SnapshotCommand::Parent(a) => {
            let store = open(&a.domain, Access::Read)?;
            let name = resolve(&store, a)?;
            match store.tree().parent(&name)? {
                Some(p) => Ok(format!("{p}\n")),
                None => Err(CmdError::NoParent(name)),
            }
        }
        SnapshotCommand::Current(a) => current(a),
        SnapshotCommand::Create(a) => Ok(create::create(&layout()?, a)?),
        SnapshotCommand::CreateAs(a) => Ok(create::create_as(&layout()?, a)?),
        SnapshotCommand::Delete(a) => delete(a),
        SnapshotCommand::Revert(a) => Ok(change::revert(&layout()?, a)?),
        SnapshotCommand::Recover(a) => Ok(change::recover(&layout()?, a)?),
        SnapshotCommand::Edit(a) => Ok(edit::run(&layout()?, a)?),
    }
}

fn resolve(store: &MetadataStore, a: &NameArgs) -> Result<String, CmdError> {
    match a.snapshotname.as_ref().or(a.snapshotname_opt.as_ref()) {
        Some(n) => Ok(n.clone()),
        None => store
            .tree()
            .current()
            .map(str::to_string)
            .ok_or(CmdError::NoCurrent),
    }
}

fn list(a: &ListArgs) -> Result<String, CmdError> {
    let store = open(&a.domain, Access::Read)?;
    let tree = store.tree();
    let from = if a.current {
        Some(tree.current().ok_or(CmdError::NoCurrent)?.to_string())
    } else {
        a.from.clone()
    };
    let filter = ListFilter {
        roots: a.roots,
        from,
        descendants: a.descendants || a.tree,
        topological: a.topological || a.tree,
        leaves: a.leaves,
        no_leaves: a.no_leaves,
        metadata: a.metadata,
        no_metadata: a.no_metadata,
        inactive: a.inactive,
        active: a.active,
        disk_only: a.disk_only,
        internal: a.internal,
        external: a.external,
    };
    let names = tree.list(&filter)?;
    // virsh sorts by name (ignoring ASCII case) unless --topological.
    let names = if a.topological { names } else { by_name(names) };
    if a.json {
        let rows: Vec<serde_json::Value> = names
            .iter()
            .map(|n| snapshot_json(&store, n))
            .collect::<Result<_, _>>()?;
        return Ok(format!("{}\n", serde_json::Value::Array(rows)));
    }
    if a.tree {
        return Ok(tree_text(tree, filter.from.as_deref(), &names));
    }
    if a.name {
        return Ok(names.iter().map(|n| format!("{n}\n")).collect());
    }
    let mut rows = Vec::with_capacity(names.len());
    for n in &names {
        let info = tree
            .get(n)
            .map(|i| (i.creation_time, state_word(&store, n)));
        let (time, state) = info.unwrap_or((0, String::new()));
        let mut row = vec![(*n).to_string(), format_time(time), state];
        if a.parent {
            row.push(tree.parent(n)?.unwrap_or_default().to_string());
        }
        rows.push(row);
    }
    let mut header = vec!["Name", "Creation Time", "State"];
    if a.parent {
        header.push("Parent");
    }
    Ok(table(&header, &rows))
}

/// virsh's table: a leading space, columns padded to their widest cell,
/// three spaces apart, a dashed rule under the header.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let total: usize = widths.iter().sum::<usize>() + 3 * (widths.len().saturating_sub(1)) + 2;
    let mut out = String::with_capacity((rows.len() + 2) * (total + 1));
    // One line, written in place: cells padded to their column, trailing
    // blanks trimmed.
    let line = |cells: &mut dyn Iterator<Item = &str>, out: &mut String| {
        let start = out.len();
        out.push(' ');
        let mut cells = cells.zip(&widths).peekable();
        while let Some((cell, &w)) = cells.next() {
            out.push_str(cell);
            if cells.peek().is_some() {
                let pad = w.saturating_sub(cell.chars().count()) + 3;
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        let kept = out[start..].trim_end().len();
        out.truncate(start + kept);
        out.push('\n');
    };
    line(&mut header.iter().copied(), &mut out);
    out.extend(std::iter::repeat_n('-', total));
    out.push('\n');
    for row in rows {
        line(&mut row.iter().map(String::as_str), &mut out);
    }
    out
}

/// Names sorted as virsh sorts them: by name ignoring ASCII case (then
/// by name, so the order is total).
pub(crate) fn by_name(mut names: Vec<&str>) -> Vec<&str> {
    names.sort_by_cached_key(|n| (n.to_ascii_lowercase(), *n));
    names
}

/// virsh's `--tree` (`vshTreePrint`): every snapshot of `listed` whose
/// parent is not listed starts a tree (with `from`, that snapshot alone),
/// children in `listed`'s order under their parent with `+- `, a `|` line
/// before a snapshot's first child, and after the last leaf of a branch a
/// line holding only the indentation. Each level indents two more
/// columns, so a chain of n snapshots prints O(n²) characters, as virsh
/// does. Iterative: any depth fits the stack.
pub(crate) fn tree_text(tree: &SnapshotTree, from: Option<&str>, listed: &[&str]) -> String {
    let position: HashMap<&str, usize> = listed.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    // Children of each listed snapshot (and of `from`), in list order.
    let mut children: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut roots = Vec::new();
    for &name in listed {
        match tree.parent(name).ok().flatten() {
            Some(p) if position.contains_key(p) || Some(p) == from => {
                children.entry(p).or_default().push(name);
            }
            _ if from.is_some() => {}
            _ => roots.push(name),
        }
    }
    if let Some(f) = from {
        roots = vec![f];
    }
    let mut out = String::new();
    for root in roots {
        print_tree(root, &children, &mut out);
    }
    out
}

/// One tree of [`tree_text`], as `vshTreePrintInternal` prints it.
fn print_tree(root: &str, children: &HashMap<&str, Vec<&str>>, out: &mut String) {
    struct Level<'a> {
        children: &'a [&'a str],
        next: usize,
        root: bool,
        last: bool,
    }
    let mut indent = String::new();
    let enter = |name: &str, last: bool, root: bool, indent: &mut String, out: &mut String| {
        let _ = writeln!(out, "{indent}{}{name}", if root { "" } else { "+- " });
        if !root {
            indent.push(if last { ' ' } else { '|' });
            indent.push(' ');
        }
        let kids = children.get(name).map_or(&[][..], Vec::as_slice);
        if !kids.is_empty() {
            let _ = writeln!(out, "{indent}  |");
        }
        indent.push_str("  ");
        kids
    };
    let kids = enter(root, true, true, &mut indent, out);
    let mut stack = vec![Level {
        children: kids,
        next: 0,
        root: true,
        last: true,
    }];
    while let Some(level) = stack.last_mut() {
        if let Some(&child) = level.children.get(level.next) {
            level.next += 1;
            let last = level.next == level.children.len();
            let kids = enter(child, last, false, &mut indent, out);
            stack.push(Level {
                children: kids,
                next: 0,
                root: false,
                last,
            });
            continue;
        }
        let done = stack.pop().expect("a level");
        indent.truncate(indent.len() - 2);
        if done.children.is_empty() && done.last {
            let _ = writeln!(out, "{indent}");
        }
        if !done.root {
            indent.truncate(indent.len() - 2);
        }
    }
}

fn state_word(store: &MetadataStore, name: &str) -> String {
    store.state_word(name).unwrap_or_default().to_string()
}

fn info(a: &InfoArgs) -> Result<String, CmdError> {
    let store = open(&a.target.domain, Access::Read)?;
    let name = resolve(&store, &a.target)?;
    if a.json {
        return Ok(format!("{}\n", snapshot_json(&store, &name)?));
    }
    let tree = store.tree();
    let i = tree
        .get(&name)
        .ok_or_else(|| snapshot_core::TreeError::NotFound { name: name.clone() })?;
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    let rows = [
        ("Name", name.clone()),
        ("Domain", a.target.domain.clone()),
        ("Current", yes_no(tree.is_current(&name)).to_string()),
        ("State", state_word(&store, &name)),
        ("Location", location_word(i.location).to_string()),
        ("Parent", tree.parent(&name)?.unwrap_or("-").to_string()),
        ("Children", tree.child_count(&name, false)?.to_string()),
        ("Descendants", tree.child_count(&name, true)?.to_string()),
        ("Metadata", yes_no(i.has_metadata).to_string()),
    ];
    Ok(rows
        .iter()
        .map(|(k, v)| format!("{:<15} {v}\n", format!("{k}:")))
        .collect())
}

fn location_word(l: Location) -> &'static str {
    match l {
        Location::Internal => "internal",
        Location::External => "external",
    }
}

fn snapshot_json(store: &MetadataStore, name: &str) -> Result<serde_json::Value, CmdError> {
    let tree = store.tree();
    let i = tree
        .get(name)
        .ok_or_else(|| snapshot_core::TreeError::NotFound {
            name: name.to_string(),
        })?;
    let state_kind = match i.state {
        StateKind::Inactive => "inactive",
        StateKind::Active => "active",
        StateKind::DiskOnly => "disk-only",
    };
    Ok(serde_json::json!({
        "name": name,
        "creation_time": i.creation_time,
        "state": state_word(store, name),
        "kind": state_kind,
        "location": location_word(i.location),
        "parent": tree.parent(name)?,
        "current": tree.is_current(name),
        "children": tree.child_count(name, false)?,
        "descendants": tree.child_count(name, true)?,
        "metadata": i.has_metadata,
    }))
}

fn dumpxml(store: &MetadataStore, name: &str, secure: bool) -> Result<String, CmdError> {
    let record = store
        .get(name)
        .ok_or_else(|| snapshot_core::TreeError::NotFound {
            name: name.to_string(),
        })?;
    let flags = if secure {
        FormatFlags::SECURE
    } else {
        FormatFlags::empty()
    };
    let options = FormatOptions::new(flags);
    Ok(match record {
        SnapshotRecord::Domain(d) => d.format(&options),
        SnapshotRecord::Volume(v) => v.format(&options),
    })
}

fn current(a: &CurrentArgs) -> Result<String, CmdError> {
    if let Some(target) = &a.snapshotname {
        let mut store = open(&a.domain, Access::Write)?;
        store.set_current(Some(target))?;
        tracing::info!(snapshot = %target, "current snapshot set");
        return Ok(format!("Snapshot {target} set as current\n"));
    }
    let store = open(&a.domain, Access::Read)?;
    let name = store
        .tree()
        .current()
        .ok_or(CmdError::NoCurrent)?
        .to_string();
    if a.name {
        Ok(format!("{name}\n"))
    } else {
        dumpxml(&store, &name, a.security_info)
    }
}

fn delete(a: &DeleteArgs) -> Result<String, CmdError> {
    if !a.metadata || a.dry_run {
        return Ok(change::delete(&layout()?, a)?);
    }
    let mut store = open(&a.domain, Access::Write)?;
    let name = match &a.snapshotname {
        Some(n) => n.clone(),
        None => store
            .tree()
            .current()
            .ok_or(CmdError::NoCurrent)?
            .to_string(),
    };
    let policy = if a.children {
        ChildPolicy::Children
    } else if a.children_only {
        ChildPolicy::ChildrenOnly
    } else {
        ChildPolicy::Rebase
    };
    let removed = store.delete(&name, policy)?;
    tracing::info!(snapshot = %name, ?policy, ?removed, "snapshot metadata deleted");
    Ok(if a.children_only {
        format!("Domain snapshot {name} children deleted\n")
    } else {
        format!("Domain snapshot {name} deleted\n")
    })
}

/// `YYYY-MM-DD HH:MM:SS +0000` as virsh prints creation times (in UTC).
pub(crate) fn format_time(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} +0000",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_format_time_matches_known_dates() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00 +0000");
        assert_eq!(format_time(1_272_917_631), "2010-05-03 20:13:51 +0000");
        assert_eq!(format_time(951_782_400), "2000-02-29 00:00:00 +0000");
        assert_eq!(format_time(-1), "1969-12-31 23:59:59 +0000");
    }

    #[test]
    fn test_table_pads_columns_like_virsh() {
        let out = table(
            &["Name", "State"],
            &[
                vec!["s1".into(), "running".into()],
                vec!["longer".into(), "shutoff".into()],
            ],
        );
        assert_eq!(
            out,
            " Name     State\n------------------\n s1       running\n longer   shutoff\n"
        );
    }
}
