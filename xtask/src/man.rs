//! `cargo xtask man [OUT_DIR]`: the man pages of `virtsnap`, generated
//! from its clap definition (`virtsnap::command()`) with clap_mangen.
//! `virtsnap.1` lists the commands by help group (as `virtsnap --help`),
//! the environment and the exit statuses; every subcommand gets its own
//! `virtsnap-VERB.1` (`virtsnap-xml-check.1` for nested ones) with its
//! synopsis, options and the exit statuses. Default directory:
//! `target/man`.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, roman};
use virtsnap::HelpGroup;

use crate::cmd;

/// Section 1: user commands.
const SECTION: &str = "1";

/// The environment variables `virtsnap` reads, for `virtsnap.1`.
const ENVIRONMENT: &[(&str, &str)] = &[
    (
        "VIRTSNAP_STATE",
        "The state directory (an absolute path). Default: $XDG_DATA_HOME/virtsnap, \
         ~/.local/share/virtsnap, or /var/lib/virtsnap for root.",
    ),
    (
        "VISUAL, EDITOR",
        "The editor of snapshot-edit, in this order; vi when neither is set. \
         A value with arguments runs through sh -c.",
    ),
    (
        "RUST_LOG",
        "Log filter (tracing-subscriber's EnvFilter syntax, e.g. virtsnap=debug) \
         when neither -v nor --debug is given.",
    ),
];

/// Writes the pages into `out_dir` (default `target/man`).
pub fn run(out_dir: Option<&Path>) -> Result<()> {
    let dir = out_dir.map_or_else(
        || cmd::workspace_root().join("target").join("man"),
        Path::to_path_buf,
    );
    let pages = generate(virtsnap::command(), &virtsnap::help_groups(), &dir)?;
    cmd::announce(&format!(
        "man: {} pages written to {}",
        pages.len(),
        dir.display()
    ));
    Ok(())
}

/// Writes `virtsnap.1` and one page per subcommand, at any depth, into
/// `dir`; returns the files written.
pub fn generate(mut root: clap::Command, groups: &[HelpGroup], dir: &Path) -> Result<Vec<PathBuf>> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // Building sets every subcommand's full name (`virtsnap snapshot-list`)
    // for the synopses.
    root.build();
    let version = root.get_version().unwrap_or_default().to_string();
    let mut pages = Vec::new();
    let name = root.get_name().to_string();
    let page = Page {
        title: &name,
        version: &version,
        groups: Some(groups),
    };
    pages.push(page.write(&root, dir)?);
    for sub in root.get_subcommands() {
        walk(sub, &name, &version, dir, &mut pages)?;
    }
    Ok(pages)
}

fn walk(
    cmd: &clap::Command,
    parent: &str,
    version: &str,
    dir: &Path,
    pages: &mut Vec<PathBuf>,
) -> Result<()> {
    let title = format!("{parent}-{}", cmd.get_name());
    let page = Page {
        title: &title,
        version,
        groups: None,
    };
    pages.push(page.write(cmd, dir)?);
    for sub in cmd.get_subcommands() {
        walk(sub, &title, version, dir, pages)?;
    }
    Ok(())
}

/// One man page.
struct Page<'a> {
    /// `virtsnap-snapshot-list`: the page's name and file name.
    title: &'a str,
    version: &'a str,
    /// The help groups: only the main page lists the commands by group.
    groups: Option<&'a [HelpGroup]>,
}

impl Page<'_> {
    fn write(&self, cmd: &clap::Command, dir: &Path) -> Result<PathBuf> {
        let path = dir.join(format!("{}.{SECTION}", self.title));
        let mut out = Vec::new();
        self.render(cmd, &mut out)
            .with_context(|| format!("cannot render the man page {}", self.title))?;
        let text = String::from_utf8(out).context("clap_mangen wrote non-UTF-8 roff")?;
        let mut file =
            fs::File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        file.write_all(single_preamble(&text).as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }

    fn render(&self, cmd: &clap::Command, w: &mut Vec<u8>) -> std::io::Result<()> {
        let man = Man::new(cmd.clone())
            .title(self.title.to_uppercase())
            .section(SECTION)
            .source(format!("virtsnap {}", self.version))
            .manual("virtsnap Manual");
        man.render_title(w)?;
        man.render_name_section(w)?;
        man.render_synopsis_section(w)?;
        man.render_description_section(w)?;
        if cmd.get_arguments().any(|a| !a.is_hide_set()) {
            man.render_options_section(w)?;
        }
        let mut roff = Roff::default();
        match self.groups {
            Some(groups) => commands_by_group(&mut roff, self.title, groups),
            None if cmd.has_subcommands() => subcommands(&mut roff, self.title, cmd),
            None => {}
        }
        if self.groups.is_some() {
            environment(&mut roff);
        }
        exit_status(&mut roff);
        see_also(&mut roff, self.title);
        roff.to_writer(w)?;
        if cmd.get_version().is_some() {
            man.render_version_section(w)?;
        }
        Ok(())
    }
}

