//! The working-tree half of the scan: every text file under the root,
//! minus skipped directories, excluded and git-ignored files, binaries and
//! oversized files. It reads the disk as it is, committed or not.

use std::path::Path;

use walkdir::WalkDir;

use super::history::RepoView;
use super::paths::{PathGlobs, SKIPPED_DIRS, slash_path};
use super::rules::{self, FileClass};
use super::{RawFinding, ScanConfig, SecretScanError, SkippedFiles};

/// How many leading bytes are checked for a NUL to tell binary files.
const BINARY_SNIFF_BYTES: usize = 8 * 1024;

/// What the tree scan found.
pub(super) struct TreeScan {
    pub(super) findings: Vec<RawFinding>,
    pub(super) files_scanned: usize,
    pub(super) skipped: SkippedFiles,
}

/// Scans the files under `root`, in file-name order.
pub(super) fn scan_tree(
    root: &Path,
    repo: Option<&RepoView>,
    exclude: &PathGlobs,
    config: &ScanConfig,
    cancelled: &dyn Fn() -> bool,
) -> Result<TreeScan, SecretScanError> {
    let mut out = TreeScan {
        findings: Vec::new(),
        files_scanned: 0,
        skipped: SkippedFiles::default(),
    };
    let mut walk = WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter();
    while let Some(entry) = walk.next() {
        if cancelled() {
            return Err(SecretScanError::Cancelled {
                path: root.to_path_buf(),
            });
        }
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(root).to_path_buf();
            let source = e
                .into_io_error()
                .unwrap_or_else(|| std::io::Error::other("filesystem loop"));
            SecretScanError::Read { path, source }
        })?;
        if entry.depth() == 0 {
            continue;
        }
        let rel = slash_path(entry.path().strip_prefix(root).unwrap_or(entry.path()));
        let file_type = entry.file_type();
        if file_type.is_dir() {
            let name = entry.file_name().to_string_lossy();
            if SKIPPED_DIRS.contains(&name.as_ref()) || repo.is_some_and(|r| r.is_ignored_dir(&rel))
            {
                walk.skip_current_dir();
            }
            continue;
        }
        // Symbolic links are not followed: their target is scanned where
        // it lives, if it lives under the root.
        if !file_type.is_file() {
            continue;
        }
        if exclude.is_match(&rel) {
            out.skipped.excluded += 1;
            continue;
        }
        if repo.is_some_and(|r| r.is_ignored_file(&rel)) {
            out.skipped.ignored += 1;
            continue;
        }
        let too_large = entry
            .metadata()
            .is_ok_and(|m| m.len() > config.max_file_bytes);
        if too_large {
            out.skipped.too_large += 1;
            continue;
        }
        let bytes = match std::fs::read(entry.path()) {
            Ok(bytes) => bytes,
            // Removed while we walked: nothing left to leak.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(SecretScanError::Read {
                    path: entry.path().to_path_buf(),
                    source,
                });
            }
        };
        if bytes[..bytes.len().min(BINARY_SNIFF_BYTES)].contains(&0) {
            out.skipped.binary += 1;
            continue;
        }
        let text = String::from_utf8_lossy(&bytes);
        let hits = rules::scan_text(&text, FileClass::of(&rel));
        out.files_scanned += 1;
        out.findings.extend(hits.into_iter().map(|hit| RawFinding {
            rule: hit.rule,
            file: rel.clone(),
            line: hit.line + 1,
            commit: None,
            secret: hit.secret,
            marked: hit.marked,
        }));
    }
    Ok(out)
}
