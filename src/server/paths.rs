//! `--allow-path`: in the server, a file table may only name paths under
//! the allowed roots (the working directory unless given). `..` and
//! symbolic links are resolved first, so neither leads out of a root.

use std::path::{Path, PathBuf};

use eddy_connectors::ConnectorRegistry;
use eddy_connectors::options::Role;
use eddy_parser::ast::{SqlOption, Statement, StatementKind};

/// The allowed roots, each resolved.
#[derive(Debug, Clone)]
pub struct AllowedPaths {
    roots: Vec<PathBuf>,
}

impl AllowedPaths {
    /// `roots` (relative ones against the working directory); the working
    /// directory alone if none is given.
    pub fn new(roots: &[PathBuf]) -> std::io::Result<Self> {
        let cwd = std::env::current_dir()?;
        let given = if roots.is_empty() {
            vec![cwd.clone()]
        } else {
            roots.to_vec()
        };
        let roots = given
            .iter()
            .map(|r| resolve(&cwd.join(r)))
            .collect::<std::io::Result<_>>()?;
        Ok(Self { roots })
    }

    /// Why `statement` may not run: a file table whose path is outside
    /// every root. Statements that name no file pass.
    pub fn check(
        &self,
        statement: &Statement,
        connectors: &ConnectorRegistry,
    ) -> Result<(), String> {
        let (options, role) = match &statement.kind {
            StatementKind::CreateSource(s) => (&s.options, Role::Both),
            StatementKind::CreateSink(s) => (&s.options, Role::Sink),
            _ => return Ok(()),
        };
        let Some(path) = file_path(options, role, connectors) else {
            return Ok(());
        };
        let cwd = std::env::current_dir().map_err(|e| e.to_string())?;
        let resolved = resolve(&cwd.join(&path)).map_err(|e| {
            format!("path '{path}' cannot be resolved to check it against the server's allowed paths: {e}")
        })?;
        if self.roots.iter().any(|root| resolved.starts_with(root)) {
            return Ok(());
        }
        let roots: Vec<String> = self.roots.iter().map(|r| r.display().to_string()).collect();
        Err(format!(
            "path '{path}' (resolved: {}) is outside the server's allowed paths ({}); \
             start the server with --allow-path to allow another directory",
            resolved.display(),
            roots.join(", ")
        ))
    }
}

/// The `path` of a file table's options, `file://` taken off; the glob
/// part of a pattern is left out (its directory is what it reads).
fn file_path(options: &[SqlOption], role: Role, connectors: &ConnectorRegistry) -> Option<String> {
    let given: Vec<(String, String)> = options
        .iter()
        .map(|o| (o.key.clone(), o.value.clone()))
        .collect();
    // A list that does not validate is refused by the planner anyway.
    let validated = connectors.validate(&given, role).ok()?;
    if validated.connector.name() != "file" {
        return None;
    }
    let path = validated.options.get("path")?;
    let path = path.strip_prefix("file://").unwrap_or(path);
    let fixed = path.find(['*', '?', '[']).map_or(path, |at| &path[..at]);
    Some(fixed.to_string())
}

/// `path` made absolute with `..` and symbolic links resolved: the longest
/// part that exists is canonicalized and the rest (a file still to be
/// written) appended. A `..` under a missing directory cannot be
/// resolved: an error.
fn resolve(path: &Path) -> std::io::Result<PathBuf> {
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    while !existing.exists() {
        let Some(name) = existing.file_name().map(|n| n.to_os_string()) else {
            break;
        };
        rest.push(name);
        existing.pop();
    }
    let mut resolved = existing.canonicalize()?;
    for part in rest.iter().rev() {
        resolved.push(part);
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_dot_and_links_are_resolved_before_the_check() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("data")).expect("mkdir");
        let allowed = AllowedPaths::new(std::slice::from_ref(&root)).expect("roots");
        let inside = |p: &Path| {
            let r = resolve(p).expect("resolve");
            allowed.roots.iter().any(|root| r.starts_with(root))
        };
        assert!(inside(&root.join("data/new/file.json")));
        assert!(inside(&root.join("data/../data/x")));
        assert!(!inside(&root.join("../elsewhere")));
        assert!(!inside(&root.join("data/../../root2/x")));
        std::os::unix::fs::symlink(dir.path(), root.join("link")).expect("symlink");
        assert!(!inside(&root.join("link/secret")));
        // A missing directory followed by `..` is not guessed at.
        assert!(resolve(&root.join("missing/../../x")).is_err());
    }
}