/// `roff` starts every rendering with the same two lines defining the
/// apostrophe string; a page rendered section by section keeps the first.
fn single_preamble(text: &str) -> String {
    let mut seen = false;
    let mut out = String::with_capacity(text.len());
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.starts_with(".ie \\n(.g .ds Aq ")
            && lines
                .peek()
                .is_some_and(|next| next.starts_with(".el .ds Aq "))
        {
            let next = lines.next().unwrap_or_default();
            if seen {
                continue;
            }
            seen = true;
            out.push_str(line);
            out.push('\n');
            out.push_str(next);
            out.push('\n');
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// `COMMANDS`, one subsection per help group, each verb pointing to its page.
fn commands_by_group(roff: &mut Roff, title: &str, groups: &[HelpGroup]) {
    roff.control("SH", ["COMMANDS"]);
    for group in groups {
        roff.control("SS", [group.heading().as_str()]);
        for verb in &group.verbs {
            roff.control("TP", []);
            roff.text([
                bold(format!("{title}-{}", verb.name)),
                roman(format!("({SECTION})")),
            ]);
            roff.text([roman(verb.about.as_str())]);
        }
    }
}

/// `SUBCOMMANDS` of a page below the main one (`xml`).
fn subcommands(roff: &mut Roff, title: &str, cmd: &clap::Command) {
    roff.control("SH", ["SUBCOMMANDS"]);
    for sub in cmd.get_subcommands() {
        roff.control("TP", []);
        roff.text([
            bold(format!("{title}-{}", sub.get_name())),
            roman(format!("({SECTION})")),
        ]);
        if let Some(about) = sub.get_about() {
            roff.text([roman(about.to_string())]);
        }
    }
}

fn environment(roff: &mut Roff) {
    roff.control("SH", ["ENVIRONMENT"]);
    for (name, meaning) in ENVIRONMENT {
        roff.control("TP", []);
        roff.text([bold(*name)]);
        roff.text([roman(*meaning)]);
    }
}

fn exit_status(roff: &mut Roff) {
    roff.control("SH", ["EXIT STATUS"]);
    for status in virtsnap::EXIT_STATUS {
        roff.control("TP", []);
        roff.text([bold(status.code.to_string())]);
        roff.text([roman(status.meaning)]);
    }
}

fn see_also(roff: &mut Roff, title: &str) {
    roff.control("SH", ["SEE ALSO"]);
    if title == "virtsnap" {
        roff.text([bold("virsh"), roman("(1)")]);
    } else {
        roff.text([bold("virtsnap"), roman(format!("({SECTION})"))]);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// `virtsnap`, `virtsnap-snapshot-list`, `virtsnap-xml-check`, ...
    fn expected_pages(cmd: &clap::Command, prefix: &str, out: &mut BTreeSet<String>) {
        out.insert(format!("{prefix}.1"));
        for sub in cmd.get_subcommands() {
            expected_pages(sub, &format!("{prefix}-{}", sub.get_name()), out);
        }
    }

    #[test]
    fn single_preamble_drops_repeats_only() {
        let pre = ".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n";
        let text = format!("{pre}.TH X 1\n{pre}.SH NAME\nx\n");
        assert_eq!(
            single_preamble(&text),
            format!("{pre}.TH X 1\n.SH NAME\nx\n")
        );
    }

    #[test]
    fn man_writes_one_page_per_subcommand() {
        let dir = tempfile::tempdir().expect("temp dir");
        let written = generate(virtsnap::command(), &virtsnap::help_groups(), dir.path())
            .expect("pages generated");

        let mut expected = BTreeSet::new();
        expected_pages(&virtsnap::command(), "virtsnap", &mut expected);
        let on_disk: BTreeSet<String> = fs::read_dir(dir.path())
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(on_disk, expected);
        assert_eq!(written.len(), expected.len());
        for page in [
            "virtsnap.1",
            "virtsnap-snapshot-edit.1",
            "virtsnap-snapshot-list.1",
            "virtsnap-define.1",
            "virtsnap-xml.1",
            "virtsnap-xml-check.1",
            "virtsnap-completions.1",
        ] {
            assert!(on_disk.contains(page), "{page} missing: {on_disk:?}");
        }
    }

    #[test]
    fn man_main_page_has_groups_environment_and_exit_status() {
        let dir = tempfile::tempdir().expect("temp dir");
        generate(virtsnap::command(), &virtsnap::help_groups(), dir.path())
            .expect("pages generated");
        let main = fs::read_to_string(dir.path().join("virtsnap.1")).expect("virtsnap.1");
        assert!(
            main.lines()
                .nth(2)
                .is_some_and(|l| l.starts_with(".TH VIRTSNAP 1")),
            "{main}"
        );
        assert_eq!(main.matches(".ds Aq").count(), 2, "one preamble: {main}");
        assert!(
            main.contains(".SS \"Snapshot (help keyword 'snapshot')\""),
            "{main}"
        );
        assert!(
            main.contains("\\fBvirtsnap\\-snapshot\\-edit\\fR(1)"),
            "{main}"
        );
        assert!(main.contains(".SH \"EXIT STATUS\""), "{main}");
        assert!(main.contains("Usage error"), "{main}");
        assert!(main.contains(".SH ENVIRONMENT"), "{main}");

        let edit = fs::read_to_string(dir.path().join("virtsnap-snapshot-edit.1"))
            .expect("virtsnap-snapshot-edit.1");
        assert!(edit.contains("virtsnap snapshot\\-edit"), "{edit}");
        assert!(edit.contains("\\-\\-rename"), "{edit}");
        assert!(edit.contains(".SH \"EXIT STATUS\""), "{edit}");
        assert!(edit.contains("\\fBvirtsnap\\fR(1)"), "{edit}");
    }
}
