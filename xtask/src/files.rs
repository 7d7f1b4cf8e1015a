//! Every generated write goes through [`Files`]: in [`Mode::Write`] it updates files whose text
//! changed and deletes orphans; in [`Mode::Check`] it writes nothing and reports what is stale,
//! missing or orphaned, with a short diff.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Whether to write generated files or only compare them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Write changed files, delete orphaned ones.
    Write,
    /// Write nothing; report differences.
    Check,
}

/// What one run found (check mode) or did (write mode).
#[derive(Debug, Default)]
pub struct Report {
    /// Files whose text differs, with a short diff.
    pub stale: Vec<(PathBuf, String)>,
    /// Files that should exist and do not.
    pub missing: Vec<PathBuf>,
    /// Files in a generated folder that the generator no longer produces.
    pub orphaned: Vec<PathBuf>,
    /// Files that were already up to date.
    pub unchanged: usize,
}

impl Report {
    /// True if nothing differs.
    pub fn is_clean(&self) -> bool {
        self.stale.is_empty() && self.missing.is_empty() && self.orphaned.is_empty()
    }

    /// A human summary; in check mode it ends with the command that fixes things.
    pub fn render(&self, mode: Mode, root: &Path) -> String {
        let rel = |p: &Path| p.strip_prefix(root).unwrap_or(p).display().to_string();
        let mut out = String::new();
        let (stale, missing, orphaned) = match mode {
            Mode::Check => ("stale", "missing", "orphaned"),
            Mode::Write => ("updated", "created", "deleted"),
        };
        for (path, diff) in &self.stale {
            let _ = writeln!(out, "{stale}: {}", rel(path));
            if mode == Mode::Check {
                out.push_str(diff);
            }
        }
        for path in &self.missing {
            let _ = writeln!(out, "{missing}: {}", rel(path));
        }
        for path in &self.orphaned {
            let _ = writeln!(out, "{orphaned}: {}", rel(path));
        }
        if mode == Mode::Check && !self.is_clean() {
            out.push_str("generated files are out of date with the migrations; run `cargo xtask codegen` to update them\n");
        }
        if self.is_clean() {
            let _ = writeln!(out, "{} generated files up to date", self.unchanged);
        }
        out
    }
}

/// The one gate for generated files.
#[derive(Debug)]
pub struct Files {
    mode: Mode,
    report: Report,
}

/// At most this many diff lines are shown per stale file.
const DIFF_LINES: usize = 40;

impl Files {
    /// A gate in `mode`.
    pub fn new(mode: Mode) -> Self {
        Files {
            mode,
            report: Report::default(),
        }
    }

    /// The report so far.
    pub fn finish(self) -> Report {
        self.report
    }

    /// Makes `path` hold exactly `contents` (write mode) or records how it differs (check mode).
    pub fn ensure_file_contents(&mut self, path: &Path, contents: &str) -> Result<()> {
        let current = match std::fs::read_to_string(path) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        match current {
            Some(text) if text == contents => {
                self.report.unchanged += 1;
                return Ok(());
            }
            Some(text) => self
                .report
                .stale
                .push((path.to_path_buf(), short_diff(&text, contents))),
            None => self.report.missing.push(path.to_path_buf()),
        }
        if self.mode == Mode::Write {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            std::fs::write(path, contents)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }

    /// Makes `dir` hold exactly `files` (name → contents): writes each, and removes (write mode)
    /// or reports (check mode) any other file in it.
    pub fn ensure_dir_contents(&mut self, dir: &Path, files: &[(String, String)]) -> Result<()> {
        for (name, contents) in files {
            self.ensure_file_contents(&dir.join(name), contents)?;
        }
        let wanted: BTreeSet<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
        };
        let mut orphans = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !wanted.contains(name.as_str()) {
                orphans.push(entry.path());
            }
        }
        orphans.sort();
        for path in orphans {
            if self.mode == Mode::Write {
                if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                }
                .with_context(|| format!("removing {}", path.display()))?;
            }
            self.report.orphaned.push(path);
        }
        Ok(())
    }
}

fn short_diff(old: &str, new: &str) -> String {
    let diff = similar::TextDiff::from_lines(old, new);
    let mut out = String::new();
    let mut shown = 0;
    let mut total = 0;
    for change in diff.iter_all_changes() {
        let sign = match change.tag() {
            similar::ChangeTag::Equal => continue,
            similar::ChangeTag::Delete => '-',
            similar::ChangeTag::Insert => '+',
        };
        total += 1;
        if shown < DIFF_LINES {
            shown += 1;
            let _ = write!(out, "    {sign} {}", change.value());
            if change.missing_newline() {
                out.push('\n');
            }
        }
    }
    if total > shown {
        let _ = writeln!(out, "    … {} more changed lines", total - shown);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("agentpg-files-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn check_mode_reports_stale_missing_and_orphaned_and_writes_nothing() {
        let dir = scratch("check");
        std::fs::write(dir.join("a.rs"), "old\n").unwrap();
        std::fs::write(dir.join("extra.rs"), "x\n").unwrap();
        let mut files = Files::new(Mode::Check);
        files
            .ensure_dir_contents(
                &dir,
                &[
                    ("a.rs".into(), "new\n".into()),
                    ("b.rs".into(), "b\n".into()),
                ],
            )
            .unwrap();
        let report = files.finish();
        assert_eq!(report.stale.len(), 1);
        assert_eq!(report.stale[0].1, "    - old\n    + new\n");
        assert_eq!(report.missing, vec![dir.join("b.rs")]);
        assert_eq!(report.orphaned, vec![dir.join("extra.rs")]);
        assert!(report
            .render(Mode::Check, &dir)
            .contains("run `cargo xtask codegen`"));
        assert_eq!(std::fs::read_to_string(dir.join("a.rs")).unwrap(), "old\n");
        assert!(!dir.join("b.rs").exists());
        assert!(dir.join("extra.rs").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn write_mode_makes_the_folder_exact() {
        let dir = scratch("write");
        std::fs::write(dir.join("a.rs"), "old\n").unwrap();
        std::fs::write(dir.join("extra.rs"), "x\n").unwrap();
        let wanted = [("a.rs".to_string(), "new\n".to_string())];
        let mut files = Files::new(Mode::Write);
        files.ensure_dir_contents(&dir, &wanted).unwrap();
        assert!(!files.finish().is_clean());
        assert_eq!(std::fs::read_to_string(dir.join("a.rs")).unwrap(), "new\n");
        assert!(!dir.join("extra.rs").exists());
        let mut again = Files::new(Mode::Check);
        again.ensure_dir_contents(&dir, &wanted).unwrap();
        assert!(again.finish().is_clean());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn long_diffs_are_capped() {
        let old: String = (0..100).map(|i| format!("{i}\n")).collect();
        let diff = short_diff(&old, "");
        assert_eq!(diff.lines().count(), DIFF_LINES + 1);
        assert!(diff.ends_with("… 60 more changed lines\n"), "{diff}");
    }
}
